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
