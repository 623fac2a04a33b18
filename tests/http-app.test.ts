import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildHealthApp } from '../functions/health/app.ts';
import { createHttpApp } from '../shared/platform/http/app.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { createLogger } from '../shared/platform/logger.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable } from './helpers/services.ts';

describe('createHttpApp', () => {
  const logger = createLogger('http-app-test', { LOG_LEVEL: 'silent', NODE_ENV: 'test' });

  test('answers without loading Fastify’s JSON-schema compilers (ajv, fast-json-stringify)', async () => {
    const app = createHttpApp(logger);
    app.get('/plain', async () => ({ ok: true }));
    try {
      const answer = await app.inject({ method: 'GET', url: '/plain' });
      expect(answer.statusCode).toBe(200);
      expect(answer.json()).toEqual({ ok: true });
      const loaded = Object.keys(createRequire(import.meta.url).cache);
      expect(
        loaded.filter((path) =>
          /[\\/]node_modules[\\/](@fastify[\\/]ajv-compiler|ajv|@fastify[\\/]fast-json-stringify-compiler)[\\/]/.test(path),
        ),
      ).toEqual([]);
    } finally {
      await app.close();
    }
  });

  test('a route given a Fastify schema fails at ready, naming the rule, rather than going unvalidated', async () => {
    const app = createHttpApp(logger);
    app.post('/schema', { schema: { body: { type: 'object', required: ['a'] } } }, async () => ({ ok: true }));
    await expect(app.ready()).rejects.toThrow(/Fastify route schemas are not used here: declare the route with defineRoute/);
    await app.close().catch(() => undefined);
  });

  test('a path that is not valid percent-encoding is a 400 in the one error shape, not the router’s own', async () => {
    const app = createHttpApp(logger);
    app.get('/things/:name', async () => ({ ok: true }));
    try {
      for (const path of ['/things/%E0%A4%A', '/things/%ZZ', '/things/%']) {
        const answer = await app.inject({ method: 'GET', url: path });
        expect(answer.statusCode, path).toBe(400);
        expect(answer.json(), path).toEqual({
          error: {
            code: 'invalid_request',
            message: 'the URL path is not valid percent-encoding',
            requestId: expect.any(String),
            details: [{ field: '(path)', message: 'has a % not followed by two hex digits of valid UTF-8' }],
          },
        });
      }
    } finally {
      await app.close();
    }
  });
});

describe.skipIf(!servicesAvailable)('API paths no route takes: 405 naming the methods, or 404, in the error shape', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await createTestStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  // The health function alone is where Traefik sends them in the stack; npm start's one app answers the same.
  test.each([
    ['the health function (the stack)', () => buildHealthApp(stack.runtime)],
    ['every function on one app (npm start)', () => buildApi(stack.runtime)],
  ])('%s', async (_name, build) => {
    const app = build();
    try {
      const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
      for (const [method, url, allow] of [
        ['PATCH', '/api/tenants/acme', 'GET, PUT, HEAD'],
        ['DELETE', '/api/usage/acme', 'GET, HEAD'],
        ['OPTIONS', '/api/events', 'POST'],
        ['GET', '/api/events/', 'POST'],
        ['POST', '/api/keys/key_abc', 'DELETE'],
      ] as const) {
        const answer = await app.inject({ method, url, headers: admin });
        expect(answer.statusCode, `${method} ${url}`).toBe(405);
        expect(answer.headers.allow, `${method} ${url}`).toBe(allow);
        expect(errorBody.parse(answer.json()).error, `${method} ${url}`).toMatchObject({
          code: 'method_not_allowed',
          message: `${method} is not allowed on ${url}; it takes ${allow}`,
        });
      }
      for (const url of ['/api', '/api/nothing', '/api/usage/acme/series/extra']) {
        const answer = await app.inject({ method: 'GET', url, headers: admin });
        expect(answer.statusCode, url).toBe(404);
        expect(errorBody.parse(answer.json()).error.code, url).toBe('not_found');
      }
      // A route no running instance serves (Traefik dropped its router): a 503 to retry, on the health function.
      if (_name.startsWith('the health function')) {
        const away = await app.inject({ method: 'POST', url: '/api/events', headers: admin, payload: {} });
        expect(away.statusCode).toBe(503);
        expect(away.headers['retry-after']).toBe('1');
        expect(errorBody.parse(away.json()).error.code).toBe('service_unavailable');
      }
      // A GET route takes HEAD: its headers, no body.
      const head = await app.inject({ method: 'HEAD', url: '/api/health' });
      expect([head.statusCode, head.body]).toEqual([200, '']);
    } finally {
      await app.close();
    }
  });
});
