import { z } from 'zod';
import { MAX_BATCH_EVENTS, usageEvent } from '../../shared/domain/events.ts';

export const ingestBatch = z.array(usageEvent).min(1).max(MAX_BATCH_EVENTS);

/**
 * The body forms the ingest function accepts, each holding events checked by the same usageEvent
 * schema. Documentation only: the handler validates with the fast per-event check of shared/domain/events.ts.
 */
export const ingestRequest = z.union([usageEvent, ingestBatch, z.strictObject({ events: ingestBatch })]);

export const ingestResponse = z.object({
  accepted: z.number().int(),
  duplicates: z.number().int(),
  /** Per event in request order: its idempotency key, or the id the server assigned (not deduplicated). */
  ids: z.array(z.string()),
  /** Indexes of the events that were duplicates of an earlier `(tenant, id)`. */
  duplicateIndexes: z.array(z.number().int()),
});
export type IngestResponse = z.infer<typeof ingestResponse>;
