import { defineRoute, errorResponses } from '../route-spec.ts';
import { seriesCsvDescription, seriesQuery, seriesResponse, usageParams, usageResponse } from './schema.ts';

export const getUsage = defineRoute({
  method: 'GET',
  path: '/api/usage/:tenant',
  operationId: 'getUsage',
  summary: "A tenant's usage in its current quota period",
  tag: 'usage',
  auth: 'key',
  params: usageParams,
  responses: { 200: { description: 'Usage against the quota, per feature', schema: usageResponse }, ...errorResponses(400, 401, 403, 404) },
});

export const getUsageSeries = defineRoute({
  method: 'GET',
  path: '/api/usage/:tenant/series',
  operationId: 'getUsageSeries',
  summary: 'Usage over time, empty buckets filled with 0; JSON or CSV',
  description: '`from` defaults to the start of the current period and `to` to now; the range may span at most 400 days.',
  tag: 'usage',
  auth: 'key',
  params: usageParams,
  query: seriesQuery,
  responses: {
    200: { description: 'One point per hour or day', schema: seriesResponse, csv: seriesCsvDescription },
    ...errorResponses(400, 401, 403, 404),
  },
});

/** The usage function's routes, in route-table order. */
export const USAGE_ROUTES = [getUsage, getUsageSeries];
