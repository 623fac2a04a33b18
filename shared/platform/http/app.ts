import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Bindings, ChildLoggerOptions, LevelWithSilentOrString, LogFn } from 'pino';
import type { Logger } from '../logger.ts';
import { installHttpMetrics } from '../telemetry/http.ts';
import { ApiError, apiErrorOf, type ErrorCode, installErrorHandling, sendError } from './errors.ts';
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

const LOG_METHODS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * A request's logger (`request.log`, carrying its request id), made only when the request logs.
 * Fastify asks for one per request; pino's child() serialises and redacts the bindings each time,
 * about 2 µs a request that almost never logs (docs/benchmarks.md). The child is made on the first
 * line written and used for every later one, so what is logged is exactly what the child writes.
 */
class RequestLogger implements FastifyBaseLogger {
  private made: Logger | undefined;
  // Defined once on the prototype (below): a request that does not log allocates only this object.
  declare fatal: LogFn;
  declare error: LogFn;
  declare warn: LogFn;
  declare info: LogFn;
  declare debug: LogFn;
  declare trace: LogFn;
  declare silent: LogFn;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  /** The child logger, made now if it was not yet. */
  get log(): Logger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }

  get level(): LevelWithSilentOrString {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: LevelWithSilentOrString) {
    this.log.level = level;
  }

  /** Answered without making the child while it would inherit its parent's level. */
  isLevelEnabled(level: string): boolean {
    return this.made === undefined && this.options.level === undefined ? this.parent.isLevelEnabled(level) : this.log.isLevelEnabled(level);
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.log.child(bindings, options);
  }
}
for (const method of LOG_METHODS) {
  RequestLogger.prototype[method] = function (this: RequestLogger, ...args: unknown[]) {
    (this.log[method] as (...line: unknown[]) => void)(...args);
  } as LogFn;
}

/**
 * Answers what the HTTP parser refuses before any route sees it (headers over 16 KB, a request not
 * received in time, malformed HTTP) in the same error shape as every other answer, with a status the
 * OpenAPI document lists for every operation.
 */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) return void socket.destroy();
  const [status, code, message]: [number, ErrorCode, string] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'request line and headers must fit in 16 KB']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout', 'the request was not received in time']
        : [400, 'invalid_request', 'malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message } });
  const reason = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[status];
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/**
 * Routes validate their input with zod (functions/route-spec.ts) and answers go through the reply
 * serializer, so Fastify's JSON-schema compilers are never needed; given these, Fastify does not load
 * ajv and fast-json-stringify at every start (~10 ms). A route given a Fastify `schema` fails at
 * ready, naming the rule, rather than going unvalidated.
 */
const noRouteSchemas = () => () => {
  throw new Error(
    'Fastify route schemas are not used here: declare the route with defineRoute (functions/route-spec.ts), validated by zod',
  );
};

/** A Fastify instance with FlagMeter's error model, exact-bigint JSON and no per-request logging. */
export interface HttpAppOptions {
  /** The methods a path takes on any function, for a 405 with `Allow` instead of a 404. */
  methodsFor?: (path: string) => readonly string[];
}

export function createHttpApp(logger: Logger, options: HttpAppOptions = {}): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    requestIdHeader: false,
    genReqId: requestIdOf,
    childLoggerFactory: (logger, bindings, options) => new RequestLogger(logger as Logger, bindings, options),
    return503OnClosing: true,
    // Slow clients (slowloris) must not hold connections: headers within 10 s, the whole request
    // within 15 s, checked every second (Node's default check runs only every 30 s).
    serverFactory: (handler) =>
      createServer(
        { headersTimeout: 10_000, requestTimeout: 15_000, connectionsCheckingInterval: 1_000, keepAliveTimeout: 5_000 },
        handler,
      ),
    connectionTimeout: 60_000,
    clientErrorHandler: answerClientError,
    // Path parameters are bounded by the 16 KB header limit and then by each route's schema, so a
    // long one is a 400 naming the field rather than the router's own 414.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 16_384 },
    schemaController: { compilersFactory: { buildValidator: noRouteSchemas, buildSerializer: noRouteSchemas } },
    // What the router refuses before any route or error handler runs (a path that is not valid
    // percent-encoding) answers in the same error shape as everything else, not Fastify's own.
    frameworkErrors: (error, request, reply) =>
      sendError(
        reply,
        request,
        error.code === 'FST_ERR_BAD_URL'
          ? new ApiError('invalid_request', 'the URL path is not valid percent-encoding', [
              { field: '(path)', message: 'has a % not followed by two hex digits of valid UTF-8' },
            ])
          : apiErrorOf(error, request),
      ),
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
  installErrorHandling(app, options.methodsFor);
  installHttpMetrics(app);
  // The container health check of every HTTP function (stacks/app.yml): answered by the function
  // itself, so a task that serves it with anything but a 2xx is replaced or rolled back. Not in the
  // route table: Traefik never routes it, it is asked on the container's own port.
  app.get('/healthz', async () => ({ status: 'ok' }));
  return app;
}
