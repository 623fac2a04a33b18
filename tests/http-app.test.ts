import { createRequire } from 'node:module';
import { describe, expect, test } from 'vitest';
import { createHttpApp } from '../shared/platform/http/app.ts';
import { createLogger } from '../shared/platform/logger.ts';

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
