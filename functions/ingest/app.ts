import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator, Principal } from '../../shared/domain/auth.ts';
import { MAX_BATCH_EVENTS, parseEventFast, timestampProblem, usageEvent } from '../../shared/domain/events.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import { ApiError, type ErrorDetail, apiErrorOf, sendError, zodDetails } from '../../shared/platform/http/errors.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { type EventQueue, QueueFullError, type QueuedEvent, QueueUnavailableError } from '../../shared/platform/queue/types.ts';
import { ingestMetrics } from '../../shared/platform/telemetry/metrics.ts';
import { registerRoute } from '../route-spec.ts';
import { ingestEvents } from './routes.ts';
import type { IngestResponse } from './schema.ts';

export interface IngestDeps {
  auth: Authenticator;
  queue: EventQueue;
}

function eventsOf(body: unknown): unknown[] {
  if (Array.isArray(body)) return body;
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
    const events = (body as { events?: unknown }).events;
    if (events === undefined) return [body];
    if (Array.isArray(events) && Object.keys(body).length === 1) return events;
  }
  throw new ApiError('invalid_request', 'the body must be one event, an array of events, or {"events": [...]}', [
    { field: '(body)', message: 'expected an event object, an array, or {"events": [...]}' },
  ]);
}

/** Validates every event and reports every problem; the batch is all-or-nothing. */
function validateBatch(rawEvents: unknown[], receivedAt: number): QueuedEvent[] {
  if (rawEvents.length === 0)
    throw new ApiError('invalid_event', 'the batch is empty', [{ field: 'events', message: 'must hold at least one event' }]);
  if (rawEvents.length > MAX_BATCH_EVENTS) {
    throw new ApiError('invalid_event', `a batch holds at most ${MAX_BATCH_EVENTS} events`, [
      { field: 'events', message: `has ${rawEvents.length} events; at most ${MAX_BATCH_EVENTS} are allowed` },
    ]);
  }
  const details: ErrorDetail[] = [];
  const events: QueuedEvent[] = [];
  for (let index = 0; index < rawEvents.length; index++) {
    let valid = parseEventFast(rawEvents[index]);
    if (!valid) {
      const parsed = usageEvent.safeParse(rawEvents[index]);
      if (!parsed.success) {
        for (const detail of zodDetails(parsed.error)) details.push({ index, ...detail });
        continue;
      }
      valid = parsed.data;
    }
    const { tenant, feature, tokens, id, timestamp } = valid;
    const timestampMs = timestamp === undefined ? receivedAt : Date.parse(timestamp);
    const problem = timestamp === undefined ? undefined : timestampProblem(timestampMs, receivedAt);
    if (problem) {
      details.push({ index, field: 'timestamp', message: problem });
      continue;
    }
    events.push(
      id === undefined ? { tenant, feature, tokens, timestamp: timestampMs } : { tenant, feature, tokens, timestamp: timestampMs, id },
    );
  }
  if (details.length > 0) {
    const bad = new Set(details.map((detail) => detail.index)).size;
    throw new ApiError('invalid_event', `${bad} of ${rawEvents.length} events are invalid; nothing was accepted`, details);
  }
  return events;
}

async function enqueue(queue: EventQueue, events: QueuedEvent[], receivedAt: number) {
  try {
    return await queue.enqueue(events, receivedAt);
  } catch (error) {
    if (error instanceof QueueFullError) {
      throw new ApiError('queue_full', 'the queue backlog is over its cap; retry later', undefined, 5);
    }
    if (error instanceof QueueUnavailableError) {
      // Not "nothing was accepted": a write that timed out or lost its connection may still have landed.
      throw new ApiError(
        'queue_unavailable',
        'the queue did not confirm the events; retry later with the same ids (an event with an id is never counted twice)',
        undefined,
        1,
      );
    }
    throw error;
  }
}

/**
 * Ids for events sent without one: a random prefix per process and a counter, unique across
 * processes and restarts without a UUID's cost per event. They are receipts only — an event without
 * its own id is never deduplicated, so resending it with this id would be a new event.
 */
const assignedIdPrefix = `srv-${randomBytes(9).toString('base64url')}-`;
let assignedIds = 0;

/**
 * A tenant-scoped key may send events for its own tenant only. Every other one is named by index
 * (403, nothing enqueued), so a client can report those and resend the rest of its batch.
 */
function authoriseTenants(principal: Principal, events: readonly QueuedEvent[]): void {
  if (principal.kind !== 'key' || principal.tenant === null) return;
  const scope = principal.tenant;
  const details: ErrorDetail[] = [];
  events.forEach((event, index) => {
    if (event.tenant !== scope)
      details.push({ index, field: 'tenant', message: `is not "${scope}", the tenant this API key is scoped to` });
  });
  if (details.length > 0) {
    throw new ApiError(
      'forbidden',
      `this API key is scoped to another tenant: ${details.length} of ${events.length} events are not for it; nothing was accepted`,
      details,
    );
  }
}

export function registerIngest(app: FastifyInstance, deps: IngestDeps): void {
  const metrics = ingestMetrics();
  // The route's own error handler sees every rejection of this route, auth and body-parser errors
  // included, and counts it by the code the client gets.
  const errorHandler = (error: Error, request: FastifyRequest, reply: FastifyReply) => {
    const apiError = apiErrorOf(error, request);
    metrics.rejected(apiError.code);
    return sendError(reply, request, apiError);
  };
  registerRoute(
    app,
    ingestEvents,
    { auth: deps.auth, options: { errorHandler } },
    async (_input, request, reply): Promise<IngestResponse> => {
      const receivedAt = Date.now();
      const events = validateBatch(eventsOf(request.body), receivedAt);
      authoriseTenants(request.principal, events);
      const result = await enqueue(deps.queue, events, receivedAt);
      metrics.accepted(result.accepted);
      if (result.duplicates > 0) metrics.duplicates(result.duplicates);
      const duplicateIndexes: number[] = [];
      result.duplicateFlags.forEach((duplicate, index) => duplicate && duplicateIndexes.push(index));
      reply.code(202);
      return {
        accepted: result.accepted,
        duplicates: result.duplicates,
        ids: events.map((event) => event.id ?? assignedIdPrefix + (assignedIds++).toString(36)),
        duplicateIndexes,
      };
    },
  );
}

export function buildIngestApp(deps: IngestDeps & { logger: Logger }): FastifyInstance {
  const app = createHttpApp(deps.logger);
  registerIngest(app, deps);
  return app;
}
