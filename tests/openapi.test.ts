import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { registerAllFunctions } from '../functions/api.ts';
import { registerHealth } from '../functions/health/app.ts';
import { registerIngest } from '../functions/ingest/app.ts';
import { registerTenants } from '../functions/tenants/app.ts';
import { registerUsage } from '../functions/usage/app.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { createHttpApp } from '../shared/platform/http/app.ts';
import { buildOpenApiDocument, openApiPath } from '../functions/openapi.ts';
import { FUNCTION_ROUTES, type HttpFunction } from '../functions/routes.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';

type Json = Record<string, any>;

const document = buildOpenApiDocument() as Json;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const JSON_SCHEMA_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null']);

const operations = (): { key: string; path: string; method: string; operation: Json }[] =>
  Object.entries(document.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, operation]) => ({ key: `${method.toUpperCase()} ${path}`, path, method, operation: operation as Json })),
  );

/** Every value in the document with where it sits, for the checks that apply everywhere. */
function* walk(node: unknown, at: string): Generator<[string, Json]> {
  if (node === null || typeof node !== 'object') return;
  if (!Array.isArray(node)) yield [at, node as Json];
  for (const [key, child] of Object.entries(node)) yield* walk(child, `${at}/${key}`);
}

function resolve(ref: string): unknown {
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((node, part) => (node as Json | undefined)?.[part.replaceAll('~1', '/').replaceAll('~0', '~')], document);
}

/** The JSON Schema rules a 2020-12 validator would refuse a schema for, checked on every schema. */
function schemaProblems(schema: Json, at: string): string[] {
  const problems: string[] = [];
  const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  for (const type of types) if (!JSON_SCHEMA_TYPES.has(type)) problems.push(`${at}: unknown type ${type}`);
  if (schema.required !== undefined) {
    if (!Array.isArray(schema.required) || schema.required.some((name: unknown) => typeof name !== 'string'))
      problems.push(`${at}: required must list names`);
    else if (schema.properties)
      for (const name of schema.required) if (!(name in schema.properties)) problems.push(`${at}: required ${name} has no property`);
  }
  if (schema.pattern !== undefined) {
    try {
      new RegExp(schema.pattern, 'u');
    } catch {
      problems.push(`${at}: pattern is not an ECMA-262 regular expression`);
    }
  }
  if (schema.enum !== undefined && (!Array.isArray(schema.enum) || schema.enum.length === 0))
    problems.push(`${at}: enum must be a non-empty array`);
  for (const keyword of ['anyOf', 'oneOf', 'allOf']) {
    if (schema[keyword] !== undefined && (!Array.isArray(schema[keyword]) || schema[keyword].length === 0))
      problems.push(`${at}: ${keyword} must be a non-empty array`);
  }
  for (const keyword of ['minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems']) {
    if (schema[keyword] !== undefined && typeof schema[keyword] !== 'number') problems.push(`${at}: ${keyword} must be a number`);
  }
  return problems;
}

