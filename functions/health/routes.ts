import { defineRoute } from '../route-spec.ts';
import { healthResponse } from './schema.ts';

export const getHealth = defineRoute({
  method: 'GET',
  path: '/api/health',
  operationId: 'getHealth',
  summary: 'Liveness of PostgreSQL and the queue',
  tag: 'health',
  auth: 'none',
  responses: {
    200: { description: 'Everything answers', schema: healthResponse },
    503: { description: 'Degraded: the failing check says why', schema: healthResponse },
  },
});

/** Open like health: the document holds no data, and clients generate from it. */
export const getOpenApiDocument = defineRoute({
  method: 'GET',
  path: '/api/openapi.json',
  operationId: 'getOpenApiDocument',
  summary: 'This document',
  tag: 'meta',
  auth: 'none',
  responses: { 200: { description: 'The OpenAPI 3.1 document', schema: { type: 'object' } } },
});

/** The health function's routes, in route-table order. */
export const HEALTH_ROUTES = [getHealth, getOpenApiDocument];
