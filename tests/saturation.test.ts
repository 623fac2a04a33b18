import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/processes.ts';
import { parseExact } from './helpers/json.ts';
import { createTestStack, postEvents, readUsage, startApiAndAggregator, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

const INT8_MAX = 2n ** 63n - 1n;

describe.skipIf(!servicesAvailable)('token totals at the bigint maximum', () => {
  let stack: TestStack;
  let api: Awaited<ReturnType<typeof startApiAndAggregator>>;

  beforeAll(async () => {
    stack = await createTestStack();
    api = await startApiAndAggregator(stack.runtime);
  });
  afterAll(async () => {
    await api?.close();
    await stack?.close();
  });

  it('holds a total at 2^63 − 1 instead of failing the commit for ever, counts what follows, and reads 200', async () => {
    const tenant = uniqueName('saturated');
    // One instant for every event: one hour, day and period row per feature.
    const timestamp = new Date().toISOString();
    const send = (feature: string, tokens: number) => postEvents(api.app, stack.apiKey, { tenant, feature, tokens, timestamp });
    await send('f', 1);
    await waitFor(async () => (await readUsage(api.app, stack.apiKey, tenant))?.tokens === 1n, { what: 'the first event counted' });
    // Where ~9.2 million events of 10^12 tokens (the most ingest takes) would have taken the rollups.
    const near = (INT8_MAX - 10n).toString();
    for (const table of ['usage_hourly', 'usage_daily', 'usage_periods']) {
      await stack.runtime.db.query(`UPDATE ${table} SET tokens = $2 WHERE tenant = $1`, [tenant, near]);
    }
    // This one overflowed bigint: the commit failed at every retry and nothing after it on the lane counted.
    await send('f', 1_000_000_000_000);
    await send('g', 7);
    const usage = await waitFor(
      async () => {
        const answer = await readUsage(api.app, stack.apiKey, tenant);
        return answer?.features.some((feature) => feature.feature === 'g') ? answer : undefined;
      },
      { what: 'the events after the overflowing one counted' },
    );
    expect(usage.tokens).toBe(INT8_MAX);
    expect(usage.features).toEqual([
      { feature: 'f', tokens: INT8_MAX },
      { feature: 'g', tokens: 7n },
    ]);
    expect(usage.over).toBe(true);
    const rows = await stack.runtime.db.query<{ table: string; feature: string; tokens: bigint }>(
      `SELECT 'hourly' AS table, feature, tokens FROM usage_hourly WHERE tenant = $1
       UNION ALL SELECT 'daily', feature, tokens FROM usage_daily WHERE tenant = $1
       UNION ALL SELECT 'period', '', tokens FROM usage_periods WHERE tenant = $1 ORDER BY 1, 2`,
      [tenant],
    );
    expect(rows.map((row) => [row.table, row.feature, BigInt(row.tokens)])).toEqual([
      ['daily', 'f', INT8_MAX],
      ['daily', 'g', 7n],
      ['hourly', 'f', INT8_MAX],
      ['hourly', 'g', 7n],
      ['period', '', INT8_MAX],
    ]);
    // Reads that sum several rollups (f's and g's) cap the sum instead of failing with out of range.
    for (const granularity of ['hour', 'day']) {
      const series = await api.app.inject({
        method: 'GET',
        url: `/api/usage/${tenant}/series?granularity=${granularity}`,
        headers: { authorization: `Bearer ${stack.apiKey}` },
      });
      expect(series.statusCode, series.body).toBe(200);
      const points = (parseExact(series.body) as { points: { tokens: bigint }[] }).points;
      expect(points.map((point) => point.tokens).filter((tokens) => tokens > 0n)).toEqual([INT8_MAX]);
    }
  });
});
