import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { prefersCsv } from '../functions/usage/app.ts';
import { seriesResponse, usageResponse } from '../functions/usage/schema.ts';
import { addCalendar, localDay, localMidnight, periodOf } from '../shared/domain/periods.ts';
import { upsertTenant } from '../shared/domain/tenants.ts';
import { parseExact } from './helpers/json.ts';
import { buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

/**
 * Fixed rollups written straight into the tables the aggregator fills: one row per local day of the
 * period so far, day n holding 100 × n tokens, so the window's share is known exactly.
 */
async function seedDays(stack: TestStack, tenant: string, timeZone: string, quota: bigint): Promise<{ days: string[]; total: bigint }> {
  await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: quota, timeZone }, 1n);
  const period = periodOf(timeZone, Date.now());
  const days: string[] = [];
  for (let day = period.startDay; day <= localDay(timeZone, Date.now()); day = addCalendar(day, { days: 1 })) days.push(day);
  const rows = days.map((day, index) => ({ tenant, feature: index % 2 === 0 ? 'even' : 'odd', day, tokens: 100 * (index + 1) }));
  const total = rows.reduce((sum, row) => sum + BigInt(row.tokens), 0n);
  // The next period's first day, already begun by events stamped up to 5 minutes ahead: neither
  // this period's total nor its pace.
  rows.push({ tenant, feature: 'even', day: addCalendar(period.startDay, { months: 1 }), tokens: 1_000_000 });
  await stack.runtime.db.query(
    `INSERT INTO usage_daily (tenant, feature, day, tokens, events)
     SELECT tenant, feature, day, tokens, 1 FROM jsonb_to_recordset($1::jsonb) AS x(tenant text, feature text, day date, tokens bigint)`,
    [JSON.stringify(rows)],
  );
  await stack.runtime.db.query(
    'INSERT INTO usage_periods (tenant, period_start, tokens, events, last_event_at) VALUES ($1, $2::date, $3, 1, now())',
    [tenant, period.startDay, total.toString()],
  );
  return { days, total };
}

