import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../shared/domain/keys.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { addTo, byTenant, rolledUp, sortedEntries, type Totals } from './helpers/load.ts';
import { type RunningProcess, startAggregatorProcess, startProcess, waitFor } from './helpers/processes.ts';
import { ADMIN_TOKEN, functionEnv } from './helpers/runtime.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase } from './helpers/services.ts';

interface Answer {
  status: number;
  body: string;
}

/** A raw HTTP request (no client-side header rules beyond Node's own), so tests can send what fetch would refuse. */
function raw(url: string, method: string, path: string, headers: Record<string, string>, body?: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${url}${path}`, { method, headers, agent: false }, (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
    });
    request.on('error', reject);
    request.setTimeout(20_000, () => request.destroy(new Error(`no answer to ${method} ${path}`)));
    request.end(body);
  });
}

/** Percent-encodes the UTF-8 bytes (lone surrogates become U+FFFD), unlike encodeURIComponent, which throws on them. */
const percentEncode = (text: string): string =>
  [...Buffer.from(text, 'utf8')].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');

const hostileString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 50 }),
  fc.constantFrom(
    '\u0000',
    '\uD800',
    '\uDFFF',
    '\uFEFF',
    '\u202E',
    'A\u0301',
    '🏳️‍🌈',
    '\\u0000',
    '../../etc/passwd',
    '%00',
    "' OR 1=1 --",
    '__proto__',
    'constructor',
    'a'.repeat(129),
  ),
  fc.integer({ min: 1_000, max: 300_000 }).map((n) => 'x'.repeat(n)),
);
/** Numbers as raw JSON text, so values beyond 2^53 reach the server with every digit. */
const hostileNumber = fc.oneof(
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.constantFrom(
    '9007199254740993',
    '1e12',
    '1000000000001',
    '1e400',
    '-0',
    '0',
    '1.5',
    '1e-400',
    '123456789012345678901234567890',
    '0.0000001e7',
    '1E3',
  ),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)),
);
const hostileValue: fc.Arbitrary<string> = fc.oneof(
  hostileString.map((s) => JSON.stringify(s)),
  hostileNumber,
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
);
const eventKeys = fc.constantFrom('tenant', 'feature', 'tokens', 'id', 'timestamp', '__proto__', 'constructor', 'prototype', 'events', '');
/** Event-shaped objects with hostile values and prototype-pollution keys, written as raw JSON. */
const hostileEvent = fc
  .tuple(fc.uniqueArray(eventKeys, { maxLength: 7 }), fc.array(hostileValue, { minLength: 7, maxLength: 7 }), fc.boolean())
  .map(([keys, values, proto]) => {
    const fields = keys.map(
      (key, i) => `${JSON.stringify(key)}:${key === 'constructor' && proto ? '{"prototype":{"polluted":1}}' : values[i]}`,
    );
    return `{${fields.join(',')}}`;
  });
const deepNesting = fc
  .tuple(fc.integer({ min: 100, max: 100_000 }), fc.constantFrom('[', '{"a":'))
  .map(([depth, open]) => (open === '[' ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${open.repeat(depth)}1${'}'.repeat(depth)}`));
const body = fc.oneof(
  fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v)),
  hostileEvent,
  fc.array(hostileEvent, { maxLength: 5 }).map((events) => `[${events.join(',')}]`),
  fc.array(hostileEvent, { maxLength: 5 }).map((events) => `{"events":[${events.join(',')}]}`),
  deepNesting,
  fc.string({ unit: 'binary', maxLength: 300 }),
);
const headerName = fc
  .stringMatching(/^[a-z][a-z0-9-]{0,30}$/)
  .filter((name) => !['content-length', 'transfer-encoding', 'host', 'connection', 'expect', 'upgrade'].includes(name));
const headerValue = fc.oneof(
  fc.stringMatching(/^[\x20-\x7e]{0,200}$/).map((v) => v.trim()),
  fc.constantFrom(
    'application/json; charset=utf-16',
    'application/json;;;',
    'APPLICATION/JSON',
    'application/jsonx',
    'multipart/form-data; boundary=',
    'gzip',
    'deflate',
    'Bearer',
    'Bearer \t ',
    '*/*',
    'x'.repeat(8_000),
  ),
);
const randomHeaders = fc.dictionary(
  fc.oneof(
    headerName,
    fc.constantFrom(
      'content-type',
      'authorization',
      'content-encoding',
      'accept',
      'accept-encoding',
      'x-request-id',
      'x-forwarded-for',
      'cookie',
      'range',
      'if-none-match',
    ),
  ),
  headerValue,
  { maxKeys: 6 },
);