describe('OpenAPI document', () => {
  it('has the OpenAPI 3.1 structure: version, info, paths, unique operation ids, declared tags and security', () => {
    expect(document.openapi).toMatch(/^3\.1\.\d+$/);
    expect(document.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    const tags = new Set((document.tags as Json[]).map((tag) => tag.name));
    const ids = operations().map(({ operation }) => operation.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { key, path, operation } of operations()) {
      expect(path, key).toMatch(/^\/[^:]*$/);
      expect(operation.operationId, key).toMatch(/^[A-Za-z][A-Za-z0-9_]*$/);
      for (const tag of operation.tags) expect(tags.has(tag), `${key} tag ${tag}`).toBe(true);
      for (const requirement of operation.security) {
        for (const scheme of Object.keys(requirement))
          expect(document.components.securitySchemes[scheme], `${key} security ${scheme}`).toBeDefined();
      }
      const responses = Object.entries(operation.responses as Json);
      expect(responses.length, key).toBeGreaterThan(0);
      for (const [status, response] of responses) {
        expect(status, key).toMatch(/^[1-5]\d\d$/);
        expect(response.description, `${key} ${status}`).toEqual(expect.any(String));
      }
    }
  });

  it('declares every path template parameter as a required path parameter, and no other', () => {
    for (const { key, path, operation } of operations()) {
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]);
      const declared = ((operation.parameters ?? []) as Json[]).filter((parameter) => parameter.in === 'path');
      expect(declared.map((parameter) => parameter.name).sort(), key).toEqual(templated.sort());
      for (const parameter of declared) expect(parameter.required, `${key} ${parameter.name}`).toBe(true);
      for (const parameter of (operation.parameters ?? []) as Json[]) {
        expect(['path', 'query', 'header', 'cookie'], key).toContain(parameter.in);
        expect(parameter.schema, `${key} ${parameter.name}`).toBeDefined();
      }
    }
  });

  it('resolves every $ref inside the document and holds only well-formed JSON Schema 2020-12 schemas', () => {
    const problems: string[] = [];
    for (const [at, node] of walk(document, '#')) {
      if (typeof node.$ref === 'string') {
        if (!node.$ref.startsWith('#/')) problems.push(`${at}: external $ref ${node.$ref}`);
        else if (resolve(node.$ref) === undefined) problems.push(`${at}: ${node.$ref} does not resolve`);
      }
      if (/\/(schema|schemas\/[^/]+|items|properties\/[^/]+|anyOf\/\d+)$/.test(at)) problems.push(...schemaProblems(node, at));
    }
    expect(problems).toEqual([]);
  });

  it('documents every route in the route table with its request and response schemas, and nothing unrouted', () => {
    const routed = Object.values(FUNCTION_ROUTES)
      .flat()
      .map((route) => `${route.method} ${openApiPath(route.path)}`);
    const documented = new Map(operations().map((entry) => [entry.key, entry.operation]));
    for (const route of routed) {
      const operation = documented.get(route);
      expect(operation, `${route} is not documented`).toBeDefined();
      const success = Object.entries(operation!.responses as Json).filter(([status]) => status.startsWith('2'));
      expect(success.length, route).toBeGreaterThan(0);
      for (const [status, response] of success) expect(response.content?.['application/json']?.schema, `${route} ${status}`).toBeDefined();
      if (route.startsWith('POST') || route.startsWith('PUT'))
        expect(operation!.requestBody?.content?.['application/json']?.schema, route).toBeDefined();
      for (const [status, response] of Object.entries(operation!.responses as Json).filter(([code]) => code.startsWith('4'))) {
        expect(response.content['application/json'].schema, `${route} ${status}`).toEqual({ $ref: '#/components/schemas/Error' });
      }
    }
    expect([...documented.keys()].filter((key) => !routed.includes(key))).toEqual([]);
  });

  it('documents what the auth and HTTP layers answer before a route runs: 429 and 503 where a credential is checked, 413 and 415 where a body is parsed', () => {
    for (const { key, method, operation } of operations()) {
      const statuses = Object.keys(operation.responses as Json);
      const authenticated = (operation.security as unknown[]).length > 0;
      // Admin token guesses are throttled on key routes too; keys not loaded yet, or no database, is 503.
      if (authenticated) expect(statuses, key).toEqual(expect.arrayContaining(['429', '503']));
      // Fastify parses a body on every method but GET (a DELETE with a text/plain or 2 MB body).
      if (method !== 'get') expect(statuses, key).toEqual(expect.arrayContaining(['413', '415']));
      expect(statuses, key).toEqual(expect.arrayContaining(['408', '431']));
    }
  });

  it('writes 64-bit sums as int64 integers and event fields with the limits the ingest function enforces', () => {
    const { schemas } = document.components;
    expect(schemas.UsageResponse.properties.tokens).toMatchObject({ type: 'integer', format: 'int64' });
    expect(schemas.UsageEvent.properties.tokens).toMatchObject({ type: 'integer', minimum: 1, maximum: 1e12 });
    expect(schemas.UsageEvent.required).toEqual(['tenant', 'feature', 'tokens']);
    expect(schemas.IngestRequest.anyOf).toHaveLength(3);
  });

  it('matches the committed docs/openapi.json (run `npm run openapi` after changing a schema)', () => {
    const committed = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'docs', 'openapi.json'), 'utf8'));
    expect(committed).toEqual(JSON.parse(JSON.stringify(document)));
  });
});

describe('OpenAPI document against the functions', () => {
  let dataDir: string;
  let runtime: Runtime;

  beforeAll(async () => {
    // Embedded backends: listing routes needs the functions registered, not a database that answers.
    dataDir = mkdtempSync(join(tmpdir(), 'fm-openapi-'));
    runtime = await createRuntime('openapi-test', {
      config: loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' }),
      embedded: true,
      withoutKeys: true,
    });
  });

  afterAll(async () => {
    await runtime?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const REGISTER: Record<HttpFunction, (app: FastifyInstance, runtime: Runtime) => void> = {
    ingest: registerIngest,
    usage: registerUsage,
    health: registerHealth,
    tenants: registerTenants,
  };

  /** What one function registers on a fresh app: `METHOD /path` with the onRequest hook it got. */
  async function served(register: (app: FastifyInstance, runtime: Runtime) => void): Promise<Map<string, unknown>> {
    const app = createHttpApp(runtime.logger);
    const routes = new Map<string, unknown>();
    app.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) if (method !== 'HEAD') routes.set(`${method} ${route.url}`, route.onRequest);
    });
    register(app, runtime);
    await app.ready();
    await app.close();
    return routes;
  }

  it('registers, per function, exactly the routes of its specs in the route table, each behind the hook its auth names', async () => {
    const hooks = { none: undefined, key: runtime.auth.requireKey, admin: runtime.auth.requireAdmin };
    for (const [fn, register] of Object.entries(REGISTER) as [HttpFunction, typeof registerIngest][]) {
      const routes = await served(register);
      const specs = FUNCTION_ROUTES[fn];
      expect([...routes.keys()].sort(), fn).toEqual(specs.map((spec) => `${spec.method} ${spec.path}`).sort());
      for (const spec of specs) expect(routes.get(`${spec.method} ${spec.path}`), `${spec.method} ${spec.path}`).toBe(hooks[spec.auth]);
    }
  });

  it('documents every route the HTTP functions register, and npm start registers them all', async () => {
    const routes = [...(await served(registerAllFunctions)).keys()].map((route) => openApiPath(route));
    const documented = operations().map(({ key }) => key);
    expect(routes.sort()).toEqual(documented.sort());
  });
});
