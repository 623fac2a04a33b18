import { describe, expect, it } from 'vitest';
import { addExact, groupByQuarterHour, groupColumns } from './rollup.ts';

const entry = (events: { tenant: string; feature: string; tokens: number; timestamp: number }[]) => ({ id: '1-0', events, receivedAt: 0 });

describe('groupByQuarterHour and groupColumns', () => {
  it('sums a batch per tenant, feature and quarter hour, and lists its tenants in order', () => {
    const t = Date.parse('2026-05-10T10:05:00Z');
    const grouped = groupByQuarterHour([
      entry([
        { tenant: 'b', feature: 'x', tokens: 1, timestamp: t },
        { tenant: 'a', feature: 'x', tokens: 2, timestamp: t + 5 * 60_000 },
        { tenant: 'b', feature: 'x', tokens: 4, timestamp: t + 20 * 60_000 },
      ]),
      entry([{ tenant: 'b', feature: 'x', tokens: 8, timestamp: t + 60_000 }]),
    ]);
    expect(grouped.events).toBe(4);
    expect(grouped.tenants).toEqual(['a', 'b']);
    expect(grouped.groups).toEqual([
      { tenant: 'b', feature: 'x', quarter: Math.floor(t / 900_000), tokens: 9, events: 2, lastAt: t + 60_000 },
      { tenant: 'a', feature: 'x', quarter: Math.floor(t / 900_000), tokens: 2, events: 1, lastAt: t + 5 * 60_000 },
      { tenant: 'b', feature: 'x', quarter: Math.floor(t / 900_000) + 1, tokens: 4, events: 1, lastAt: t + 20 * 60_000 },
    ]);
  });

  it('writes each group once as array literals, with its day in the tenant zone', () => {
    const at = Date.parse('2026-05-31T23:30:00Z');
    const { groups } = groupByQuarterHour([
      entry([
        { tenant: 'berlin', feature: 'x', tokens: 5, timestamp: at },
        { tenant: 'NULL', feature: 'a/b', tokens: 6, timestamp: at },
      ]),
    ]);
    const columns = groupColumns(groups, (tenant) => (tenant === 'berlin' ? 'Europe/Berlin' : 'UTC'));
    expect(columns).toEqual({
      // Quoted, so that the tenant "NULL" is a name, not a null.
      tenant: '{"berlin","NULL"}',
      feature: '{"x","a/b"}',
      // 23:00 UTC, the start of either tenant's hour, in quarter hours.
      hour: `{${(at - 1_800_000) / 900_000},${(at - 1_800_000) / 900_000}}`,
      day: '{2026-06-01,2026-05-31}',
      tokens: '{5,6}',
      events: '{1,1}',
      lastAt: `{${at},${at}}`,
    });
    expect(groupColumns([], () => 'UTC').tenant).toBe('{}');
  });

  it('keeps sums exact past 2^53', () => {
    expect(addExact(Number.MAX_SAFE_INTEGER, 2)).toBe(BigInt(Number.MAX_SAFE_INTEGER) + 2n);
    const big = 1_000_000_000_000;
    const events = Array.from({ length: 10_000 }, () => ({ tenant: 'c', feature: 'x', tokens: big, timestamp: 0 }));
    const { groups } = groupByQuarterHour([entry(events)]);
    expect(groups[0]!.tokens).toBe(10_000n * BigInt(big));
    expect(groupColumns(groups, () => 'UTC').tokens).toBe(`{${10_000n * BigInt(big)}}`);
  });
});
