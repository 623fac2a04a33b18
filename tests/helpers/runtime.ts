import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import { type RunningAggregator, startAggregator } from '../../functions/aggregator/service.ts';
import { registerAllFunctions } from '../../functions/api.ts';
import { allowedMethods } from '../../functions/routes.ts';
import { type UsageResponse, usageResponse } from '../../functions/usage/schema.ts';
import { createApiKey } from '../../shared/domain/keys.ts';
import { loadConfig } from '../../shared/platform/config.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime.ts';
import { parseExact } from './json.ts';
import { createKeySpace, createTestDatabase, VALKEY_URL } from './services.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** The environment a function process under test gets: its own database and key space. */
export function functionEnv(databaseUrl: string, prefix: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    VALKEY_URL,
    VALKEY_PREFIX: prefix,
    ADMIN_TOKEN,
    LOG_LEVEL: 'warn',
    QUEUE_PARTITIONS: '4',
    AGGREGATOR_LEASE: '2s',
    DEDUPE_WINDOW: '15m',
    ...extra,
  };
}

export interface TestStack {
  runtime: Runtime;
  databaseUrl: string;
  prefix: string;
  env: Record<string, string>;
  /** A key that may act for every tenant. */
  apiKey: string;
  close(): Promise<void>;
}

/** A fresh database, key space and in-process runtime for one test file. */
export async function createTestStack(extra: Record<string, string> = {}): Promise<TestStack> {
  const database = await createTestDatabase();
  const keySpace = createKeySpace();
  const env = functionEnv(database.url, keySpace.prefix, extra);
  // In-process logs would interleave with the test report; errors still show.
  const runtime = await createRuntime('test', { config: loadConfig({ ...env, LOG_LEVEL: 'error' }) });
  const { key } = await createApiKey(runtime, 'test', null);
  return {
    runtime,
    databaseUrl: database.url,
    prefix: keySpace.prefix,
    env,
    apiKey: key,
    async close() {
      await runtime.close();
      await keySpace.clear();
      await database.drop();
    },
  };
}

/** All HTTP functions on one in-process app, for `inject()` tests. */
export function buildApi(runtime: Runtime) {
  const app = createHttpApp(runtime.logger, { methodsFor: allowedMethods });
  registerAllFunctions(app, runtime);
  return app;
}

/** Every HTTP function on one in-process app plus an aggregator, on `runtime`; `close()` stops both. */
export async function startApiAndAggregator(
  runtime: Runtime,
): Promise<{ app: FastifyInstance; aggregator: RunningAggregator; close(): Promise<void> }> {
  const app = buildApi(runtime);
  await app.ready();
  const aggregator = await startAggregator(runtime);
  return {
    app,
    aggregator,
    async close() {
      await aggregator.stop();
      await app.close();
    },
  };
}

/** Sends `events` (one or an array) to ingest as `apiKey`, expecting 202. */
export async function postEvents(app: FastifyInstance, apiKey: string, events: unknown): Promise<void> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/events',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    payload: JSON.stringify(events),
  });
  expect(response.statusCode).toBe(202);
}

/** The tenant's usage answer as `apiKey` sees it, or undefined unless it is 200. */
export async function readUsage(app: FastifyInstance, apiKey: string, tenant: string): Promise<UsageResponse | undefined> {
  const response = await app.inject({
    method: 'GET',
    url: `/api/usage/${encodeURIComponent(tenant)}`,
    headers: { authorization: `Bearer ${apiKey}` },
  });
  return response.statusCode === 200 ? usageResponse.parse(parseExact(response.body)) : undefined;
}