describe.skipIf(!servicesAvailable)('usage API: forecast and CSV', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  const get = (url: string, headers: Record<string, string> = {}) =>
    app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${stack.apiKey}`, ...headers } });

  beforeAll(async () => {
    stack = await createTestStack({ USAGE_CACHE_TTL: '0' });
    app = buildApi(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it.each(['UTC', 'Pacific/Kiritimati', 'America/Los_Angeles'])(
    'forecasts from the last seven local days of the period at the pace they show (%s)',
    async (timeZone) => {
      const tenant = uniqueName('forecast');
      const { days, total } = await seedDays(stack, tenant, timeZone, 1_000_000_000n);
      const body = usageResponse.parse(parseExact((await get(`/api/usage/${tenant}`)).body));
      const asOf = Date.parse(body.asOf);
      const windowStart = days.at(-7) ?? days[0]!;
      const windowTokens = days.reduce((sum, day, index) => (day >= windowStart ? sum + BigInt(100 * (index + 1)) : sum), 0n);
      const elapsed = BigInt(asOf - localMidnight(timeZone, windowStart));
      const left = BigInt(Date.parse(body.period.end) - asOf);
      expect(body.tokens).toBe(total);
      expect(body.forecast).toEqual({ tokensAtPeriodEnd: total + (windowTokens * left) / elapsed, quotaReachedAt: null });
    },
  );

  it("answers the default series range when this host's clock is behind the database's (the period starts after its now)", async () => {
    const tenant = uniqueName('clock');
    await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: 1000n }, 1n);
    const periodStart = usageResponse.parse(parseExact((await get(`/api/usage/${tenant}`)).body)).period.start;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.parse(periodStart) - 60_000);
    try {
      // Before, a 400 naming `from`, which the caller never sent.
      const answer = await get(`/api/usage/${tenant}/series`);
      expect(answer.statusCode).toBe(200);
      expect(seriesResponse.parse(parseExact(answer.body)).points.map((point) => point.start)).toEqual([periodStart]);
      // Only `to`, before the period's start: the 400 names `to`, the field the caller sent.
      const early = await get(`/api/usage/${tenant}/series?to=${new Date(Date.parse(periodStart) - 3_600_000).toISOString()}`);
      expect(early.statusCode).toBe(400);
      expect(early.json().error.details).toEqual([
        { field: 'to', message: 'is before the start of the current period (the default from)' },
      ]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('forecasts nothing for a tenant with no usage in its window: 0 at the period end, never reached', async () => {
    const idle = uniqueName('forecast-idle');
    await upsertTenant(stack.runtime.db, idle, { monthlyQuota: 1000n }, 1n);
    const body = usageResponse.parse(parseExact((await get(`/api/usage/${idle}`)).body));
    expect(body).toMatchObject({ tokens: 0n, features: [], forecast: { tokensAtPeriodEnd: 0n, quotaReachedAt: null } });
  });

  it('gives the date the quota is reached within the period, and asOf once it has been', async () => {
    const near = uniqueName('forecast-near');
    const { total } = await seedDays(stack, near, 'Europe/Berlin', 0n + 1_000_000n);
    await upsertTenant(stack.runtime.db, near, { monthlyQuota: total + 1n }, 1n);
    const body = usageResponse.parse(parseExact((await get(`/api/usage/${near}`)).body));
    const reached = Date.parse(body.forecast.quotaReachedAt!);
    expect(reached).toBeGreaterThan(Date.parse(body.asOf));
    expect(reached).toBeLessThan(Date.parse(body.period.end));

    await upsertTenant(stack.runtime.db, near, { monthlyQuota: total }, 1n);
    const over = usageResponse.parse(parseExact((await get(`/api/usage/${near}`)).body));
    expect(over.forecast.quotaReachedAt).toBe(over.asOf);
  });

  it('answers the series as CSV for Accept: text/csv, one row per bucket, feature filter included', async () => {
    const tenant = uniqueName('csv');
    const timeZone = 'Asia/Kolkata';
    const { days } = await seedDays(stack, tenant, timeZone, 1_000_000n);
    const json = seriesResponse.parse(parseExact((await get(`/api/usage/${tenant}/series?granularity=day`)).body));
    const csv = await get(`/api/usage/${tenant}/series?granularity=day`, { accept: 'text/csv' });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(csv.headers.vary).toContain('accept');
    const lines = csv.body.trimEnd().split('\r\n');
    expect(lines[0]).toBe('start,tokens');
    expect(lines.slice(1)).toEqual(json.points.map((point) => `${point.start},${point.tokens}`));
    expect(lines).toHaveLength(days.length + 1);
    expect(lines[1]).toBe(`${new Date(localMidnight(timeZone, days[0]!)).toISOString()},100`);

    const even = await get(`/api/usage/${tenant}/series?granularity=day&feature=even`, {
      accept: 'text/csv;q=0.9, application/json;q=0.5',
    });
    expect(even.body.split('\r\n')[1]).toMatch(/,100$/);
    if (days.length > 1) expect(even.body.split('\r\n')[2]).toMatch(/,0$/);
    // JSON stays the answer when the client ranks it higher, or asks for anything.
    expect((await get(`/api/usage/${tenant}/series`, { accept: 'application/json, text/csv;q=0.5' })).headers['content-type']).toMatch(
      /^application\/json/,
    );
    expect((await get(`/api/usage/${tenant}/series`, { accept: '*/*' })).headers['content-type']).toMatch(/^application\/json/);
    const bad = await get(`/api/usage/${tenant}/series?granularity=week`, { accept: 'text/csv' });
    expect(bad.statusCode).toBe(400);
    expect(bad.body).toContain('granularity');
  });

  it('ranks media types by q-value', () => {
    expect(prefersCsv('text/csv')).toBe(true);
    expect(prefersCsv('text/csv;q=0')).toBe(false);
    expect(prefersCsv('application/json;q=0.4, TEXT/CSV;q=0.6')).toBe(true);
    expect(prefersCsv(undefined)).toBe(false);
  });
});
