import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';

export const errorCode = z.enum([
  'malformed_json',
  'invalid_request',
  'invalid_event',
  'unauthorized',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'request_timeout',
  'payload_too_large',
  'unsupported_media_type',
  'too_many_requests',
  'headers_too_large',
  'queue_unavailable',
  'queue_full',
  'service_unavailable',
  'internal_error',
]);
export type ErrorCode = z.infer<typeof errorCode>;

const codeToStatus: Record<ErrorCode, number> = {
  malformed_json: 400,
  invalid_request: 400,
  invalid_event: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  payload_too_large: 413,
  unsupported_media_type: 415,
  too_many_requests: 429,
  headers_too_large: 431,
  queue_unavailable: 503,
  queue_full: 503,
  service_unavailable: 503,
  internal_error: 500,
};

export interface ErrorDetail {
  index?: number;
  field: string;
  message: string;
}

export const errorBody = z.object({
  error: z.object({
    code: errorCode,
    message: z.string(),
    requestId: z.string().optional(),
    details: z.array(z.object({ index: z.number().optional(), field: z.string(), message: z.string() })).optional(),
  }),
});
export type ErrorBody = z.infer<typeof errorBody>;

/** The one error type handlers throw; its code decides the status. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.status = codeToStatus[code];
  }
}

/** Converts zod issues into details that name the field (and the batch index when there is one). */
export function zodDetails(error: z.ZodError, indexed = false): ErrorDetail[] {
  return error.issues.map((issue) => {
    const path = [...issue.path];
    const index = indexed && typeof path[0] === 'number' ? (path.shift() as number) : undefined;
    const field = path.length > 0 ? path.join('.') : issue.code === 'unrecognized_keys' ? issue.keys.join(',') : '(body)';
    const message = issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
    return index === undefined ? { field, message } : { index, field, message };
  });
}

/** postgres.js and socket errors that mean the database is away, not that the request was wrong. */
const DATABASE_UNAVAILABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'DATABASE_TIMEOUT',
  '57014',
  '57P01',
  '57P03',
]);

function fromFramework(error: FastifyError): ApiError | undefined {
  if (DATABASE_UNAVAILABLE.has(String(error.code))) {
    return new ApiError('service_unavailable', 'the database is unreachable; retry shortly', undefined, 2);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError('malformed_json', 'the request body is not valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('payload_too_large', 'the request body is over 1 MiB');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError('unsupported_media_type', 'the request body must be application/json');
    default:
      break;
  }
  // Prototype-pollution keys (__proto__, constructor.prototype) are refused by the parser.
  if (/prototype/.test(error.message))
    return new ApiError('malformed_json', 'the request body contains a forbidden key (__proto__ or constructor)');
  if (error instanceof SyntaxError) return new ApiError('malformed_json', 'the request body is not valid JSON');
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) return new ApiError('invalid_request', error.message);
  return undefined;
}

export function sendError(reply: FastifyReply, request: FastifyRequest, error: ApiError): FastifyReply {
  if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds));
  const body: ErrorBody = {
    error: {
      code: error.code,
      message: error.message,
      requestId: String(request.id),
      ...(error.details ? { details: error.details } : {}),
    },
  };
  return reply.code(error.status).type('application/json; charset=utf-8').send(body);
}

/** The error a client gets: ours as they are, framework/client errors as 4xx, anything else logged and a bare 500. */
export function apiErrorOf(error: Error, request: FastifyRequest): ApiError {
  const apiError = error instanceof ApiError ? error : fromFramework(error as FastifyError);
  if (apiError) return apiError;
  request.log.error({ err: error, route: request.routeOptions.url }, 'unhandled error');
  return new ApiError('internal_error', 'internal error');
}

/**
 * One error handler for every route (ingest's own adds a count, then answers the same). A request
 * no route takes is a 404, or a 405 with `Allow` where `methodsFor` knows the path under other methods.
 */
export function installErrorHandling(app: FastifyInstance, methodsFor?: (path: string) => readonly string[]): void {
  app.setErrorHandler((error: FastifyError, request, reply) => sendError(reply, request, apiErrorOf(error, request)));
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]!;
    const allowed = methodsFor?.(path) ?? [];
    if (allowed.length === 0) return sendError(reply, request, new ApiError('not_found', `no route ${request.method} ${path}`));
    // A route of another function, which the proxy sent here: none of its instances is running.
    if (allowed.includes(request.method)) {
      return sendError(
        reply,
        request,
        new ApiError('service_unavailable', `no instance serving ${request.method} ${path} is running; retry shortly`, undefined, 1),
      );
    }
    reply.header('allow', allowed.join(', '));
    return sendError(
      reply,
      request,
      new ApiError('method_not_allowed', `${request.method} is not allowed on ${path}; it takes ${allowed.join(', ')}`),
    );
  });
}
