import type { FastifyInstance } from 'fastify';
import type { Runtime } from './runtime.ts';

/** The container path: listen directly (no Lambda adapter) and drain in-flight requests on SIGTERM. */
export async function serve(app: FastifyInstance, runtime: Runtime): Promise<void> {
  const { PORT, HOST } = runtime.config;
  await app.listen({ port: PORT, host: HOST });
  runtime.logger.info({ port: PORT, host: HOST }, 'listening');
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    runtime.logger.info({ signal }, 'draining');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    app
      .close()
      .then(() => runtime.close())
      .then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
