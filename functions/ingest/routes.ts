import { defineRoute, errorResponses } from '../route-spec.ts';
import { ingestRequest, ingestResponse } from './schema.ts';

export const ingestEvents = defineRoute({
  method: 'POST',
  path: '/api/events',
  operationId: 'ingestEvents',
  summary: 'Record usage events',
  description:
    'One event, an array of up to 1,000 events, or `{"events": [...]}`. All-or-nothing: one invalid event rejects the batch and nothing is enqueued. ' +
    'An event with an `id` is counted once per `(tenant, id)` within the dedupe window, so resending after a timeout is safe. 202 means the events are durable in the queue.',
  tag: 'ingest',
  auth: 'key',
  body: ingestRequest,
  // The hot path: events are checked one by one by the fast validator, with zod only for the bad ones.
  validateBody: false,
  responses: {
    202: { description: 'Accepted (duplicates of an earlier `(tenant, id)` are acknowledged, not counted again)', schema: ingestResponse },
    ...errorResponses(400, 401, 403, 413, 415, 503),
  },
});

/** The ingest function's routes, in route-table order. */
export const INGEST_ROUTES = [ingestEvents];
