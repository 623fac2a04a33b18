import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from '../logger.ts';
import { installHttpMetrics } from '../telemetry/http.ts';
import { installErrorHandling } from './errors.ts';
import { stringifyExact } from './json.ts';

export const BODY_LIMIT_BYTES = 1024 * 1024;

/** A caller's X-Request-Id is kept only when it is short and made of characters safe in logs and bodies. */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const idPrefix = randomBytes(4).toString('hex');
let requestCount = 0;

/** The caller's X-Request-Id when it is safe, else a new one unique to this process. */
export function requestIdOf(request: IncomingMessage): string {
  const given = request.headers['x-request-id'];
  if (typeof given === 'string' && SAFE_REQUEST_ID.test(given)) return given;
  requestCount = (requestCount + 1) % Number.MAX_SAFE_INTEGER;
  return `${idPrefix}-${requestCount.toString(36)}`;
}

/** A Fastify instance with FlagMeter's error model, exact-bigint JSON and no per-request logging. */
export function createHttpApp(logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    requestIdHeader: false,
    genReqId: requestIdOf,
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
  return app;
}
