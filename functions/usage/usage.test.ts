import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTenantUsage } from '../../shared/domain/usage.ts';
import { upsertTenant } from '../../shared/domain/tenants.ts';
import { parseExact } from '../../tests/helpers/json.ts';
import { createTestStack, type TestStack } from '../../tests/helpers/runtime.ts';
import { servicesAvailable, uniqueName } from '../../tests/helpers/services.ts';
import { buildUsageApp } from './app.ts';
import { isUsageParams, usageParams } from './schema.ts';

describe('the usage path parameters', () => {
  const nameChars = fc.constantFrom(...'abcXYZ019._:@-/ é\t%'.split(''));
  const name = fc.oneof(fc.string({ unit: nameChars, minLength: 0, maxLength: 130 }), fc.string(), fc.constant('a'.repeat(129)));
  const candidate = fc.record({ tenant: fc.oneof(name, fc.anything()), extra: fc.anything() }, { requiredKeys: [] });

  it('hand check: accepts only what the schema accepts, and only values it returns unchanged', () => {
    fc.assert(
      fc.property(fc.oneof(candidate, fc.anything()), (raw) => {
        if (!isUsageParams(raw)) return;
        const parsed = usageParams.safeParse(raw);
        expect(parsed.success).toBe(true);
        expect(parsed.data).toEqual(raw);
      }),
      { numRuns: 5_000 },
    );
    expect(isUsageParams({ tenant: 'acme-1' })).toBe(true);
  });
});

describe.skipIf(!servicesAvailable)('usage function (its own app, real PostgreSQL)', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  const get = (url: string) => app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${stack.apiKey}` } });

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildUsageApp(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it("answers a tenant's usage and its series", async () => {
    const tenant = uniqueName('usage');
    await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: 1_000n }, stack.runtime.config.DEFAULT_MONTHLY_QUOTA);
    const usage = await get(`/api/usage/${tenant}`);
    expect(usage.statusCode).toBe(200);
    expect(parseExact(usage.body)).toMatchObject({ tenant, tokens: 0n, quota: 1_000n, over: false, features: [] });
    const series = await get(`/api/usage/${tenant}/series?granularity=hour`);
    expect(series.statusCode).toBe(200);
    expect(series.json()).toMatchObject({ tenant, granularity: 'hour', feature: null });
  });

  it("sums a period's features from its own days only, not the days of the periods around it", async () => {
    const tenant = uniqueName('usage-days');
    await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: 1_000n }, stack.runtime.config.DEFAULT_MONTHLY_QUOTA);
    const days: [string, string, number][] = [
      ['2026-09-30', 'gpt-4o', 1],
      ['2026-10-01', 'gpt-4o', 10],
      ['2026-10-31', 'gpt-4o', 20],
      ['2026-10-15', 'claude', 300],
      ['2026-11-01', 'gpt-4o', 4_000],
      ['2026-11-01', 'mistral', 50_000],
    ];
    for (const [day, feature, tokens] of days) {
      await stack.runtime.db.query('INSERT INTO usage_daily (tenant, feature, day, tokens, events) VALUES ($1, $2, $3::date, $4, 1)', [
        tenant,
        feature,
        day,
        tokens,
      ]);
    }
    const october = await readTenantUsage(stack.runtime.db, tenant, '2026-10-01');
    expect(october?.features).toEqual([
      { feature: 'claude', tokens: 300n },
      { feature: 'gpt-4o', tokens: 30n },
    ]);
  });

  it("answers a half-hour zone's hourly series in its own hours, so no hour holds two periods", async () => {
    const tenant = uniqueName('usage-kolkata');
    await upsertTenant(
      stack.runtime.db,
      tenant,
      { monthlyQuota: 1_000n, timeZone: 'Asia/Kolkata' },
      stack.runtime.config.DEFAULT_MONTHLY_QUOTA,
    );
    // As the aggregator writes them (functions/aggregator/handler.test.ts): 23:45 on 31 May and 00:00 on
    // 1 June, Kolkata time, in hours starting at :30 UTC; and a row written at a UTC hour while the
    // tenant was still in UTC, which counts in the Kolkata hour it starts in (19:30–20:30).
    const rows: [string, number][] = [
      ['2026-05-31T17:30:00Z', 6],
      ['2026-05-31T18:30:00Z', 7],
      ['2026-05-31T20:00:00Z', 100],
    ];
    for (const [hour, tokens] of rows) {
      await stack.runtime.db.query(
        "INSERT INTO usage_hourly (tenant, feature, hour, tokens, events) VALUES ($1, 'f', $2::timestamptz, $3, 1)",
        [tenant, hour, tokens],
      );
    }
    const series = async (from: string, to: string) =>
      (await get(`/api/usage/${tenant}/series?granularity=hour&from=${from}&to=${to}`)).json().points as {
        start: string;
        tokens: number;
      }[];
    // June in Kolkata begins at 18:30 UTC: its first hour is June's alone (before, 18:00–19:00 UTC held 6 + 7).
    expect(await series('2026-05-31T18:30:00Z', '2026-05-31T21:00:00Z')).toEqual([
      { start: '2026-05-31T18:30:00.000Z', tokens: 7 },
      { start: '2026-05-31T19:30:00.000Z', tokens: 100 },
      { start: '2026-05-31T20:30:00.000Z', tokens: 0 },
    ]);
    expect(await series('2026-05-31T17:00:00Z', '2026-05-31T18:29:59Z')).toEqual([
      { start: '2026-05-31T16:30:00.000Z', tokens: 0 },
      { start: '2026-05-31T17:30:00.000Z', tokens: 6 },
    ]);
  });

  it('answers 404 for an unknown tenant and 400 naming a bad query field', async () => {
    expect((await get(`/api/usage/${uniqueName('nobody')}`)).json().error.code).toBe('not_found');
    const bad = await get('/api/usage/acme/series?granularity=week');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details).toEqual([{ field: 'granularity', message: 'must be hour or day' }]);
  });

  it('answers 400 naming the tenant for a malformed tenant name', async () => {
    const bad = await get(`/api/usage/${'a'.repeat(129)}`);
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details).toEqual([{ field: 'tenant', message: 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ -' }]);
  });

  it('answers 401 without a key', async () => {
    expect((await app.inject({ method: 'GET', url: '/api/usage/acme' })).statusCode).toBe(401);
  });
});
