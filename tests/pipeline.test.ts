import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { healthResponse } from '../functions/health/schema.ts';
import { ingestResponse } from '../functions/ingest/schema.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import { seriesResponse } from '../functions/usage/schema.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { periodOf } from '../shared/domain/periods.ts';
import { upsertTenant } from '../shared/domain/tenants.ts';
import { parseExact } from './helpers/json.ts';
import { waitFor } from './helpers/processes.ts';
import { createTestStack, readUsage, startApiAndAggregator, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

describe.skipIf(!servicesAvailable)('ingest → queue → aggregator → usage', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  let api: Awaited<ReturnType<typeof startApiAndAggregator>> | undefined;

  const auth = () => ({ authorization: `Bearer ${stack.apiKey}` });
  const post = (body: unknown) =>
    app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { ...auth(), 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });
  const usage = (tenant: string) => readUsage(app, stack.apiKey, tenant);
  const usageTokens = async (tenant: string, tokens: bigint) => (await usage(tenant))?.tokens === tokens;

  beforeAll(async () => {
    stack = await createTestStack();
    api = await startApiAndAggregator(stack.runtime);
    app = api.app;
  });
  afterAll(async () => {
    await api?.close();
    await stack?.close();
  });

  it('reports usage for the current period with a per-feature breakdown, quota, remaining and over', async () => {
    const tenant = uniqueName('usage');
    await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: 1000n }, 1n);
    expect(
      (
        await post([
          { tenant, feature: 'gpt-4o', tokens: 300 },
          { tenant, feature: 'embed', tokens: 50 },
          { tenant, feature: 'gpt-4o', tokens: 100 },
        ])
      ).statusCode,
    ).toBe(202);
    await waitFor(() => usageTokens(tenant, 450n), { what: 'usage to show 450' });
    const body = (await usage(tenant))!;
    const period = periodOf('UTC', Date.now());
    expect(body).toMatchObject({
      tenant,
      period: { start: period.start.toISOString(), end: period.end.toISOString() },
      tokens: 450n,
      quota: 1000n,
      percent: 45,
      remaining: 550n,
      over: false,
      features: [
        { feature: 'gpt-4o', tokens: 400n },
        { feature: 'embed', tokens: 50n },
      ],
    });
  });

  it('answers 404 for an unknown tenant and 400 for an illegal tenant name', async () => {
    const missing = await app.inject({ method: 'GET', url: '/api/usage/nobody-here', headers: auth() });
    expect(missing.statusCode).toBe(404);
    expect(errorBody.parse(missing.json()).error.code).toBe('not_found');
    const illegal = await app.inject({ method: 'GET', url: `/api/usage/${'x'.repeat(129)}`, headers: auth() });
    expect(illegal.statusCode).toBe(400);
    expect(errorBody.parse(illegal.json()).error.details?.[0]?.field).toBe('tenant');
  });

  it('answers 403 for usage of another tenant with a tenant-scoped key', async () => {
    const tenant = uniqueName('scoped');
    await upsertTenant(stack.runtime.db, tenant, {}, 10n);
    const { key } = await createApiKey(stack.runtime, 'scoped', 'someone-else');
    for (const url of [`/api/usage/${tenant}`, `/api/usage/${tenant}/series`]) {
      const response = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${key}` } });
      expect(response.statusCode).toBe(403);
    }
  });

  it('separates events at 23:59:59.999 on the last day and 00:00:00.000 on the first into two periods, UTC and zoned', async () => {
    for (const timeZone of ['UTC', 'America/New_York']) {
      const tenant = uniqueName('period');
      await upsertTenant(stack.runtime.db, tenant, { timeZone, monthlyQuota: 1_000_000n }, 1n);
      const current = periodOf(timeZone, Date.now());
      const lastOfPrevious = new Date(current.start.getTime() - 1).toISOString();
      const firstOfCurrent = current.start.toISOString();
      const response = await post([
        { tenant, feature: 'f', tokens: 11, timestamp: lastOfPrevious },
        { tenant, feature: 'f', tokens: 22, timestamp: firstOfCurrent },
      ]);
      expect(response.statusCode).toBe(202);
      await waitFor(() => usageTokens(tenant, 22n), { what: `${timeZone} usage to show 22` });
      const rows = await stack.runtime.db.query<{ period_start: string; tokens: bigint }>(
        'SELECT period_start, tokens FROM usage_periods WHERE tenant = $1 ORDER BY period_start',
        [tenant],
      );
      expect(rows).toEqual([
        { period_start: periodOf(timeZone, current.start.getTime() - 1).startDay, tokens: 11n },
        { period_start: current.startDay, tokens: 22n },
      ]);
      expect((await usage(tenant))!.period.start).toBe(current.start.toISOString());
    }
  });

  it('fills a series with zero buckets and honours granularity, feature and range limits', async () => {
    const tenant = uniqueName('series');
    const now = Date.now();
    const twoHoursAgo = new Date(now - 2 * 3_600_000).toISOString();
    await post([
      { tenant, feature: 'a', tokens: 5, timestamp: twoHoursAgo },
      { tenant, feature: 'b', tokens: 7 },
    ]);
    await waitFor(() => usage(tenant).then((u) => u !== undefined && u.features.length === 2), { what: 'both features' });
    const from = new Date(now - 3 * 3_600_000).toISOString();
    const series = async (query: string) => {
      const response = await app.inject({ method: 'GET', url: `/api/usage/${tenant}/series?${query}`, headers: auth() });
      return { status: response.statusCode, body: parseExact(response.body) };
    };
    const hourly = seriesResponse.parse((await series(`granularity=hour&from=${from}`)).body);
    expect(hourly.points.length).toBe(4);
    expect(hourly.points.reduce((sum, point) => sum + point.tokens, 0n)).toBe(12n);
    expect(hourly.points.filter((point) => point.tokens === 0n).length).toBe(2);
    const onlyA = seriesResponse.parse((await series(`granularity=hour&from=${from}&feature=a`)).body);
    expect(onlyA.points.reduce((sum, point) => sum + point.tokens, 0n)).toBe(5n);
    const daily = seriesResponse.parse((await series('granularity=day')).body);
    expect(daily.points.reduce((sum, point) => sum + point.tokens, 0n)).toBeGreaterThanOrEqual(7n);
    expect((await series('granularity=minute')).status).toBe(400);
    expect((await series('from=2024-01-01T00:00:00Z&to=2025-06-01T00:00:00Z')).status).toBe(400);
    expect((await series('from=not-a-date')).status).toBe(400);
  });

  it('creates one tenant and counts every token when 200 first events race', async () => {
    const tenant = uniqueName('race');
    const responses = await Promise.all(Array.from({ length: 200 }, (_, i) => post({ tenant, feature: 'f', tokens: i + 1 })));
    expect(responses.map((r) => r.statusCode)).toEqual(Array(200).fill(202));
    await waitFor(() => usageTokens(tenant, 20_100n), { what: 'the raced sum' });
    const [row] = await stack.runtime.db.query<{ count: number }>('SELECT count(*)::int AS count FROM tenants WHERE name = $1', [tenant]);
    expect(row!.count).toBe(1);
    expect((await usage(tenant))!.quota).toBe(stack.runtime.config.DEFAULT_MONTHLY_QUOTA);
  });

  it('counts the same (tenant, id) once when sent twice and 20 times concurrently, and reports the duplicates', async () => {
    const tenant = uniqueName('idem');
    const first = ingestResponse.parse((await post({ tenant, feature: 'f', tokens: 3, id: 'call-1' })).json());
    const second = ingestResponse.parse((await post({ tenant, feature: 'f', tokens: 3, id: 'call-1' })).json());
    expect(first).toMatchObject({ accepted: 1, duplicates: 0, ids: ['call-1'] });
    expect(second).toMatchObject({ accepted: 0, duplicates: 1, duplicateIndexes: [0] });
    const racing = await Promise.all(Array.from({ length: 20 }, () => post({ tenant, feature: 'f', tokens: 5, id: 'call-2' })));
    const bodies = racing.map((r) => ingestResponse.parse(r.json()));
    expect(bodies.filter((b) => b.accepted === 1)).toHaveLength(1);
    expect(bodies.filter((b) => b.duplicates === 1)).toHaveLength(19);
    // The same id for another tenant is a different event.
    const other = uniqueName('idem-other');
    expect(ingestResponse.parse((await post({ tenant: other, feature: 'f', tokens: 1, id: 'call-1' })).json()).accepted).toBe(1);
    await waitFor(() => usageTokens(tenant, 8n), { what: 'usage to show 8' });
    await waitFor(() => usageTokens(other, 1n), { what: 'the other tenant' });
    expect((await usage(tenant))!.tokens).toBe(8n);
  });

  it('says ok with both checks and their latency on /api/health, without auth', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/health' });
    expect(response.statusCode).toBe(200);
    const body = healthResponse.parse(response.json());
    expect(body.status).toBe('ok');
    expect(body.checks.postgres.ok && body.checks.valkey?.ok).toBe(true);
    expect(body.checks.queue).toMatchObject({ ok: true, kind: 'valkey' });
  });
});
