import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  alertListResponse,
  apiKeyListResponse,
  apiKeyView,
  createdKeyResponse,
  tenantListResponse,
  tenantResponse,
} from '../functions/tenants/schema.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { parseExact } from './helpers/json.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

describe.skipIf(!servicesAvailable)('admin API: keys and tenants', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown) =>
    app.inject({ method, url, headers: admin, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildApi(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('creates a key (201, secret once), lists it without the secret, revokes it, and the key then gets 401', async () => {
    const created = await call('POST', '/api/keys', { name: 'acme backend', tenant: 'acme' });
    expect(created.statusCode).toBe(201);
    const key = createdKeyResponse.parse(created.json());
    expect(key).toMatchObject({ name: 'acme backend', tenant: 'acme' });
    expect(key.key).toMatch(/^fm_/);
    const listed = await call('GET', '/api/keys');
    expect(listed.body).not.toContain(key.key);
    const views = (listed.json() as { keys: unknown[] }).keys.map((view) => apiKeyView.parse(view));
    expect(views.find((view) => view.id === key.id)).toMatchObject({ revokedAt: null, prefix: key.key.slice(0, 10) });
    const usage = () => app.inject({ method: 'GET', url: '/api/usage/acme', headers: { authorization: `Bearer ${key.key}` } });
    expect((await usage()).statusCode).toBe(404);
    const revoked = await call('DELETE', `/api/keys/${key.id}`);
    expect(revoked.statusCode).toBe(200);
    expect(apiKeyView.parse(revoked.json()).revokedAt).not.toBeNull();
    expect((await usage()).statusCode).toBe(401);
  });

  it('pages through the keys newest first: every key once, keys created meanwhile shift no page, and a bad cursor is a 400 naming the field', async () => {
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.unshift(createdKeyResponse.parse((await call('POST', '/api/keys', { name: `page ${i}` })).json()).id);
    const page = async (query: string) => {
      const answer = await call('GET', `/api/keys${query}`);
      expect(answer.statusCode).toBe(200);
      return apiKeyListResponse.parse(answer.json());
    };
    const all = await page('?limit=1000');
    expect(all.next).toBeNull();
    expect(all.keys.slice(0, 5).map((key) => key.id)).toEqual(made);
    const walked: string[] = [];
    let next: string | null = null;
    do {
      const found = await page(`?limit=2${next === null ? '' : `&before=${next}`}`);
      walked.push(...found.keys.map((key) => key.id));
      // A key created while paging is newer than every cursor: later pages are unchanged by it.
      if (next === null) await call('POST', '/api/keys', { name: 'created while paging' });
      next = found.next;
      expect(found.keys.length).toBe(next === null ? all.keys.length % 2 || 2 : 2);
    } while (next !== null);
    expect(walked).toEqual(all.keys.map((key) => key.id));

    for (const query of ['?before=key_doesnotexist', '?before=nokey', '?limit=0', '?limit=1001', '?page=2']) {
      const bad = await call('GET', `/api/keys${query}`);
      expect(bad.statusCode, query).toBe(400);
      expect(errorBody.parse(bad.json()).error.details!.map((d) => d.field).length, query).toBeGreaterThan(0);
    }
    expect(errorBody.parse((await call('GET', '/api/keys?before=key_doesnotexist')).json()).error.details).toEqual([
      { field: 'before', message: "must be the id of a key (the previous page's next)" },
    ]);
  });

  it('answers 404 for revoking an unknown key and 400 naming the field for a bad key body', async () => {
    expect((await call('DELETE', '/api/keys/key_doesnotexist')).statusCode).toBe(404);
    expect((await call('DELETE', '/api/keys/not-a-key-id')).statusCode).toBe(400);
    const bad = await call('POST', '/api/keys', { name: '', tenant: 'has space' });
    expect(bad.statusCode).toBe(400);
    expect(
      errorBody
        .parse(bad.json())
        .error.details!.map((d) => d.field)
        .sort(),
    ).toEqual(['name', 'tenant']);
  });

  it('creates a tenant with defaults (201), updates only the fields given (200), and lists and reads it', async () => {
    const tenant = uniqueName('admin');
    const created = await call('PUT', `/api/tenants/${tenant}`, {});
    expect(created.statusCode).toBe(201);
    expect(tenantResponse.parse(parseExact(created.body))).toMatchObject({
      tenant,
      monthlyQuota: stack.runtime.config.DEFAULT_MONTHLY_QUOTA,
      timeZone: 'UTC',
      thresholds: [80, 100],
      slackWebhookUrl: null,
    });
    const updated = await call('PUT', `/api/tenants/${tenant}`, { monthlyQuota: 5000, thresholds: [100, 50, 90] });
    expect(updated.statusCode).toBe(200);
    expect(tenantResponse.parse(parseExact(updated.body))).toMatchObject({
      monthlyQuota: 5000n,
      thresholds: [50, 90, 100],
      timeZone: 'UTC',
    });
    const zoned = tenantResponse.parse(parseExact((await call('PUT', `/api/tenants/${tenant}`, { timeZone: 'Asia/Tokyo' })).body));
    expect(zoned).toMatchObject({ monthlyQuota: 5000n, timeZone: 'Asia/Tokyo', thresholds: [50, 90, 100] });
    const list = tenantListResponse.parse(parseExact((await call('GET', `/api/tenants?q=${tenant}`)).body));
    expect(list.total).toBe(1);
    expect(list.tenants[0]!.tenant).toBe(tenant);
    expect(tenantResponse.parse(parseExact((await call('GET', `/api/tenants/${tenant}`)).body)).tenant).toBe(tenant);
    expect(alertListResponse.parse((await call('GET', `/api/tenants/${tenant}/alerts`)).json()).alerts).toEqual([]);
  });

  it('answers 404 for an unknown tenant and 400 for a bad list query', async () => {
    expect((await call('GET', '/api/tenants/nobody-at-all')).statusCode).toBe(404);
    expect((await call('GET', '/api/tenants/nobody-at-all/alerts')).statusCode).toBe(404);
    const bad = await call('GET', '/api/tenants?sort=loudest&limit=0');
    expect(bad.statusCode).toBe(400);
    expect(
      errorBody
        .parse(bad.json())
        .error.details!.map((d) => d.field)
        .sort(),
    ).toEqual(['limit', 'sort']);
  });
});
