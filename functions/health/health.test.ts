import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/platform/config.ts';
import type { EventQueue } from '../../shared/platform/queue/types.ts';
import { openQueue } from '../../shared/runtime/runtime.ts';
import { freePort } from '../../tests/helpers/processes.ts';
import { createTestStack, type TestStack } from '../../tests/helpers/runtime.ts';
import { servicesAvailable } from '../../tests/helpers/services.ts';
import { buildOpenApiDocument } from '../openapi.ts';
import { buildHealthApp } from './app.ts';

describe.skipIf(!servicesAvailable)('health function (its own app, real PostgreSQL and Valkey)', () => {
  let stack: TestStack;
  let app: FastifyInstance;

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildHealthApp(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('answers ok with both checks, and the OpenAPI document, without credentials', async () => {
    const health = await app.inject({ method: 'GET', url: '/api/health' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ status: 'ok', checks: { postgres: { ok: true }, valkey: { ok: true } } });
    const document = await app.inject({ method: 'GET', url: '/api/openapi.json' });
    expect(document.statusCode).toBe(200);
    expect(document.json()).toEqual(JSON.parse(JSON.stringify(buildOpenApiDocument())));
  });

  it('answers 503 degraded, naming the failing check, when the queue does not answer', async () => {
    // A real Valkey client pointed at a port nothing listens on.
    const config = loadConfig({ ...stack.env, VALKEY_URL: `redis://127.0.0.1:${await freePort()}` });
    const queue: EventQueue = await openQueue(config, stack.runtime.logger);
    const degraded = buildHealthApp({ db: stack.runtime.db, queue, logger: stack.runtime.logger });
    try {
      const response = await degraded.inject({ method: 'GET', url: '/api/health' });
      expect(response.statusCode).toBe(503);
      expect(response.json()).toMatchObject({
        status: 'degraded',
        checks: { postgres: { ok: true }, valkey: { ok: false, error: expect.any(String) } },
      });
    } finally {
      await degraded.close();
      await queue.close();
    }
  });
});
