import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { QueuelessRuntime } from './runtime.ts';
import { stopOnSignal } from './shutdown.ts';

/**
 * The container path: listen directly (no Lambda adapter); on SIGTERM serve on for SHUTDOWN_DELAY
 * (until the proxy stops routing here), then drain in-flight requests.
 */
export async function serve(app: FastifyInstance, runtime: QueuelessRuntime): Promise<void> {
  const { PORT, HOST } = runtime.config;
  await app.listen({ port: PORT, host: HOST });
  runtime.logger.info({ port: PORT, host: HOST }, 'listening');
  stopOnSignal(runtime.logger, 'draining', [() => sleep(runtime.config.SHUTDOWN_DELAY), () => app.close(), () => runtime.close()]);
}
