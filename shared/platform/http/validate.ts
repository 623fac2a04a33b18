import type { z } from 'zod';
import { ApiError, zodDetails } from './errors.ts';

const fastChecks = new WeakMap<z.ZodType, (value: unknown) => boolean>();

/**
 * Gives a request part's schema a hand check for the common case, like ingest's parseEventFast:
 * a value it accepts is used as it is, anything else is parsed by the schema (which writes the
 * errors). It must accept only what the schema accepts, and only values the schema would return
 * unchanged (tested beside the schema).
 */
export function withFastCheck<T extends z.ZodType>(schema: T, check: (value: unknown) => value is z.infer<T>): T {
  fastChecks.set(schema, check);
  return schema;
}

/** Parses a request part with its schema; a failure is a 400 naming each bad field. */
export function parseRequest<T extends z.ZodType>(schema: T, value: unknown, part: string): z.infer<T> {
  if (fastChecks.get(schema)?.(value)) return value as z.infer<T>;
  const parsed = schema.safeParse(value ?? {});
  if (parsed.success) return parsed.data;
  const details = zodDetails(parsed.error);
  throw new ApiError('invalid_request', `invalid ${part}: ${details.map((d) => `${d.field} ${d.message}`).join('; ')}`, details);
}
