import { z } from 'zod';
import { MAX_BATCH_EVENTS, usageEvent } from '../../shared/domain/events.ts';

/** One event, an array of events, or `{"events": [...]}`. Each event is validated on its own. */
export const ingestBody = z.union([
  z.array(z.unknown()),
  z.object({ events: z.array(z.unknown()) }),
  usageEvent,
]);

export const ingestBatch = z.array(usageEvent).min(1).max(MAX_BATCH_EVENTS);

export const ingestResponse = z.object({
  accepted: z.number().int(),
  duplicates: z.number().int(),
  /** Per event in request order: its idempotency key, or the id the server assigned (not deduplicated). */
  ids: z.array(z.string()),
  /** Indexes of the events that were duplicates of an earlier `(tenant, id)`. */
  duplicateIndexes: z.array(z.number().int()),
});
export type IngestResponse = z.infer<typeof ingestResponse>;