describe.skipIf(!servicesAvailable)('hostile input against real function processes', () => {
  let database: TestDatabase;
  let keySpace: ReturnType<typeof createKeySpace>;
  let runtime: Runtime;
  let env: Record<string, string>;
  let apiKey: string;
  const servers: Record<string, RunningProcess> = {};
  const accepted: Totals = new Map();
  const touched = new Set<string>();

  const urlFor = (path: string) => {
    const fn = (Object.keys(FUNCTION_ROUTES) as (keyof typeof FUNCTION_ROUTES)[]).find((name) =>
      FUNCTION_ROUTES[name].some((route) => new RegExp(`^${route.path.replace(/:[a-z]+/g, '[^/?]*')}(\\?|$)`).test(path)),
    );
    return servers[fn ?? 'ingest']!.url;
  };
  const backlogTotal = async () => (await runtime.queue.backlog()).reduce((a, b) => a + b, 0);
  /** Every answer is 2xx or 4xx with a JSON error body; a 202 on ingest is counted as accepted. */
  const check = async (answer: Answer, sent?: string): Promise<void> => {
    expect(answer.status, answer.body.slice(0, 300)).toBeGreaterThanOrEqual(200);
    expect(answer.status, answer.body.slice(0, 300)).toBeLessThan(500);
    if (answer.status >= 400) {
      // The one error shape of every answer (SPEC §3), what the router refuses included.
      const body = JSON.parse(answer.body) as { error?: { code?: unknown; message?: unknown } };
      expect(typeof body.error?.code, answer.body.slice(0, 300)).toBe('string');
      expect(typeof body.error?.message, answer.body.slice(0, 300)).toBe('string');
    }
    if (answer.status === 202 && sent !== undefined) {
      const parsed = JSON.parse(sent) as unknown;
      const events = (Array.isArray(parsed) ? parsed : ((parsed as { events?: unknown[] }).events ?? [parsed])) as {
        tenant: string;
        feature: string;
        tokens: number;
      }[];
      const duplicates = new Set((JSON.parse(answer.body) as { duplicateIndexes: number[] }).duplicateIndexes);
      events.forEach((event, index) => !duplicates.has(index) && addTo(accepted, event.tenant, event.feature, event.tokens));
    }
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    keySpace = createKeySpace();
    // Webhooks to 127.0.0.1 without a DNS check, so that hostile webhook URLs get as far as the database.
    env = functionEnv(database.url, keySpace.prefix, {
      TELEMETRY_ENABLED: 'false',
      WEBHOOK_ALLOW_INSECURE: 'true',
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
    });
    runtime = await createRuntime('hostile-test', { config: loadConfig(env) });
    apiKey = (await createApiKey(runtime, 'hostile', null)).key;
    const entries = {
      ingest: 'functions/ingest/server.ts',
      usage: 'functions/usage/server.ts',
      tenants: 'functions/tenants/server.ts',
      health: 'functions/health/server.ts',
    };
    await Promise.all(Object.entries(entries).map(async ([name, entry]) => (servers[name] = await startProcess(entry, env))));
  });
  afterAll(async () => {
    await Promise.all(Object.values(servers).map((server) => server.kill('SIGKILL')));
    await runtime?.close();
    await keySpace?.clear();
    await database?.drop();
  });

  it('answers arbitrary, deeply nested, huge and prototype-polluting bodies on ingest with 2xx/4xx, and enqueues nothing it refused', async () => {
    await fc.assert(
      fc.asyncProperty(body, fc.boolean(), async (text, asAdmin) => {
        const before = await backlogTotal();
        const answer = await raw(
          servers.ingest!.url,
          'POST',
          '/api/events',
          { authorization: `Bearer ${asAdmin ? ADMIN_TOKEN : apiKey}`, 'content-type': 'application/json' },
          text,
        );
        await check(answer, text);
        if (answer.status !== 202) expect(await backlogTotal()).toBe(before);
        else touched.add(text);
      }),
      { numRuns: 300 },
    );
  }, 240_000);

  it('answers random headers on every endpoint with 2xx/4xx and never a 5xx', async () => {
    const routes = Object.values(FUNCTION_ROUTES).flat();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        randomHeaders,
        fc.option(body, { nil: undefined }),
        fc.boolean(),
        async (route, headers, text, withKey) => {
          const path = route.path.replace(':tenant', 'acme').replace(':id', 'key_x');
          const all =
            withKey && !('authorization' in headers)
              ? {
                  ...headers,
                  authorization: `Bearer ${route.path.startsWith('/api/tenants') || route.path.startsWith('/api/keys') ? ADMIN_TOKEN : apiKey}`,
                }
              : headers;
          const before = await backlogTotal();
          const answer = await raw(
            urlFor(path),
            route.method,
            path,
            all,
            route.method === 'GET' || route.method === 'DELETE' ? undefined : (text ?? ''),
          );
          await check(answer, route.path === '/api/events' ? text : undefined);
          if (route.path === '/api/events' && answer.status !== 202) expect(await backlogTotal()).toBe(before);
        },
      ),
      { numRuns: 300 },
    );
  }, 240_000);

  it('answers hostile path parameters and query strings with 2xx/4xx', async () => {
    const segment = fc.oneof(
      hostileString.map((s) => percentEncode(s.slice(0, 2_000))),
      fc.constantFrom('%', '%E0%A4%A', '%00', '..', '%2e%2e%2f', '%C0%AF', '%FF%FE', 'a%2Fb', '%uD800'),
    );
    const query = fc.dictionary(
      fc.constantFrom('granularity', 'from', 'to', 'feature', 'q', 'sort', 'limit', 'offset', '__proto__', 'constructor[prototype][x]'),
      hostileString.map((s) => percentEncode(s.slice(0, 500))),
      { maxKeys: 4 },
    );
    const templates = [
      '/api/usage/{}',
      '/api/usage/{}/series',
      '/api/tenants/{}',
      '/api/tenants/{}/alerts',
      '/api/keys/{}',
      '/api/tenants',
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...templates), segment, query, async (template, value, params) => {
        const search = Object.entries(params)
          .map(([k, v]) => `${percentEncode(k)}=${v}`)
          .join('&');
        const path = `${template.replace('{}', value)}${search ? `?${search}` : ''}`;
        const method = template.startsWith('/api/keys') ? 'DELETE' : 'GET';
        await check(await raw(urlFor(path), method, path, { authorization: `Bearer ${ADMIN_TOKEN}` }));
      }),
      { numRuns: 300 },
    );
  }, 240_000);

  it('answers hostile admin bodies (tenant settings, API keys) with 2xx/4xx, never a 5xx', async () => {
    const text = fc.oneof(
      hostileString,
      fc.constantFrom('\u0000', 'a\u0000b', '\u0001', '\n', ' ', '\ud800', 'x'.repeat(3_000), '9'.repeat(40), '-1', '1e400'),
    );
    const webhookUrl = fc.oneof(
      text,
      text.map((t) => `http://127.0.0.1:9/${t}`),
      text.map((t) => `http://127.0.0.1${t}`),
      text.map((t) => `${t}http://127.0.0.1:9/hook`),
      fc.constant(null),
    );
    const number = fc.oneof(
      fc.integer(),
      fc.double(),
      fc.constantFrom(2 ** 53, 2 ** 63, -0, 1e308, Number.MAX_SAFE_INTEGER),
      text,
      fc.constant(null),
    );
    const timeZone = fc.oneof(
      text,
      fc.constantFrom(
        'UTC',
        'Europe/Berlin',
        '+05:30',
        'Etc/GMT+5',
        'posixrules',
        'Factory',
        'localtime',
        'EST5EDT',
        'GMT0',
        'Asia/Kolkata',
      ),
    );
    const tenantBody = fc.record(
      {
        monthlyQuota: number,
        slackWebhookUrl: webhookUrl,
        thresholds: fc.oneof(fc.array(fc.oneof(fc.integer({ min: -5, max: 2_000 }), number), { maxLength: 12 }), number),
        timeZone,
      },
      { requiredKeys: [] },
    );
    const keyBody = fc.record({ name: text, tenant: fc.oneof(text, fc.constantFrom('acme', 'hostile-keys')) }, { requiredKeys: [] });
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    await fc.assert(
      fc.asyncProperty(fc.boolean(), tenantBody, keyBody, fc.integer({ min: 0, max: 3 }), async (settings, tenant, key, which) => {
        if (settings) {
          const path = `/api/tenants/hostile-settings-${which}`;
          await check(await raw(servers.tenants!.url, 'PUT', path, admin, JSON.stringify(tenant)));
          await check(await raw(servers.tenants!.url, 'GET', path, admin));
        } else {
          await check(await raw(servers.tenants!.url, 'POST', '/api/keys', admin, JSON.stringify(key)));
        }
      }),
      { numRuns: 300 },
    );
    // What was stored still reads back, in the list and from the usage function.
    await check(await raw(servers.tenants!.url, 'GET', '/api/tenants?q=hostile-settings', admin));
    await check(await raw(servers.tenants!.url, 'GET', '/api/keys', admin));
    for (const which of [0, 1, 2, 3]) {
      await check(await raw(servers.usage!.url, 'GET', `/api/usage/hostile-settings-${which}`, { authorization: `Bearer ${ADMIN_TOKEN}` }));
    }
  }, 240_000);

  it('closes slowloris connections (headers or body trickling in) and keeps serving others meanwhile', async () => {
    const slow = (kind: 'headers' | 'body') =>
      new Promise<{ kind: string; closedAfterMs: number; answer: string }>((resolve) => {
        const started = Date.now();
        const socket = connect(servers.ingest!.port, '127.0.0.1');
        let answer = '';
        let timer: NodeJS.Timeout | undefined;
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
        socket.on('error', () => {});
        socket.on('close', () => {
          clearInterval(timer);
          resolve({ kind, closedAfterMs: Date.now() - started, answer });
        });
        socket.write(
          `POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\n`,
        );
        if (kind === 'body') socket.write('Content-Length: 100000\r\n\r\n[');
        // A byte a second: never idle long enough for the idle timeout, never done.
        timer = setInterval(() => socket.write(kind === 'body' ? ' ' : 'X'), 1_000);
      });
    const started = Date.now();
    const attackers = [...Array.from({ length: 20 }, () => slow('body')), ...Array.from({ length: 20 }, () => slow('headers'))];
    // Others are served normally meanwhile.
    const served = await raw(
      servers.ingest!.url,
      'POST',
      '/api/events',
      { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      '[]',
    );
    expect(served.status).toBe(400);
    expect(Date.now() - started).toBeLessThan(5_000);
    const closed = await Promise.all(attackers);
    // Headers must arrive within 10 s and the whole request within 15 s; the server checks every second.
    for (const kind of ['headers', 'body']) {
      console.info(
        `slowloris (${kind}) closed after at most ${Math.max(...closed.filter((c) => c.kind === kind).map((c) => c.closedAfterMs))} ms`,
      );
    }
    for (const { closedAfterMs, answer } of closed) {
      expect(closedAfterMs).toBeLessThan(25_000);
      expect(answer === '' || /^HTTP\/1\.1 408/.test(answer)).toBe(true);
    }
  }, 60_000);

  it('is still up, healthy and unpolluted afterwards, and counts exactly what it accepted', async () => {
    for (const server of Object.values(servers)) expect(server.child.exitCode).toBeNull();
    expect((await fetch(`${servers.health!.url}/api/health`)).status).toBe(200);
    const valid = await raw(
      servers.ingest!.url,
      'POST',
      '/api/events',
      { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      JSON.stringify({ tenant: 'hostile-check', feature: 'f', tokens: 3, polluted: undefined }),
    );
    await check(valid, JSON.stringify({ tenant: 'hostile-check', feature: 'f', tokens: 3 }));
    expect(valid.status).toBe(202);
    const aggregator = await startAggregatorProcess(env, 'hostile');
    try {
      await waitFor(async () => (await backlogTotal()) === 0, { timeoutMs: 60_000, what: 'the backlog to drain' });
      // Only what was answered 202 reached the rollups: no rejected request changed any tenant's usage.
      const [{ tenants } = { tenants: [] as string[] }] = await runtime.db.query<{ tenants: string[] }>(
        'SELECT coalesce(array_agg(DISTINCT tenant), ARRAY[]::text[]) AS tenants FROM usage_periods',
      );
      const rolled = await rolledUp(runtime.db, tenants);
      expect(sortedEntries(rolled.periods)).toEqual(sortedEntries(byTenant(accepted)));
      expect(sortedEntries(rolled.daily)).toEqual(sortedEntries(accepted));
    } finally {
      await aggregator.kill('SIGKILL');
    }
  }, 120_000);
});
