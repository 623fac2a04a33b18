import type { FastifyInstance } from 'fastify';
import type { Db } from '../../shared/platform/db.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { buildOpenApiDocument } from '../openapi.ts';
import type { EventQueue } from '../../shared/platform/queue/types.ts';
import type { HealthResponse } from './schema.ts';

export interface HealthDeps {
  db: Db;
  queue: EventQueue;
}

const CHECK_TIMEOUT_MS = 1_000;

async function timed(probe: () => Promise<unknown>): Promise<HealthResponse['checks']['postgres']> {
  const started = performance.now();
  try {
    await Promise.race([
      probe(),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS).unref()),
    ]);
    return { ok: true, latencyMs: Math.round((performance.now() - started) * 100) / 100 };
  } catch (error) {
    // The message says what failed without echoing connection strings.
    const message = (error as Error).message.replace(/\w+:\/\/\S+/g, '[url]');
    return { ok: false, latencyMs: Math.round(performance.now() - started), error: message };
  }
}

export function registerHealth(app: FastifyInstance, deps: HealthDeps): void {
  // The API description is open like health: it holds no data, and clients generate from it.
  const openApi = buildOpenApiDocument();
  app.get('/api/openapi.json', async () => openApi);

  app.get('/api/health', async (_request, reply): Promise<HealthResponse> => {
    const [postgres, valkey] = await Promise.all([timed(() => deps.db.query('SELECT 1')), timed(() => deps.queue.ping())]);
    const ok = postgres.ok && valkey.ok;
    reply.code(ok ? 200 : 503);
    return { status: ok ? 'ok' : 'degraded', checks: { postgres, valkey } };
  });
}

export function buildHealthApp(deps: HealthDeps & { logger: Logger }): FastifyInstance {
  const app = createHttpApp(deps.logger);
  registerHealth(app, deps);
  return app;
}
