/**
 * The OpenAPI 3.1 reference, built from the zod schemas the functions validate with, so the document
 * cannot say something the code does not. `npm run openapi` writes it to docs/openapi.json.
 */
import { z } from 'zod';
import { healthResponse } from './health/schema.ts';
import { ingestBatch, ingestResponse } from './ingest/schema.ts';
import {
  alertListResponse,
  alertResponse,
  apiKeyView,
  createdKeyResponse,
  createKeyBody,
  keyIdParams,
  listTenantsQuery,
  putTenantBody,
  tenantListResponse,
  tenantParams,
  tenantResponse,
} from './tenants/schema.ts';
import { seriesQuery, seriesResponse, usageParams, usageResponse } from './usage/schema.ts';
import packageJson from '../package.json' with { type: 'json' };
import { usageEvent } from '../shared/domain/events.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import type { RouteSpec } from './routes.ts';

type JsonSchema = Record<string, unknown>;
type Auth = 'none' | 'key' | 'admin';

interface ResponseSpec {
  description: string;
  /** A component name, or a schema given inline. */
  schema?: string | JsonSchema;
  retryAfter?: boolean;
}

interface OperationSpec extends RouteSpec {
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  auth: Auth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: string;
  responses: Record<number, ResponseSpec>;
}

/** Request bodies are documented as clients write them (defaults optional). */
const requestSchemas = {
  UsageEvent: usageEvent,
  // The body forms the ingest function accepts, each holding events checked by the same usageEvent schema.
  IngestRequest: z.union([usageEvent, ingestBatch, z.strictObject({ events: ingestBatch })]),
  CreateKeyRequest: createKeyBody,
  PutTenantRequest: putTenantBody,
} satisfies Record<string, z.ZodType>;

/** Responses are documented as the server writes them. */
const responseSchemas = {
  Error: errorBody,
  IngestResponse: ingestResponse,
  UsageResponse: usageResponse,
  SeriesResponse: seriesResponse,
  HealthResponse: healthResponse,
  ApiKey: apiKeyView,
  ApiKeyList: z.object({ keys: z.array(apiKeyView) }),
  CreatedKey: createdKeyResponse,
  Tenant: tenantResponse,
  TenantList: tenantListResponse,
  Alert: alertResponse,
  AlertList: alertListResponse,
} satisfies Record<string, z.ZodType>;

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request; `details` names each bad field (and, for event batches, its index)',
  401: 'Missing or wrong credentials',
  403: 'The key may not act for this tenant, or an API key was used on an admin route',
  404: 'Unknown tenant or resource',
  413: 'Body over 1 MiB',
  415: 'Body is not application/json',
  503: 'Queue unreachable or its backlog over the cap; nothing was accepted, retry after `Retry-After`',
};

const errors = (...statuses: number[]): Record<number, ResponseSpec> =>
  Object.fromEntries(statuses.map((status) => [status, { description: ERROR_DESCRIPTIONS[status]!, schema: 'Error', retryAfter: status === 503 }]));

