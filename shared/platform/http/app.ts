import { createServer } from 'node:http';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from '../logger.ts';
import { installHttpMetrics } from '../telemetry/http.ts';
import { installErrorHandling } from './errors.ts';
import { stringifyExact } from './json.ts';

export const BODY_LIMIT_BYTES = 1024 * 1024;

/** A Fastify instance with FlagMeter's error model, exact-bigint JSON and no per-request logging. */
export function createHttpApp(logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    requestIdHeader: 'x-request-id',
    return503OnClosing: true,
    // Slow clients (slowloris) must not hold connections: headers within 10 s, the whole request
    // within 15 s, checked every second (Node's default check runs only every 30 s).
    serverFactory: (handler) =>
      createServer({ headersTimeout: 10_000, requestTimeout: 15_000, connectionsCheckingInterval: 1_000, keepAliveTimeout: 5_000 }, handler),
    connectionTimeout: 60_000,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 512 },
  }) as unknown as FastifyInstance;
  app.setReplySerializer((payload) => stringifyExact(payload));
  // Only JSON is accepted; anything else (text/plain included) is 415.
  app.removeContentTypeParser('text/plain');
  // An empty body with a JSON content type (curl -X DELETE -H 'Content-Type: application/json') is
  // no body, not malformed JSON; prototype-pollution keys stay refused.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined);
    return parseJson(request, body as string, done);
  });
  installErrorHandling(app);
  installHttpMetrics(app);
  // The container health check of every HTTP function (stacks/app.yml): answered by the function
  // itself, so a task that serves it with anything but a 2xx is replaced or rolled back. Not in the
  // route table: Traefik never routes it, it is asked on the container's own port.
  app.get('/healthz', async () => ({ status: 'ok' }));
  return app;
}
