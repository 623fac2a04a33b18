import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../shared/domain/keys.ts';
import { hashSecret } from '../shared/domain/auth.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { checkWebhookUrl, postWebhook, webhookUrlProblem } from '../shared/domain/webhooks.ts';
import { freePort, ROOT } from './helpers/processes.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

const OPEN_ROUTES = new Set(['/api/health', '/api/openapi.json']);
const ROUTES = Object.values(FUNCTION_ROUTES).flat();
const concrete = (path: string, tenant = 'acme') => path.replace(':tenant', tenant).replace(':id', 'key_abc');
const SQL_INJECTIONS = [
  "'; DROP TABLE tenants; --",
  "acme' OR '1'='1",
  'acme"; DELETE FROM usage_periods; --',
  "1; SELECT pg_sleep(5)",
  "' UNION SELECT key_hash FROM api_keys --",
  'acme\\',
  '$1',
  '%',
];

describe.skipIf(!servicesAvailable)('security', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  let scopedKey: string;
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const json = { 'content-type': 'application/json' };
  const send = (method: string, url: string, headers: Record<string, string> = {}, payload?: unknown) =>
    app.inject({ method: method as 'GET', url, headers: payload === undefined ? headers : { ...json, ...headers }, ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }) });
  const bodyFor = (method: string) => (method === 'POST' || method === 'PUT' ? { tenant: 'acme', feature: 'f', tokens: 1, name: 'n' } : undefined);

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildApi(stack.runtime);
    await app.ready();
    scopedKey = (await createApiKey(stack.runtime, 'scoped', 'acme')).key;
    expect((await send('PUT', '/api/tenants/acme', admin, { monthlyQuota: 1000 })).statusCode).toBe(201);
    expect((await send('POST', '/api/events', { authorization: `Bearer ${scopedKey}` }, { tenant: 'acme', feature: 'f', tokens: 5 })).statusCode).toBe(202);
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('answers 401 on every non-health endpoint with no, a malformed, an unknown or a revoked credential', async () => {
    const revoked = await createApiKey(stack.runtime, 'revoked', null);
    const revoke = await send('DELETE', `/api/keys/${revoked.id}`, admin);
    expect(revoke.statusCode).toBe(200);
    const credentials: (string | undefined)[] = [undefined, 'Bearer', 'Basic YWRtaW46YWRtaW4=', `Bearer fm_${'x'.repeat(32)}`, `Bearer ${revoked.key}`, `Bearer ${ADMIN_TOKEN}x`, ADMIN_TOKEN, `Bearer ${'a'.repeat(600)}`];
    for (const route of ROUTES.filter((r) => !OPEN_ROUTES.has(r.path))) {
      for (const credential of credentials) {
        const response = await send(route.method, concrete(route.path), credential === undefined ? {} : { authorization: credential }, bodyFor(route.method));
        expect(response.statusCode, `${route.method} ${route.path} with ${credential?.slice(0, 20)}`).toBe(401);
        expect(errorBody.parse(response.json()).error.code).toBe('unauthorized');
      }
    }
    for (const path of OPEN_ROUTES) expect((await send('GET', path)).statusCode).not.toBe(401);
  });

  it('answers 403 when a tenant-scoped key reaches for another tenant on ingest, usage and series, and 2xx on its own', async () => {
    const auth = { authorization: `Bearer ${scopedKey}` };
    const other = uniqueName('other');
    expect((await send('POST', '/api/events', auth, { tenant: other, feature: 'f', tokens: 1 })).statusCode).toBe(403);
    // One foreign event in a batch refuses the whole batch.
    expect((await send('POST', '/api/events', auth, [{ tenant: 'acme', feature: 'f', tokens: 1 }, { tenant: other, feature: 'f', tokens: 1 }])).statusCode).toBe(403);
    expect((await send('GET', `/api/usage/${other}`, auth)).statusCode).toBe(403);
    expect((await send('GET', `/api/usage/${other}/series?granularity=day`, auth)).statusCode).toBe(403);
    // The 403 does not reveal whether the other tenant exists: an unknown one answers the same.
    expect((await send('GET', '/api/usage/nobody-at-all', auth)).statusCode).toBe(403);
    expect((await send('GET', '/api/usage/acme', auth)).statusCode).toBe(200);
    expect((await send('GET', '/api/usage/acme/series?granularity=hour', auth)).statusCode).toBe(200);
    const events = await stack.runtime.queue.backlog();
    expect(events.reduce((a, b) => a + b, 0)).toBe(1);
  });

  it('refuses API keys, scoped or not, on every admin endpoint with 403', async () => {
    for (const key of [stack.apiKey, scopedKey]) {
      for (const route of FUNCTION_ROUTES.tenants) {
        const response = await send(route.method, concrete(route.path), { authorization: `Bearer ${key}` }, bodyFor(route.method));
        expect(response.statusCode, `${route.method} ${route.path}`).toBe(403);
        expect(errorBody.parse(response.json()).error.code).toBe('forbidden');
      }
    }
  });

  it('compares credentials in constant time: SHA-256 digests, timingSafeEqual for the admin token, a hash-map lookup for keys', () => {
    // A statistical timing test would be flaky on a shared 2-core machine; the structure is what
    // makes comparison time independent of how much of a guess matches, so that is what is checked.
    const source = readFileSync(join(ROOT, 'shared', 'auth.ts'), 'utf8');
    const authenticate = source.slice(source.indexOf('authenticate(request'), source.indexOf('readonly requireKey'));
    expect(authenticate).toMatch(/createHash\('sha256'\)\.update\(match\[1\]!?\)\.digest\(\)/);
    expect(authenticate).toMatch(/this\.isAdminDigest\(digest\)/);
    expect(authenticate).toMatch(/this\.keys\.findByHash\(digest\.toString\('hex'\)\)/);
    expect(source).toMatch(/timingSafeEqual\(digest, this\.adminHash\)/);
    // No secret is ever compared as a string.
    expect(authenticate).not.toMatch(/===|!==|startsWith|localeCompare/);
    // Keys are stored and looked up only as hashes: the stored value is the SHA-256 of the secret.
    const seen: string[] = [];
    const original = stack.runtime.keys.findByHash.bind(stack.runtime.keys);
    stack.runtime.keys.findByHash = (hash: string) => {
      seen.push(hash);
      return original(hash);
    };
    try {
      const guess = `fm_${'g'.repeat(32)}`;
      expect(() => stack.runtime.auth.authenticate({ headers: { authorization: `Bearer ${guess}` } } as never)).toThrow();
      expect(seen).toEqual([hashSecret(guess)]);
    } finally {
      stack.runtime.keys.findByHash = original;
    }
  });

  it('never executes SQL injection strings in tenant, feature, path and query: they are rejected or stored verbatim', async () => {
    const [before] = await stack.runtime.db.query<{ tenants: number; keys: number }>('SELECT (SELECT count(*) FROM tenants)::int AS tenants, (SELECT count(*) FROM api_keys)::int AS keys');
    for (const text of SQL_INJECTIONS) {
      const started = performance.now();
      expect((await send('POST', '/api/events', admin, { tenant: text, feature: 'f', tokens: 1 })).statusCode, text).toBe(400);
      expect((await send('POST', '/api/events', admin, { tenant: 'acme', feature: text, tokens: 1 })).statusCode, text).toBe(400);
      expect((await send('GET', `/api/usage/${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      expect((await send('GET', `/api/usage/acme/series?feature=${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      expect((await send('GET', `/api/usage/acme/series?granularity=${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      expect((await send('GET', `/api/tenants/${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      expect((await send('PUT', `/api/tenants/${encodeURIComponent(text)}`, admin, { monthlyQuota: 1 })).statusCode, text).toBe(400);
      expect((await send('DELETE', `/api/keys/${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      expect((await send('GET', `/api/tenants?sort=${encodeURIComponent(text)}`, admin)).statusCode, text).toBe(400);
      // Free text is a parameter: the search matches it literally (no tenant has such a name).
      const search = await send('GET', `/api/tenants?q=${encodeURIComponent(text)}`, admin);
      expect(search.statusCode, text).toBe(200);
      expect(search.json().tenants, text).toEqual([]);
      // A key name is stored exactly as sent.
      const created = await send('POST', '/api/keys', admin, { name: text });
      expect(created.statusCode).toBe(201);
      expect(created.json().name).toBe(text);
      expect(performance.now() - started).toBeLessThan(4_000);
    }
    const listed = (await send('GET', '/api/keys', admin)).json() as { keys: { name: string }[] };
    expect(listed.keys.map((key) => key.name)).toEqual(expect.arrayContaining(SQL_INJECTIONS));
    // Names made of allowed characters that look like SQL are data, stored verbatim.
    for (const tenant of ['--', 'a--b', '@@version', '1:1', "x.y_z@-"]) {
      expect((await send('PUT', `/api/tenants/${encodeURIComponent(tenant)}`, admin, { monthlyQuota: 10 })).statusCode).toBe(201);
      expect((await send('GET', `/api/tenants/${encodeURIComponent(tenant)}`, admin)).json().tenant).toBe(tenant);
    }
    const [after] = await stack.runtime.db.query<{ tenants: number; keys: number }>('SELECT (SELECT count(*) FROM tenants)::int AS tenants, (SELECT count(*) FROM api_keys)::int AS keys');
    expect(after!.tenants).toBe(before!.tenants + 5);
    expect((await stack.runtime.db.query('SELECT 1 FROM tenants WHERE name = $1', ['acme'])).length).toBe(1);
    expect(after!.keys).toBe(before!.keys + SQL_INJECTIONS.length);
  });

  it('refuses webhook URLs that reach internal addresses however they are spelled, and checks the address again at connect time', async () => {
    const strict = { allowedHosts: ['hooks.slack.com', 'localhost', '127.0.0.1', '2130706433', '0x7f.1', '[::1]', '::1', '169.254.169.254', 'metadata.google.internal'], allowInsecure: false };
    for (const url of [
      'https://127.0.0.1/hook',
      'https://2130706433/hook',
      'https://0x7f.1/hook',
      'https://127.1/hook',
      'https://[::1]/hook',
      'https://[::ffff:127.0.0.1]/hook',
      'https://[::ffff:a9fe:a9fe]/latest',
      'https://169.254.169.254/latest/meta-data',
      'https://10.1.2.3/hook',
      'https://192.168.0.1/hook',
      'https://172.16.5.4/hook',
      'https://100.64.0.1/hook',
      'https://0.0.0.0/hook',
      'https://[fd00::1]/hook',
      'https://[fe80::1]/hook',
      'http://hooks.slack.com/services/x',
      'https://hooks.slack.com.evil.example/services/x',
      'https://hooks.slack.com@evil.example/services/x',
      'https://evil.example#@hooks.slack.com/',
      'file:///etc/passwd',
      'gopher://hooks.slack.com/',
      'javascript:alert(1)',
    ]) {
      expect(webhookUrlProblem(url, strict), url).toBeDefined();
    }
    expect(webhookUrlProblem('https://hooks.slack.com/services/T0/B0/x', strict)).toBeUndefined();
    // A host name on the list that resolves to loopback is refused when saved and when posted to.
    expect(await checkWebhookUrl('https://localhost/hook', strict)).toMatch(/loopback|private|link-local/);
    let reached = 0;
    const target = createServer((_request, response) => {
      reached++;
      response.end('ok');
    });
    const port = await freePort();
    await new Promise<void>((resolve) => target.listen(port, '127.0.0.1', resolve));
    try {
      const guarded = { allowedHosts: ['localhost'], allowInsecure: false };
      await expect(postWebhook(`https://localhost:${port}/hook`, { text: 'x' }, guarded, 2_000)).rejects.toThrow(/internal addresses/);
      expect(reached).toBe(0);
    } finally {
      target.close();
    }
    // Through the API: refused with 400 naming the field, and nothing stored.
    const tenant = uniqueName('ssrf');
    const response = await send('PUT', `/api/tenants/${tenant}`, admin, { slackWebhookUrl: 'https://[::ffff:a9fe:a9fe]/latest/meta-data' });
    expect(response.statusCode).toBe(400);
    expect(errorBody.parse(response.json()).error.details?.[0]?.field).toBe('slackWebhookUrl');
    expect((await send('GET', `/api/tenants/${tenant}`, admin)).statusCode).toBe(404);
  });

  it('never echoes secrets or stack traces in error bodies, even when a dependency fails', async () => {
    const secret = `fm_${'s'.repeat(40)}`;
    const bodies = [
      (await send('GET', '/api/usage/acme', { authorization: `Bearer ${secret}` })).body,
      (await send('POST', '/api/events', { authorization: `Bearer ${secret}` }, { tenant: 'acme', feature: 'f', tokens: 1 })).body,
      (await app.inject({ method: 'POST', url: '/api/events', headers: { ...admin, ...json }, payload: `{"tenant": "${secret}` })).body,
      (await send('POST', '/api/keys', { authorization: `Bearer ${stack.apiKey}` }, { name: 'x' })).body,
      (await send('GET', `/api/nowhere?token=${secret}`, admin)).body,
    ];
    // A database that is not there: whatever the status, no connection string, no stack.
    const deadUrl = `postgres://flagmeter:hunter2-db-password@127.0.0.1:${await freePort()}/nowhere`;
    const broken = await createRuntime('broken', { config: loadConfig({ ...stack.env, DATABASE_URL: deadUrl }) });
    const brokenApp = buildApi(broken);
    try {
      broken.keys.add(hashSecret(secret), { id: 'key_x', tenant: null });
      for (const url of ['/api/usage/acme', '/api/usage/acme/series', '/api/tenants', '/api/health']) {
        const response = await brokenApp.inject({ method: 'GET', url, headers: { authorization: `Bearer ${url.startsWith('/api/tenants') ? ADMIN_TOKEN : secret}` } });
        expect(response.statusCode, url).toBeGreaterThanOrEqual(500);
        bodies.push(response.body);
      }
    } finally {
      await brokenApp.close();
      await broken.close();
    }
    for (const body of bodies) {
      expect(body).not.toContain(secret);
      expect(body).not.toContain(ADMIN_TOKEN);
      expect(body).not.toContain('hunter2');
      expect(body).not.toContain('postgres://');
      expect(body).not.toMatch(/\n\s+at |\.ts:\d+|node_modules/);
    }
  });

  it('sends no x-powered-by and a JSON content-type on every API response, errors included', async () => {
    const responses = [
      await send('GET', '/api/health'),
      await send('GET', '/api/openapi.json'),
      await send('GET', '/api/usage/acme', admin),
      await send('GET', '/api/usage/acme'),
      await send('GET', '/api/usage/nobody-here', admin),
      await send('POST', '/api/events', admin, { tenant: 'acme' }),
      await app.inject({ method: 'POST', url: '/api/events', headers: { ...admin, 'content-type': 'text/plain' }, payload: 'hi' }),
      await app.inject({ method: 'POST', url: '/api/events', headers: { ...admin, ...json }, payload: '{' }),
      await app.inject({ method: 'POST', url: '/api/events', headers: { ...admin, ...json }, payload: `"${'x'.repeat(1024 * 1024 + 10)}"` }),
      await send('DELETE', '/api/events', admin),
      await send('GET', '/api/tenants', { authorization: `Bearer ${stack.apiKey}` }),
      await send('GET', '/api/nowhere'),
    ];
    expect(new Set(responses.map((r) => r.statusCode))).toEqual(new Set([200, 401, 404, 400, 415, 413, 403]));
    for (const response of responses) {
      expect(response.headers['x-powered-by']).toBeUndefined();
      expect(response.headers['content-type']).toMatch(/^application\/json/);
    }
  });
});
