import { describe, expect, it } from 'vitest';
import { addExact, groupByQuarterHour, type Rollups, rollUp } from './rollup.ts';

const entry = (events: { tenant: string; feature: string; tokens: number; timestamp: number }[]) => ({ id: '1-0', events, receivedAt: 0 });

/** What the aggregator does with a batch: quarter-hour groups, then the four rollups. */
const preAggregate = (entries: Parameters<typeof groupByQuarterHour>[0], timeZoneOf: (tenant: string) => string): Rollups =>
  rollUp(groupByQuarterHour(entries), timeZoneOf);

describe('groupByQuarterHour and rollUp', () => {
  it('sums a batch into hourly, daily, per-feature period and period rows', () => {
    const t = Date.parse('2026-05-10T10:05:00Z');
    const rollups = preAggregate(
      [
        entry([
          { tenant: 'a', feature: 'x', tokens: 1, timestamp: t },
          { tenant: 'a', feature: 'x', tokens: 2, timestamp: t + 20 * 60_000 },
          { tenant: 'a', feature: 'y', tokens: 4, timestamp: t + 60 * 60_000 },
        ]),
      ],
      () => 'UTC',
    );
    expect(rollups.events).toBe(3);
    expect(rollups.hourly).toEqual([
      { tenant: 'a', feature: 'x', hour: '2026-05-10T10:00:00.000Z', tokens: 3, events: 2 },
      { tenant: 'a', feature: 'y', hour: '2026-05-10T11:00:00.000Z', tokens: 4, events: 1 },
    ]);
    expect(rollups.daily.map((row) => [row.feature, row.day, row.tokens])).toEqual([
      ['x', '2026-05-10', 3],
      ['y', '2026-05-10', 4],
    ]);
    expect(rollups.periods).toEqual([
      { tenant: 'a', period_start: '2026-05-01', tokens: 7, events: 3, last_event_at: '2026-05-10T11:05:00.000Z' },
    ]);
  });

  it('assigns days and periods in the tenant zone', () => {
    const rollups = preAggregate(
      [entry([{ tenant: 'b', feature: 'x', tokens: 5, timestamp: Date.parse('2026-05-31T23:30:00Z') }])],
      () => 'Europe/Berlin',
    );
    expect(rollups.daily[0]!.day).toBe('2026-06-01');
    expect(rollups.periods[0]!.period_start).toBe('2026-06-01');
    expect(rollups.hourly[0]!.hour).toBe('2026-05-31T23:00:00.000Z');
  });

  it('keeps sums exact past 2^53', () => {
    expect(addExact(Number.MAX_SAFE_INTEGER, 2)).toBe(BigInt(Number.MAX_SAFE_INTEGER) + 2n);
    const big = 1_000_000_000_000;
    const events = Array.from({ length: 10_000 }, () => ({ tenant: 'c', feature: 'x', tokens: big, timestamp: 0 }));
    expect(preAggregate([entry(events)], () => 'UTC').periods[0]!.tokens).toBe(10_000n * BigInt(big));
  });
});
