import type { FastifyInstance } from 'fastify';
import type { QueuelessRuntime } from './runtime.ts';
import { stopOnSignal } from './shutdown.ts';

/** The container path: listen directly (no Lambda adapter) and drain in-flight requests on SIGTERM. */
export async function serve(app: FastifyInstance, runtime: QueuelessRuntime): Promise<void> {
  const { PORT, HOST } = runtime.config;
  await app.listen({ port: PORT, host: HOST });
  runtime.logger.info({ port: PORT, host: HOST }, 'listening');
  stopOnSignal(runtime.logger, 'draining', [() => app.close(), () => runtime.close()]);
}