const OPERATIONS: OperationSpec[] = [
  {
    method: 'POST',
    path: '/api/events',
    operationId: 'ingestEvents',
    summary: 'Record usage events',
    description:
      'One event, an array of up to 1,000 events, or `{"events": [...]}`. All-or-nothing: one invalid event rejects the batch and nothing is enqueued. ' +
      'An event with an `id` is counted once per `(tenant, id)` within the dedupe window, so resending after a timeout is safe. 202 means the events are durable in the queue.',
    tag: 'ingest',
    auth: 'key',
    body: 'IngestRequest',
    responses: { 202: { description: 'Accepted (duplicates of an earlier `(tenant, id)` are acknowledged, not counted again)', schema: 'IngestResponse' }, ...errors(400, 401, 403, 413, 415, 503) },
  },
  {
    method: 'GET',
    path: '/api/usage/:tenant',
    operationId: 'getUsage',
    summary: "A tenant's usage in its current quota period",
    tag: 'usage',
    auth: 'key',
    params: usageParams,
    responses: { 200: { description: 'Usage against the quota, per feature', schema: 'UsageResponse' }, ...errors(400, 401, 403, 404) },
  },
  {
    method: 'GET',
    path: '/api/usage/:tenant/series',
    operationId: 'getUsageSeries',
    summary: 'Usage over time, empty buckets filled with 0',
    description: '`from` defaults to the start of the current period and `to` to now; the range may span at most 400 days.',
    tag: 'usage',
    auth: 'key',
    params: usageParams,
    query: seriesQuery,
    responses: { 200: { description: 'One point per hour or day', schema: 'SeriesResponse' }, ...errors(400, 401, 403, 404) },
  },
  {
    method: 'GET',
    path: '/api/health',
    operationId: 'getHealth',
    summary: 'Liveness of PostgreSQL and the queue',
    tag: 'health',
    auth: 'none',
    responses: {
      200: { description: 'Everything answers', schema: 'HealthResponse' },
      503: { description: 'Degraded: the failing check says why', schema: 'HealthResponse' },
    },
  },
  {
    method: 'POST',
    path: '/api/keys',
    operationId: 'createApiKey',
    summary: 'Create an API key, optionally scoped to one tenant',
    tag: 'admin',
    auth: 'admin',
    body: 'CreateKeyRequest',
    responses: { 201: { description: 'The key; its secret is shown only here', schema: 'CreatedKey' }, ...errors(400, 401, 403, 415) },
  },
  {
    method: 'GET',
    path: '/api/keys',
    operationId: 'listApiKeys',
    summary: 'List API keys (never their secrets)',
    tag: 'admin',
    auth: 'admin',
    responses: { 200: { description: 'Newest first', schema: 'ApiKeyList' }, ...errors(401, 403) },
  },
  {
    method: 'DELETE',
    path: '/api/keys/:id',
    operationId: 'revokeApiKey',
    summary: 'Revoke an API key; every instance refuses it within 5 s',
    tag: 'admin',
    auth: 'admin',
    params: keyIdParams,
    responses: { 200: { description: 'The revoked key', schema: 'ApiKey' }, ...errors(400, 401, 403, 404) },
  },
  {
    method: 'GET',
    path: '/api/tenants',
    operationId: 'listTenants',
    summary: 'List tenants with their current usage',
    tag: 'admin',
    auth: 'admin',
    query: listTenantsQuery,
    responses: { 200: { description: 'One page of tenants and the total', schema: 'TenantList' }, ...errors(400, 401, 403) },
  },
  {
    method: 'GET',
    path: '/api/tenants/:tenant',
    operationId: 'getTenant',
    summary: "A tenant's settings and current usage",
    tag: 'admin',
    auth: 'admin',
    params: tenantParams,
    responses: { 200: { description: 'The tenant', schema: 'Tenant' }, ...errors(400, 401, 403, 404) },
  },
  {
    method: 'PUT',
    path: '/api/tenants/:tenant',
    operationId: 'putTenant',
    summary: 'Create or update a tenant; fields left out keep their value (their default on create)',
    description: 'A quota change that takes usage back under a threshold re-arms its alert; one that puts usage over a threshold fires it at once.',
    tag: 'admin',
    auth: 'admin',
    params: tenantParams,
    body: 'PutTenantRequest',
    responses: {
      200: { description: 'Updated', schema: 'Tenant' },
      201: { description: 'Created', schema: 'Tenant' },
      ...errors(400, 401, 403, 415),
    },
  },
  {
    method: 'GET',
    path: '/api/tenants/:tenant/alerts',
    operationId: 'listTenantAlerts',
    summary: "A tenant's alert history and delivery state",
    tag: 'admin',
    auth: 'admin',
    params: tenantParams,
    responses: { 200: { description: 'Newest first', schema: 'AlertList' }, ...errors(400, 401, 403, 404) },
  },
  {
    method: 'GET',
    path: '/api/openapi.json',
    operationId: 'getOpenApiDocument',
    summary: 'This document',
    tag: 'meta',
    auth: 'none',
    responses: { 200: { description: 'The OpenAPI 3.1 document', schema: { type: 'object' } } },
  },
];

/** Server-side metadata and the `$id`/`$schema` zod writes per schema have no place inside a document. */
function cleaned(schema: JsonSchema): JsonSchema {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
}

