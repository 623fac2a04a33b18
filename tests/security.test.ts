import { createServer } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../shared/domain/keys.ts';
import { hashSecret } from '../shared/domain/auth.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { buildOpenApiDocument } from '../functions/openapi.ts';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { checkWebhookUrl, postWebhook, webhookUrlProblem } from '../shared/domain/webhooks.ts';
import { freePort } from './helpers/processes.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

const OPEN_ROUTES = new Set(['/api/health', '/api/openapi.json']);
const ROUTES = Object.values(FUNCTION_ROUTES).flat();
const concrete = (path: string, tenant = 'acme') => path.replace(':tenant', tenant).replace(':id', 'key_abc');
const SQL_INJECTIONS = [
  "'; DROP TABLE tenants; --",
  "acme' OR '1'='1",
  'acme"; DELETE FROM usage_periods; --',
  '1; SELECT pg_sleep(5)',
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
  // Each request from an address of its own: these tests send many refused credentials on purpose,
  // which from one address would soon be throttled (429) before they are checked.
  let clients = 0;
  const send = (method: string, url: string, headers: Record<string, string> = {}, payload?: unknown) =>
    app.inject({
      method: method as 'GET',
      url,
      headers: payload === undefined ? headers : { ...json, ...headers },
      remoteAddress: `10.${(++clients >> 16) & 255}.${(clients >> 8) & 255}.${clients & 255}`,
      ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
    });
  const bodyFor = (method: string) =>
    method === 'POST' || method === 'PUT' ? { tenant: 'acme', feature: 'f', tokens: 1, name: 'n' } : undefined;

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildApi(stack.runtime);
    await app.ready();
    scopedKey = (await createApiKey(stack.runtime, 'scoped', 'acme')).key;
    expect((await send('PUT', '/api/tenants/acme', admin, { monthlyQuota: 1000 })).statusCode).toBe(201);
    expect(
      (await send('POST', '/api/events', { authorization: `Bearer ${scopedKey}` }, { tenant: 'acme', feature: 'f', tokens: 5 })).statusCode,
    ).toBe(202);
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('answers 401 on every non-health endpoint with no, a malformed, an unknown or a revoked credential', async () => {
    const revoked = await createApiKey(stack.runtime, 'revoked', null);
    const revoke = await send('DELETE', `/api/keys/${revoked.id}`, admin);
    expect(revoke.statusCode).toBe(200);
    const credentials: (string | undefined)[] = [
      undefined,
      'Bearer',
      'Basic YWRtaW46YWRtaW4=',
      `Bearer fm_${'x'.repeat(32)}`,
      `Bearer ${revoked.key}`,
      `Bearer ${ADMIN_TOKEN}x`,
      ADMIN_TOKEN,
      `Bearer ${'a'.repeat(600)}`,
    ];
    for (const route of ROUTES.filter((r) => !OPEN_ROUTES.has(r.path))) {
      for (const credential of credentials) {
        const response = await send(
          route.method,
          concrete(route.path),
          credential === undefined ? {} : { authorization: credential },
          bodyFor(route.method),
        );
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
    expect(
      (
        await send('POST', '/api/events', auth, [
          { tenant: 'acme', feature: 'f', tokens: 1 },
          { tenant: other, feature: 'f', tokens: 1 },
        ])
      ).statusCode,
    ).toBe(403);
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

  it('accepts the admin token only exactly, refuses every near miss with 401 (never an error), and looks keys up by their SHA-256', async () => {
    // Comparing digests, not the strings, is what makes the time independent of how much of a guess
    // matches; it also means guesses of any length are compared without throwing (timingSafeEqual on
    // raw strings of different lengths throws, which would surface as a 500).
    const nearMisses = [
      ADMIN_TOKEN.slice(0, -1),
      `${ADMIN_TOKEN}x`,
      `${ADMIN_TOKEN.slice(0, -1)}${ADMIN_TOKEN.at(-1) === 'x' ? 'y' : 'x'}`,
      ADMIN_TOKEN.toUpperCase(),
      ADMIN_TOKEN.slice(0, 1),
      'x'.repeat(512),
      `${ADMIN_TOKEN.slice(0, 8)}${'0'.repeat(ADMIN_TOKEN.length - 8)}`,
    ];
    expect(stack.runtime.auth.authenticate({ headers: { authorization: `Bearer ${ADMIN_TOKEN}` } } as never)).toEqual({ kind: 'admin' });
    for (const guess of nearMisses) {
      expect(() => stack.runtime.auth.authenticate({ headers: { authorization: `Bearer ${guess}` } } as never), guess).toThrow(
        /invalid or revoked|must be/,
      );
      const response = await app.inject({
        method: 'GET',
        url: '/api/tenants',
        headers: { authorization: `Bearer ${guess}` },
        remoteAddress: `10.9.${nearMisses.indexOf(guess)}.1`,
      });
      expect(response.statusCode, guess).toBe(401);
    }
    // Keys are stored and looked up only as hashes: the lookup gets the SHA-256 of the secret, never the secret.
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
      const [stored] = await stack.runtime.db.query<{ key_hash: string }>('SELECT key_hash FROM api_keys WHERE key_hash = $1', [
        hashSecret(scopedKey),
      ]);
      expect(stored?.key_hash).toBe(hashSecret(scopedKey));
      expect(
        (await stack.runtime.db.query('SELECT 1 FROM api_keys WHERE key_hash = $1 OR key_prefix = $1 OR name = $1', [scopedKey])).length,
      ).toBe(0);
    } finally {
      stack.runtime.keys.findByHash = original;
    }
  });

  it('never executes SQL injection strings in tenant, feature, path and query: they are rejected or stored verbatim', async () => {
    const [before] = await stack.runtime.db.query<{ tenants: number; keys: number }>(
      'SELECT (SELECT count(*) FROM tenants)::int AS tenants, (SELECT count(*) FROM api_keys)::int AS keys',
    );
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
    for (const tenant of ['--', 'a--b', '@@version', '1:1', 'x.y_z@-']) {
      expect((await send('PUT', `/api/tenants/${encodeURIComponent(tenant)}`, admin, { monthlyQuota: 10 })).statusCode).toBe(201);
      expect((await send('GET', `/api/tenants/${encodeURIComponent(tenant)}`, admin)).json().tenant).toBe(tenant);
    }
    const [after] = await stack.runtime.db.query<{ tenants: number; keys: number }>(
      'SELECT (SELECT count(*) FROM tenants)::int AS tenants, (SELECT count(*) FROM api_keys)::int AS keys',
    );
    expect(after!.tenants).toBe(before!.tenants + 5);
    expect((await stack.runtime.db.query('SELECT 1 FROM tenants WHERE name = $1', ['acme'])).length).toBe(1);
    expect(after!.keys).toBe(before!.keys + SQL_INJECTIONS.length);
  });

  it('refuses webhook URLs that reach internal addresses however they are spelled, and checks the address again at connect time', async () => {
    const strict = {
      allowedHosts: [
        'hooks.slack.com',
        'localhost',
        '127.0.0.1',
        '2130706433',
        '0x7f.1',
        '[::1]',
        '::1',
        '169.254.169.254',
        'metadata.google.internal',
      ],
      allowInsecure: false,
    };
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
      // IPv6 forms that carry an IPv4 address: judged by that address.
      'https://[::7f00:1]/hook',
      'https://[::a9fe:a9fe]/latest',
      'https://[::ffff:0:a00:1]/hook',
      'https://[64:ff9b::7f00:1]:18443/x',
      'https://[64:ff9b::a9fe:a9fe]/latest',
      'https://[2002:7f00:1::1]/hook',
      'https://[2002:c0a8:1::]/hook',
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
    // The same forms around a public IPv4 address stay usable (NAT64 and 6to4 reach the internet).
    const embedding = {
      allowedHosts: ['64:ff9b::808:808', '2002:808:808::1', '64:ff9b::7f00:1', '2002:7f00:1::1', '::7f00:1'],
      allowInsecure: false,
    };
    expect(webhookUrlProblem('https://[64:ff9b::808:808]/x', embedding)).toBeUndefined();
    expect(webhookUrlProblem('https://[2002:808:808::1]/x', embedding)).toBeUndefined();
    for (const url of ['https://[64:ff9b::7f00:1]:18443/x', 'https://[2002:7f00:1::1]/x', 'https://[::7f00:1]/x']) {
      expect(webhookUrlProblem(url, embedding), url).toMatch(/loopback, private or link-local/);
    }
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

  it('tells a webhook host that does not exist (400) from a DNS lookup that failed for now (503, retry)', async () => {
    const policy = { allowedHosts: ['hooks.slack.com'], allowInsecure: false };
    const url = 'https://hooks.slack.com/services/T/B/x';
    const failing = (code: string) => () => Promise.reject(Object.assign(new Error(`getaddrinfo ${code}`), { code }));
    expect(await checkWebhookUrl(url, policy, failing('ENOTFOUND'))).toBe('host hooks.slack.com does not resolve');
    for (const code of ['EAI_AGAIN', 'ETIMEOUT', 'ESERVFAIL']) {
      await expect(checkWebhookUrl(url, policy, failing(code)), code).rejects.toMatchObject({ code: 'service_unavailable', status: 503 });
    }
    expect(await checkWebhookUrl(url, policy, async () => [{ address: '34.225.1.2', family: 4 }])).toBeUndefined();
    expect(await checkWebhookUrl(url, policy, async () => [{ address: '10.0.0.5', family: 4 }])).toMatch(/loopback, private or link-local/);
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
        const response = await brokenApp.inject({
          method: 'GET',
          url,
          headers: { authorization: `Bearer ${url.startsWith('/api/tenants') ? ADMIN_TOKEN : secret}` },
        });
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

  it('answers 400 naming the field for series bounds outside 2000 to 2100, and 200 inside', async () => {
    const series = (query: string) => send('GET', `/api/usage/acme/series?${query}`, admin);
    for (const [query, field] of [
      ['granularity=day&from=0000-01-01T00:00:00Z&to=0000-12-01T00:00:00Z', 'from'],
      ['granularity=hour&to=9999-12-31T23:00:00Z', 'to'],
      ['granularity=day&from=1999-12-31T23:59:59Z', 'from'],
      ['granularity=day&from=2099-12-01T00:00:00Z&to=2100-01-01T00:00:00Z', 'to'],
    ] as const) {
      const response = await series(query);
      expect(response.statusCode, query).toBe(400);
      expect(
        errorBody.parse(response.json()).error.details?.map((d) => d.field),
        query,
      ).toContain(field);
    }
    expect((await series('granularity=day&from=2026-01-01T00:00:00Z&to=2026-01-31T00:00:00Z')).statusCode).toBe(200);
  });

  it('answers only statuses the OpenAPI document lists: a 10 KB path is a 400 naming the field, oversized headers a 431 in the error shape', async () => {
    const document = buildOpenApiDocument() as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        for (const status of ['408', '431']) expect(Object.keys(operation.responses), `${method} ${path}`).toContain(status);
      }
    }
    const longPath = await send('GET', `/api/usage/${'a'.repeat(10 * 1024)}`, admin);
    expect(longPath.statusCode).toBe(400);
    expect(errorBody.parse(longPath.json()).error.details?.[0]?.field).toBe('tenant');
    expect(Object.keys(document.paths['/api/usage/{tenant}']!.get!.responses)).toContain('400');
    // The HTTP parser's own refusals come in the error shape too (a real socket: inject has no parser).
    const server = buildApi(stack.runtime);
    await server.listen({ port: 0, host: '127.0.0.1' });
    try {
      const address = server.server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const response = await fetch(`http://127.0.0.1:${port}/api/usage/acme`, {
        headers: { ...admin, 'x-padding': 'p'.repeat(20 * 1024) },
      });
      expect(response.status).toBe(431);
      expect(errorBody.parse(await response.json()).error.code).toBe('headers_too_large');
    } finally {
      await server.close();
    }
  });

  it('keeps a short X-Request-Id of safe characters and replaces any other with its own', async () => {
    const idOf = async (requestId: string): Promise<string | undefined> => {
      const response = await app.inject({ method: 'GET', url: '/api/usage/acme', headers: { 'x-request-id': requestId } });
      expect(response.statusCode).toBe(401);
      return errorBody.parse(response.json()).error.requestId;
    };
    expect(await idOf('trace-42:abc.DEF_9')).toBe('trace-42:abc.DEF_9');
    for (const hostile of [
      'x'.repeat(8 * 1024),
      'a'.repeat(65),
      '<script>alert(1)</script>',
      'id with spaces',
      'line\u2028break',
      '"quoted"',
      '\u00e9t\u00e9',
    ]) {
      const id = await idOf(hostile);
      expect(id, hostile.slice(0, 20)).toMatch(/^[A-Za-z0-9._:-]{1,64}$/);
      expect(id).not.toBe(hostile);
    }
    expect(await idOf('<bad>')).not.toBe(await idOf('<bad>'));
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
      await app.inject({
        method: 'POST',
        url: '/api/events',
        headers: { ...admin, ...json },
        payload: `"${'x'.repeat(1024 * 1024 + 10)}"`,
      }),
      await send('DELETE', '/api/events', admin),
      await send('GET', '/api/tenants', { authorization: `Bearer ${stack.apiKey}` }),
      await send('GET', '/api/nowhere'),
    ];
    expect(new Set(responses.map((r) => r.statusCode))).toEqual(new Set([200, 401, 404, 400, 415, 413, 403, 405]));
    for (const response of responses) {
      expect(response.headers['x-powered-by']).toBeUndefined();
      expect(response.headers['content-type']).toMatch(/^application\/json/);
    }
  });
});
