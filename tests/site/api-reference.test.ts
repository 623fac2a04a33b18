import { describe, expect, it } from 'vitest';
import { operationsOf, type OpenApiDocument } from '../../site/src/lib/api-reference.ts';
import { buildOpenApiDocument } from '../../functions/openapi.ts';
import { FUNCTION_ROUTES } from '../../functions/routes.ts';

describe('API reference page data', () => {
  const operations = operationsOf(buildOpenApiDocument() as OpenApiDocument);

  it('lists every route the functions serve, with its responses', () => {
    const listed = new Set(operations.map((operation) => `${operation.method} ${operation.path}`));
    for (const route of Object.values(FUNCTION_ROUTES).flat()) {
      expect(listed, `${route.method} ${route.path}`).toContain(`${route.method} ${route.path.replace(/:(\w+)/g, '{$1}')}`);
    }
    expect(operations.every((operation) => operation.responses.length > 0)).toBe(true);
  });

  it('names the request schema of the ingest endpoint and marks health as open', () => {
    const ingest = operations.find((operation) => operation.method === 'POST' && operation.path === '/api/events')!;
    expect(ingest.requestSchema).toBeDefined();
    expect(ingest.auth).toBe(true);
    expect(operations.find((operation) => operation.path === '/api/health')!.auth).toBe(false);
  });
});
