import { z } from 'zod';

export const MAX_TOKENS = 1_000_000_000_000;
export const MAX_BATCH_EVENTS = 1_000;
export const PAST_WINDOW_MS = 35 * 86_400_000;
export const FUTURE_WINDOW_MS = 5 * 60_000;

const TENANT_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;
const FEATURE_PATTERN = /^[A-Za-z0-9._:@/-]{1,128}$/;
const ID_PATTERN = /^[!-~]{1,128}$/;

/**
 * Free text that PostgreSQL stores or compares (a key's name, a search): its text type cannot hold
 * NUL (U+0000), so one is a 400 naming the field, never the database's error as a 500.
 */
export function postgresText(schema: z.ZodString) {
  return schema
    .refine((value) => !value.includes('\u0000'), 'must not contain NUL (U+0000)')
    .refine((value) => value.isWellFormed(), 'must be valid Unicode (a lone surrogate such as \\ud800 would be stored as U+FFFD)');
}

export const tenantName = z.string().regex(TENANT_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ -');
/** Whether `tenantName` accepts the string (for hand-checked fast paths). */
export const isTenantName = (name: string): boolean => TENANT_PATTERN.test(name);
export const featureName = z.string().regex(FEATURE_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -');
export const eventId = z.string().regex(ID_PATTERN, 'must be 1-128 printable ASCII characters (! to ~)');
const isoTimestamp = z.iso.datetime({
  offset: true,
  message: 'must be an ISO-8601 date-time with a time zone, e.g. 2026-05-01T12:00:00Z',
});

export const usageEvent = z.strictObject({
  tenant: tenantName,
  feature: featureName,
  tokens: z
    .number({ error: 'must be an integer from 1 to 10^12' })
    .int('must be an integer from 1 to 10^12')
    .min(1, 'must be an integer from 1 to 10^12')
    .max(MAX_TOKENS, 'must be an integer from 1 to 10^12'),
  id: eventId.optional(),
  timestamp: isoTimestamp.optional(),
});
export type UsageEvent = z.infer<typeof usageEvent>;

const EVENT_KEYS = new Set(['tenant', 'feature', 'tokens', 'id', 'timestamp']);

/**
 * The common case — a well-formed event — checked by hand, about ten times cheaper than the schema.
 * It accepts only what `usageEvent` accepts (same patterns, same bounds, no unknown keys); anything
 * else returns undefined and goes through the schema, which also writes the error messages.
 */
export function parseEventFast(raw: unknown): UsageEvent | undefined {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  const event = raw as Record<string, unknown>;
  for (const key in event) if (!EVENT_KEYS.has(key)) return undefined;
  const { tenant, feature, tokens, id, timestamp } = event;
  if (typeof tenant !== 'string' || !TENANT_PATTERN.test(tenant)) return undefined;
  if (typeof feature !== 'string' || !FEATURE_PATTERN.test(feature)) return undefined;
  if (typeof tokens !== 'number' || !Number.isInteger(tokens) || tokens < 1 || tokens > MAX_TOKENS) return undefined;
  if (id !== undefined && (typeof id !== 'string' || !ID_PATTERN.test(id))) return undefined;
  if (timestamp !== undefined && (typeof timestamp !== 'string' || !isoTimestamp.safeParse(timestamp).success)) return undefined;
  return event as UsageEvent;
}

/** Where a timestamp may fall relative to receipt; outside it the event is refused, not clamped. */
export function timestampProblem(timestampMs: number, receivedAt: number): string | undefined {
  if (timestampMs < receivedAt - PAST_WINDOW_MS) return 'is more than 35 days in the past';
  if (timestampMs > receivedAt + FUTURE_WINDOW_MS) return 'is more than 5 minutes in the future';
  return undefined;
}
