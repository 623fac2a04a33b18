import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExact } from '../../tests/helpers/json.ts';
import { ADMIN_TOKEN, createTestStack, type TestStack } from '../../tests/helpers/runtime.ts';
import { servicesAvailable, uniqueName } from '../../tests/helpers/services.ts';
import { buildTenantsApp } from './app.ts';

describe.skipIf(!servicesAvailable)('tenants function (its own app, real PostgreSQL)', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  const admin = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown, token = ADMIN_TOKEN) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildTenantsApp(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('creates a tenant (201), updates it (200), reads it, lists its alerts; creates, lists and revokes a key', async () => {
    const tenant = uniqueName('tenants');
    expect((await admin('PUT', `/api/tenants/${tenant}`, { monthlyQuota: 500 })).statusCode).toBe(201);
    const updated = await admin('PUT', `/api/tenants/${tenant}`, { monthlyQuota: 700 });
    expect(updated.statusCode).toBe(200);
    expect(parseExact(updated.body)).toMatchObject({ tenant, monthlyQuota: 700n });
    expect((await admin('GET', `/api/tenants/${tenant}`)).json()).toMatchObject({ tenant });
    expect((await admin('GET', `/api/tenants/${tenant}/alerts`)).json()).toEqual({ alerts: [], next: null });
    expect((await admin('GET', `/api/tenants?q=${tenant}`)).json()).toMatchObject({ total: 1, tenants: [{ tenant }] });

    const created = await admin('POST', '/api/keys', { name: 'ci', tenant });
    expect(created.statusCode).toBe(201);
    const { id, key } = created.json();
    expect(key).toEqual(expect.any(String));
    expect((await admin('GET', '/api/keys')).json().keys).toContainEqual(expect.objectContaining({ id, tenant }));
    expect((await admin('DELETE', `/api/keys/${id}`)).json()).toMatchObject({ id, revokedAt: expect.any(String) });
  });

  it("keeps the tenant summary's period in the tenant's own zone, on create and on a zone change", async () => {
    const tenant = uniqueName('zoned');
    // The summary row against the same period computed from scratch in the tenant's zone.
    const summaryMatches = async (zone: string) => {
      const [row] = await stack.runtime.db.query<{ zone: string; start: boolean; end: boolean }>(
        `SELECT s.time_zone AS zone,
                s.period_start = date_trunc('month', now() AT TIME ZONE $2)::date AS start,
                s.period_end = (date_trunc('month', now() AT TIME ZONE $2) + interval '1 month') AT TIME ZONE $2 AS end
         FROM tenant_usage_summary s WHERE s.tenant = $1`,
        [tenant, zone],
      );
      return row;
    };
    expect((await admin('PUT', `/api/tenants/${tenant}`, { monthlyQuota: 500, timeZone: 'Pacific/Kiritimati' })).statusCode).toBe(201);
    expect(await summaryMatches('Pacific/Kiritimati')).toEqual({ zone: 'Pacific/Kiritimati', start: true, end: true });
    expect((await admin('PUT', `/api/tenants/${tenant}`, { timeZone: 'America/New_York' })).statusCode).toBe(200);
    expect(await summaryMatches('America/New_York')).toEqual({ zone: 'America/New_York', start: true, end: true });
  });

  it('pages the name order by `after`: a tenant created meanwhile before the page boundary repeats and skips nobody', async () => {
    const prefix = uniqueName('page');
    for (const n of [1, 2, 3, 4, 5, 6])
      expect((await admin('PUT', `/api/tenants/${prefix}-b${n}`, { monthlyQuota: 100 })).statusCode).toBe(201);
    const page = async (query: string) => {
      const answer = await admin('GET', `/api/tenants?q=${prefix}&limit=3${query}`);
      expect(answer.statusCode, answer.body).toBe(200);
      const body = answer.json() as { tenants: { tenant: string }[]; next: string | null; total: number };
      return { names: body.tenants.map((tenant) => tenant.tenant.slice(prefix.length + 1)), next: body.next, total: body.total };
    };
    const first = await page('');
    expect(first).toEqual({ names: ['b1', 'b2', 'b3'], next: `${prefix}-b3`, total: 6 });
    expect((await admin('PUT', `/api/tenants/${prefix}-a0`, { monthlyQuota: 100 })).statusCode).toBe(201);
    // By offset the new tenant shifts the rest: b3 again. By `after` the next page is the next names.
    expect((await page('&offset=3')).names).toEqual(['b3', 'b4', 'b5']);
    const second = await page(`&after=${first.next}`);
    expect(second).toEqual({ names: ['b4', 'b5', 'b6'], next: `${prefix}-b6`, total: 7 });
    expect(await page(`&after=${second.next}`)).toEqual({ names: [], next: null, total: 7 });
    // `after` pages the name order only, and replaces offset.
    for (const [query, message] of [
      [`&sort=usage&after=${first.next}`, 'pages only the name order (sort=name)'],
      [`&offset=3&after=${first.next}`, 'replaces offset; send one or the other'],
    ] as const) {
      const refused = await admin('GET', `/api/tenants?limit=3${query}`);
      expect(refused.statusCode, refused.body).toBe(400);
      expect(refused.json().error.details).toEqual([{ field: 'after', message }]);
    }
  });

  it('pages a long alert history newest first by `before`, every alert once (it was cut at 100 with no way further)', async () => {
    const tenant = uniqueName('history');
    expect((await admin('PUT', `/api/tenants/${tenant}`, { monthlyQuota: 100 })).statusCode).toBe(201);
    // 105 alerts over 105 months, as the aggregator writes them (one live crossing per period and threshold).
    await stack.runtime.db.query(
      `INSERT INTO alerts (tenant, period_start, threshold, used_tokens, quota)
       SELECT $1, date '2015-01-01' + make_interval(months => i), 80, 85, 100 FROM generate_series(0, 104) i`,
      [tenant],
    );
    const seen: string[] = [];
    let before: string | null | undefined;
    let pages = 0;
    do {
      const answer = await admin('GET', `/api/tenants/${tenant}/alerts?limit=40${before ? `&before=${before}` : ''}`);
      expect(answer.statusCode, answer.body).toBe(200);
      const body = answer.json() as { alerts: { id: string; period: string }[]; next: string | null };
      seen.push(...body.alerts.map((alert) => alert.period));
      before = body.next;
      pages++;
    } while (before);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(105);
    expect(new Set(seen).size).toBe(105);
    // Newest first: the last inserted (the latest period) leads.
    expect(seen[0]).toBe('2023-09');
    expect(seen.at(-1)).toBe('2015-01');
    // The default page is 100; a bad cursor is a 400 naming it.
    expect(((await admin('GET', `/api/tenants/${tenant}/alerts`)).json() as { alerts: unknown[] }).alerts).toHaveLength(100);
    const bad = await admin('GET', `/api/tenants/${tenant}/alerts?before=abc`);
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details).toEqual([{ field: 'before', message: 'must be an alert id (a positive integer)' }]);
  });

  it('answers 400 naming the bad field, 404 for an unknown tenant, 403 for an API key', async () => {
    const bad = await admin('PUT', `/api/tenants/${uniqueName('bad')}`, { monthlyQuota: -1 });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].field).toBe('monthlyQuota');
    expect((await admin('GET', `/api/tenants/${uniqueName('nobody')}`)).statusCode).toBe(404);
    expect((await admin('GET', '/api/tenants', undefined, stack.apiKey)).json().error.code).toBe('forbidden');
  });

  it('answers 400 naming the field for a NUL character, which PostgreSQL text cannot hold', async () => {
    const search = await admin('GET', '/api/tenants?q=a%00b');
    expect(search.statusCode, search.body).toBe(400);
    expect(search.json().error.details).toEqual([{ field: 'q', message: 'must not contain NUL (U+0000)' }]);
    const key = await admin('POST', '/api/keys', { name: 'ci\u0000key' });
    expect(key.statusCode, key.body).toBe(400);
    expect(key.json().error.details).toEqual([{ field: 'name', message: 'must not contain NUL (U+0000)' }]);
    // A lone surrogate is not text PostgreSQL can hold either: it was stored as U+FFFD in silence.
    const surrogate = await admin('POST', '/api/keys', { name: 'k\ud800' });
    expect(surrogate.statusCode, surrogate.body).toBe(400);
    expect(surrogate.json().error.details).toEqual([
      { field: 'name', message: 'must be valid Unicode (a lone surrogate such as \\ud800 would be stored as U+FFFD)' },
    ]);
    // The URL parser would drop or escape the control character and pass the URL; the raw string
    // is what is stored, and PostgreSQL refused it with a 500.
    const tenant = uniqueName('nul-hook');
    for (const url of [
      'https://hooks.slack.com/services/T/B/X\u0000',
      'https://hooks.slack.com/services/T/B\u0000/X',
      '\u0001https://hooks.slack.com/x',
    ]) {
      const hook = await admin('PUT', `/api/tenants/${tenant}`, { slackWebhookUrl: url });
      expect(hook.statusCode, hook.body).toBe(400);
      expect(hook.json().error.details).toEqual([{ field: 'slackWebhookUrl', message: 'must not contain control characters' }]);
    }
    expect((await admin('GET', `/api/tenants/${tenant}`)).statusCode).toBe(404);
  });
});
