import type { FastifyInstance } from 'fastify';
import type { Db } from '../../shared/platform/db.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { buildOpenApiDocument } from '../openapi.ts';
import type { EventQueue } from '../../shared/platform/queue/types.ts';
import { registerRoute } from '../route-spec.ts';
import { allowedMethods } from '../routes.ts';
import { getHealth, getOpenApiDocument } from './routes.ts';
import type { HealthResponse } from './schema.ts';

export interface HealthDeps {
  db: Db;
  queue: EventQueue;
}

const CHECK_TIMEOUT_MS = 1_000;

async function timed(probe: () => Promise<unknown>): Promise<{ ok: boolean; latencyMs: number; error?: string }> {
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
  // Built on its first request, not at start: ~10 ms of every health function start otherwise.
  let openApi: ReturnType<typeof buildOpenApiDocument> | undefined;
  registerRoute(app, getOpenApiDocument, {}, async () => (openApi ??= buildOpenApiDocument()));

  registerRoute(app, getHealth, {}, async (_input, _request, reply): Promise<HealthResponse> => {
    const [postgres, queue] = await Promise.all([timed(() => deps.db.query('SELECT 1')), timed(() => deps.queue.ping())]);
    const ok = postgres.ok && queue.ok;
    reply.code(ok ? 200 : 503);
    // Report what is in use: under npm start that may be PGlite and the in-process queue, not Valkey.
    const checks: HealthResponse['checks'] = {
      postgres: { ...postgres, kind: deps.db.kind },
      queue: { ...queue, kind: deps.queue.kind === 'valkey' ? 'valkey' : 'in-process' },
    };
    if (deps.queue.kind === 'valkey') checks.valkey = queue;
    return { status: ok ? 'ok' : 'degraded', checks };
  });
}

/**
 * The health function is also where Traefik sends API paths no function router takes (a method a
 * path does not take, HEAD and OPTIONS included, or no such path): a 405 naming the methods, or a
 * 404 — or a 503 to retry where the route exists but its function has no running instance (Traefik
 * drops a router whose service has no running task).
 */
export function buildHealthApp(deps: HealthDeps & { logger: Logger }): FastifyInstance {
  const app = createHttpApp(deps.logger, { methodsFor: allowedMethods });
  registerHealth(app, deps);
  return app;
}
