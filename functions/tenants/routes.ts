import { defineRoute, errorResponses } from '../route-spec.ts';
import {
  alertListResponse,
  apiKeyListResponse,
  apiKeyView,
  createdKeyResponse,
  createKeyBody,
  keyIdParams,
  listAlertsQuery,
  listKeysQuery,
  listTenantsQuery,
  putTenantBody,
  tenantListResponse,
  tenantParams,
  tenantResponse,
} from './schema.ts';

export const createApiKey = defineRoute({
  method: 'POST',
  path: '/api/keys',
  operationId: 'createApiKey',
  summary: 'Create an API key, optionally scoped to one tenant',
  tag: 'admin',
  auth: 'admin',
  body: createKeyBody,
  responses: {
    201: { description: 'The key; its secret is shown only here', schema: createdKeyResponse },
    ...errorResponses(400, 401, 403, 415),
  },
});

export const listApiKeys = defineRoute({
  method: 'GET',
  path: '/api/keys',
  operationId: 'listApiKeys',
  summary: 'List API keys (never their secrets)',
  description: 'Newest first, `limit` a page (100 by default); pass `next` as `before` for the page after.',
  tag: 'admin',
  auth: 'admin',
  query: listKeysQuery,
  responses: { 200: { description: 'Newest first', schema: apiKeyListResponse }, ...errorResponses(400, 401, 403) },
});

export const revokeApiKey = defineRoute({
  method: 'DELETE',
  path: '/api/keys/:id',
  operationId: 'revokeApiKey',
  summary: 'Revoke an API key; every instance refuses it within 5 s',
  tag: 'admin',
  auth: 'admin',
  params: keyIdParams,
  responses: { 200: { description: 'The revoked key', schema: apiKeyView }, ...errorResponses(400, 401, 403, 404) },
});

export const listTenants = defineRoute({
  method: 'GET',
  path: '/api/tenants',
  operationId: 'listTenants',
  summary: 'List tenants with their current usage',
  tag: 'admin',
  auth: 'admin',
  query: listTenantsQuery,
  responses: { 200: { description: 'One page of tenants and the total', schema: tenantListResponse }, ...errorResponses(400, 401, 403) },
});

export const getTenant = defineRoute({
  method: 'GET',
  path: '/api/tenants/:tenant',
  operationId: 'getTenant',
  summary: "A tenant's settings and current usage",
  tag: 'admin',
  auth: 'admin',
  params: tenantParams,
  responses: { 200: { description: 'The tenant', schema: tenantResponse }, ...errorResponses(400, 401, 403, 404) },
});

export const putTenant = defineRoute({
  method: 'PUT',
  path: '/api/tenants/:tenant',
  operationId: 'putTenant',
  summary: 'Create or update a tenant; fields left out keep their value (their default on create)',
  description:
    'A quota change that takes usage back under a threshold re-arms its alert; one that puts usage over a threshold fires it at once.',
  tag: 'admin',
  auth: 'admin',
  params: tenantParams,
  body: putTenantBody,
  responses: {
    200: { description: 'Updated', schema: tenantResponse },
    201: { description: 'Created', schema: tenantResponse },
    ...errorResponses(400, 401, 403, 415),
  },
});

export const listTenantAlerts = defineRoute({
  method: 'GET',
  path: '/api/tenants/:tenant/alerts',
  operationId: 'listTenantAlerts',
  summary: "A tenant's alert history and delivery state",
  description: 'Newest first, `limit` a page (100 by default); pass `next` as `before` for the page after.',
  tag: 'admin',
  auth: 'admin',
  params: tenantParams,
  query: listAlertsQuery,
  responses: { 200: { description: 'Newest first', schema: alertListResponse }, ...errorResponses(400, 401, 403, 404) },
});

/** The tenants (admin) function's routes, in route-table order. */
export const TENANTS_ROUTES = [createApiKey, listApiKeys, revokeApiKey, listTenants, getTenant, putTenant, listTenantAlerts];
