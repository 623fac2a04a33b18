/**
 * The OpenAPI 3.1 reference, built from the zod schemas the functions validate with, so the document
 * cannot say something the code does not. `npm run openapi` writes it to docs/openapi.json.
 */
import { z } from 'zod';
import packageJson from '../package.json' with { type: 'json' };
import { usageEvent } from '../shared/domain/events.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { healthResponse } from './health/schema.ts';
import { ingestRequest, ingestResponse } from './ingest/schema.ts';
import { type Auth, errorResponses, type ResponseSpec, type RouteSpec, type Tag } from './route-spec.ts';
import { ALL_ROUTES } from './routes.ts';
import {
  alertListResponse,
  alertResponse,
  apiKeyListResponse,
  apiKeyView,
  createdKeyResponse,
  createKeyBody,
  putTenantBody,
  tenantListResponse,
  tenantResponse,
} from './tenants/schema.ts';
import { seriesResponse, usageResponse } from './usage/schema.ts';

type JsonSchema = Record<string, unknown>;

/**
 * The names the document gives the schemas the route specs use (and those nested in them, which the
 * document then refers to by name). A route whose body or response schema is not named here fails the
 * build of the document, so nothing is left out silently.
 * Request bodies are documented as clients write them (defaults optional).
 */
const requestSchemas = {
  UsageEvent: usageEvent,
  IngestRequest: ingestRequest,
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
  ApiKeyList: apiKeyListResponse,
  CreatedKey: createdKeyResponse,
  Tenant: tenantResponse,
  TenantList: tenantListResponse,
  Alert: alertResponse,
  AlertList: alertListResponse,
} satisfies Record<string, z.ZodType>;

const TAGS: { name: Tag; description: string }[] = [
  { name: 'ingest', description: 'Usage events in' },
  { name: 'usage', description: 'Usage out, for enforcement and charts' },
  { name: 'health', description: 'For load balancers and probes' },
  { name: 'admin', description: 'Tenants, quotas, alerts and API keys (admin token only)' },
  { name: 'meta', description: 'This reference' },
];

function componentName(names: Record<string, z.ZodType>, schema: z.ZodType, route: RouteSpec): string {
  const name = Object.entries(names).find(([, named]) => named === schema)?.[0];
  if (!name) throw new Error(`${route.method} ${route.path}: name its schema in functions/openapi.ts so the document can refer to it`);
  return name;
}

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

function parametersOf(operation: RouteSpec): JsonSchema[] {
  const parameters: JsonSchema[] = [];
  for (const [location, shape] of [
    ['path', operation.params],
    ['query', operation.query],
  ] as const) {
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

const schemaRef = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });

function responseOf(response: ResponseSpec, route: RouteSpec): JsonSchema {
  const { schema } = response;
  return {
    description: response.description,
    ...(response.retryAfter
      ? { headers: { 'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer', minimum: 0 } } } }
      : {}),
    ...(schema === undefined
      ? {}
      : {
          content: {
            'application/json': { schema: schema instanceof z.ZodType ? schemaRef(componentName(responseSchemas, schema, route)) : schema },
            ...(response.csv ? { 'text/csv': { schema: { type: 'string', description: response.csv } } } : {}),
          },
        }),
  };
}

/**
 * What the HTTP layer may answer on any operation before the route runs: a body is parsed (413, 415)
 * on every method but GET; an authenticated route throttles admin token guesses (429) and needs its
 * API keys loaded and, past them, the database (503).
 */
const httpLayer = (operation: RouteSpec): Record<number, ResponseSpec> => ({
  ...errorResponses(408, 431),
  ...(operation.body || operation.method !== 'GET' ? errorResponses(413, 415) : {}),
  ...(operation.auth !== 'none' ? errorResponses(429, 503) : {}),
});

const SECURITY: Record<Auth, JsonSchema[]> = { none: [], key: [{ apiKey: [] }], admin: [{ adminToken: [] }] };

function operationOf(operation: RouteSpec): JsonSchema {
  const parameters = parametersOf(operation);
  return {
    operationId: operation.operationId,
    summary: operation.summary,
    ...(operation.description ? { description: operation.description } : {}),
    tags: [operation.tag],
    security: SECURITY[operation.auth],
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(operation.body
      ? {
          requestBody: {
            required: true,
            content: { 'application/json': { schema: schemaRef(componentName(requestSchemas, operation.body, operation)) } },
          },
        }
      : {}),
    responses: Object.fromEntries(
      Object.entries({ ...httpLayer(operation), ...operation.responses }).map(([status, response]) => [
        status,
        responseOf(response, operation),
      ]),
    ),
  };
}

/** `/api/usage/:tenant` → `/api/usage/{tenant}`. */
export const openApiPath = (path: string): string => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

export function buildOpenApiDocument(): object {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  // Grouped by tag, in the order the tags are listed; the route table's order within a tag.
  const byTag = (route: RouteSpec): number => TAGS.findIndex((tag) => tag.name === route.tag);
  for (const operation of [...ALL_ROUTES].sort((a, b) => byTag(a) - byTag(b))) {
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
        'read them with a parser that keeps integers past 2^53 (the `@flagmeter/client` package does).',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: 'http://127.0.0.1:3000', description: '`npm start`' }],
    tags: TAGS,
    paths,
    components: {
      schemas: { ...toJsonSchemas(requestSchemas, 'input'), ...toJsonSchemas(responseSchemas, 'output') },
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'An API key from `POST /api/keys` (possibly scoped to one tenant), or the admin token',
        },
        adminToken: { type: 'http', scheme: 'bearer', description: 'The admin token (`ADMIN_TOKEN`); API keys are refused with 403' },
      },
    },
  };
}