function toJsonSchemas(schemas: Record<string, z.ZodType>, io: 'input' | 'output'): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(schemas)) registry.add(schema, { id });
  const converted = z.toJSONSchema(registry, {
    target: 'draft-2020-12',
    io,
    uri: (id) => `#/components/schemas/${id}`,
    // 64-bit sums are bigints in the code and exact JSON numbers on the wire.
    unrepresentable: 'any',
    override: (context) => {
      if (context.zodSchema._zod.def.type === 'bigint') Object.assign(context.jsonSchema, { type: 'integer', format: 'int64' });
    },
  });
  return Object.fromEntries(Object.entries(converted.schemas).map(([id, schema]) => [id, cleaned(schema as JsonSchema)]));
}

function fieldSchema(field: z.ZodType): JsonSchema {
  return cleaned(z.toJSONSchema(field, { target: 'draft-2020-12', io: 'input' }) as JsonSchema);
}

function parametersOf(operation: OperationSpec): JsonSchema[] {
  const parameters: JsonSchema[] = [];
  for (const [location, shape] of [['path', operation.params], ['query', operation.query]] as const) {
    if (!shape) continue;
    for (const [name, field] of Object.entries(shape.shape as Record<string, z.ZodType>)) {
      const { description, ...schema } = fieldSchema(field);
      parameters.push({
        name,
        in: location,
        // Whatever parses without a value (optional, or with a default) may be left out.
        required: location === 'path' || !field.safeParse(undefined).success,
        ...(description === undefined ? {} : { description }),
        schema,
      });
    }
  }
  return parameters;
}

const schemaRef = (schema: string | JsonSchema): JsonSchema => (typeof schema === 'string' ? { $ref: `#/components/schemas/${schema}` } : schema);

function responseOf(response: ResponseSpec): JsonSchema {
  return {
    description: response.description,
    ...(response.retryAfter
      ? { headers: { 'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer', minimum: 0 } } } }
      : {}),
    ...(response.schema === undefined ? {} : { content: { 'application/json': { schema: schemaRef(response.schema) } } }),
  };
}

const SECURITY: Record<Auth, JsonSchema[]> = { none: [], key: [{ apiKey: [] }], admin: [{ adminToken: [] }] };

function operationOf(operation: OperationSpec): JsonSchema {
  const parameters = parametersOf(operation);
  return {
    operationId: operation.operationId,
    summary: operation.summary,
    ...(operation.description ? { description: operation.description } : {}),
    tags: [operation.tag],
    security: SECURITY[operation.auth],
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(operation.body
      ? { requestBody: { required: true, content: { 'application/json': { schema: schemaRef(operation.body) } } } }
      : {}),
    responses: Object.fromEntries(Object.entries(operation.responses).map(([status, response]) => [status, responseOf(response)])),
  };
}

/** `/api/usage/:tenant` → `/api/usage/{tenant}`. */
export const openApiPath = (path: string): string => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

export function buildOpenApiDocument(): object {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const operation of OPERATIONS) {
    const path = openApiPath(operation.path);
    paths[path] = { ...paths[path], [operation.method.toLowerCase()]: operationOf(operation) };
  }
  return {
    openapi: '3.1.1',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'FlagMeter API',
      version: packageJson.version,
      summary: 'Exactly-once AI usage metering',
      description:
        'Errors are `{"error": {"code", "message", "requestId", "details"?}}`. Token sums are 64-bit integers written exactly as JSON numbers: ' +
        'read them with a parser that keeps integers past 2^53 (the `flagmeter/client` package does).',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: 'http://127.0.0.1:3000', description: '`npm start`' }],
    tags: [
      { name: 'ingest', description: 'Usage events in' },
      { name: 'usage', description: 'Usage out, for enforcement and charts' },
      { name: 'health', description: 'For load balancers and probes' },
      { name: 'admin', description: 'Tenants, quotas, alerts and API keys (admin token only)' },
      { name: 'meta', description: 'This reference' },
    ],
    paths,
    components: {
      schemas: { ...toJsonSchemas(requestSchemas, 'input'), ...toJsonSchemas(responseSchemas, 'output') },
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: 'An API key from `POST /api/keys` (possibly scoped to one tenant), or the admin token' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'The admin token (`ADMIN_TOKEN`); API keys are refused with 403' },
      },
    },
  };
}
