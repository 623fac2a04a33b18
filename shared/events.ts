import { z } from 'zod';

export const MAX_TOKENS = 1_000_000_000_000;
export const MAX_BATCH_EVENTS = 1_000;
export const PAST_WINDOW_MS = 35 * 86_400_000;
export const FUTURE_WINDOW_MS = 5 * 60_000;

export const tenantName = z
  .string()
  .regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ -');
export const featureName = z
  .string()
  .regex(/^[A-Za-z0-9._:@/-]{1,128}$/, 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -');
export const eventId = z.string().regex(/^[!-~]{1,128}$/, 'must be 1-128 printable ASCII characters (! to ~)');

export const usageEvent = z.strictObject({
  tenant: tenantName,
  feature: featureName,
  tokens: z
    .number({ error: 'must be an integer from 1 to 10^12' })
    .int('must be an integer from 1 to 10^12')
    .min(1, 'must be an integer from 1 to 10^12')
    .max(MAX_TOKENS, 'must be an integer from 1 to 10^12'),
  id: eventId.optional(),
  timestamp: z.iso
    .datetime({ offset: true, message: 'must be an ISO-8601 date-time with a time zone, e.g. 2026-05-01T12:00:00Z' })
    .optional(),
});
export type UsageEvent = z.infer<typeof usageEvent>;

/** Where a timestamp may fall relative to receipt; outside it the event is refused, not clamped. */
export function timestampProblem(timestampMs: number, receivedAt: number): string | undefined {
  if (timestampMs < receivedAt - PAST_WINDOW_MS) return 'is more than 35 days in the past';
  if (timestampMs > receivedAt + FUTURE_WINDOW_MS) return 'is more than 5 minutes in the future';
  return undefined;
}
