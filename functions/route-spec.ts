/**
 * One description per endpoint. A function's routes.ts holds its `RouteSpec`s; `registerRoute` turns a
 * spec into the Fastify route, functions/routes.ts into the route table (and so the Traefik labels and
 * the local router), and functions/openapi.ts into the OpenAPI document. Modelled on openstatus's
 * `createRoute` (@hono/zod-openapi), without the per-request response validation.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify';
import type { z } from 'zod';
import type { Authenticator } from '../shared/domain/auth.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { parseRequest } from '../shared/platform/http/validate.ts';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
/** Who may call: anyone, an API key (or the admin token), or the admin token only. */
export type Auth = 'none' | 'key' | 'admin';
export type Tag = 'ingest' | 'usage' | 'health' | 'admin' | 'meta';

export interface ResponseSpec {
  description: string;
  /** A zod schema (named in the document's components), or a JSON Schema given inline. */
  schema?: z.ZodType | Record<string, unknown>;
  retryAfter?: boolean;
  /** The route also answers `text/csv` when the Accept header asks for it; what the CSV holds. */
  csv?: string;
}

export interface RouteSpec {
  method: Method;
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: Tag;
  auth: Auth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /**
   * false: the body schema documents what the handler accepts, but the handler checks the body itself
   * (ingest's fast per-event validator), so registration adds no validation of its own.
   */
  validateBody?: false;
  responses: Record<number, ResponseSpec>;
}

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request; `details` names each bad field (and, for event batches, its index)',
  401: 'Missing or wrong credentials',
  403: 'The key may not act for this tenant, or an API key was used on an admin route',
  404: 'Unknown tenant or resource',
  408: 'The request was not received in time (headers within 10 s, the whole request within 15 s); answered by the HTTP server',
  413: 'Body over 1 MiB',
  415: 'Body is not application/json',
  429: 'Too many refused credentials from this address; retry after `Retry-After`',
  431: 'Request line and headers over 16 KB; answered by the HTTP server',
  503: 'A dependency is unavailable: the queue (unreachable, or its backlog over the cap: nothing was accepted), the database, or the API keys not loaded yet after a start; retry after `Retry-After`',
};

/** The error answers of a route, each with the one error body every function writes. */
export function errorResponses(...statuses: number[]): Record<number, ResponseSpec> {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      { description: ERROR_DESCRIPTIONS[status]!, schema: errorBody, retryAfter: status === 503 || status === 429 },
    ]),
  );
}

/** Keeps the literal types of a spec, so `registerRoute` can type its parsed input. */
export const defineRoute = <const S extends RouteSpec>(spec: S): S => spec;

type Parsed<T> = T extends z.ZodType ? z.output<T> : undefined;

/** A request's parts, parsed with the spec's schemas (a 400 naming each bad field otherwise). */
export interface RouteInput<S extends RouteSpec> {
  params: Parsed<S['params']>;
  query: Parsed<S['query']>;
  /** Undefined when the handler checks the body itself (`validateBody: false`): it reads `request.body`. */
  body: S['validateBody'] extends false ? undefined : Parsed<S['body']>;
}

const NO_INPUT = Object.freeze({ params: undefined, query: undefined, body: undefined });

export type RouteHandler<S extends RouteSpec> = (input: RouteInput<S>, request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** What registration needs besides the spec: the authenticator for key/admin routes, extra route options. */
export interface RouteContext {
  auth?: Authenticator;
  options?: Pick<RouteShorthandOptions, 'errorHandler'>;
}

function authHook(spec: RouteSpec, auth: Authenticator | undefined): Pick<RouteShorthandOptions, 'onRequest'> {
  if (spec.auth === 'none') return {};
  if (!auth) throw new Error(`${spec.method} ${spec.path} needs an authenticator`);
  return { onRequest: spec.auth === 'admin' ? auth.requireAdmin : auth.requireKey };
}

/**
 * Registers the Fastify route a spec describes. Parts are parsed in the order path, query, body, after
 * authentication; a spec with nothing to parse hands every request the same empty input.
 */
export function registerRoute<S extends RouteSpec>(app: FastifyInstance, spec: S, context: RouteContext, handler: RouteHandler<S>): void {
  const { params, query } = spec;
  const body = spec.validateBody === false ? undefined : spec.body;
  const options = { ...context.options, ...authHook(spec, context.auth) };
  if (!params && !query && !body) {
    app.route({
      method: spec.method,
      url: spec.path,
      ...options,
      handler: (request, reply) => handler(NO_INPUT as RouteInput<S>, request, reply),
    });
    return;
  }
  const parse = (request: FastifyRequest): RouteInput<S> =>
    ({
      params: params ? parseRequest(params, request.params, 'path') : undefined,
      query: query ? parseRequest(query, request.query, 'query') : undefined,
      body: body ? parseRequest(body, request.body, 'body') : undefined,
    }) as RouteInput<S>;
  app.route({ method: spec.method, url: spec.path, ...options, handler: (request, reply) => handler(parse(request), request, reply) });
}
