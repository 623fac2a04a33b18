import { z } from 'zod';
import { featureName, isTenantName, tenantName } from '../../shared/domain/events.ts';
import { SERIES_CSV_HEADER } from '../../shared/domain/usage.ts';
import { withFastCheck } from '../../shared/platform/http/validate.ts';

/** The path parameters `usageParams` returns unchanged: only `tenant`, a valid tenant name. */
export function isUsageParams(value: unknown): value is { tenant: string } {
  if (value === null || typeof value !== 'object') return false;
  let keys = 0;
  for (const _key in value) keys++;
  const { tenant } = value as { tenant?: unknown };
  return keys === 1 && typeof tenant === 'string' && isTenantName(tenant);
}

// Checked on every usage read: the hand check takes the common case, zod the rest and its errors.
export const usageParams = withFastCheck(z.object({ tenant: tenantName }), isUsageParams);

// Series bounds stay where dates are ordinary: year 0 or 9999 reach date arithmetic (Node's and
// PostgreSQL's) at its edges, which is no question worth a database round trip.
const SERIES_EARLIEST = Date.UTC(2000, 0, 1);
const SERIES_LATEST = Date.UTC(2100, 0, 1);
const seriesBound = z.iso.datetime({ offset: true, message: 'must be an ISO-8601 date-time' }).refine((text) => {
  const at = Date.parse(text);
  return at >= SERIES_EARLIEST && at < SERIES_LATEST;
}, 'must be from 2000-01-01 to before 2100-01-01');

export const seriesQuery = z.strictObject({
  granularity: z.enum(['hour', 'day'], { error: 'must be hour or day' }).default('day'),
  from: seriesBound.optional().meta({
    description: 'included: the first bucket is the one holding this instant (default: the start of the current period)',
  }),
  to: seriesBound.optional().meta({
    description:
      'included: the last bucket is the one holding this instant (default: now). To page without a bucket twice, start the next range at the bucket after the last one read',
  }),
  feature: featureName.optional(),
});

const bigintNumber = z.bigint().meta({ description: 'a 64-bit integer written exactly as a JSON number' });

export const usageResponse = z.object({
  tenant: z.string(),
  period: z.object({ start: z.string(), end: z.string() }),
  tokens: bigintNumber,
  quota: bigintNumber,
  percent: z.number(),
  remaining: bigintNumber,
  over: z.boolean(),
  features: z.array(z.object({ feature: z.string(), tokens: bigintNumber })),
  forecast: z
    .object({
      tokensAtPeriodEnd: bigintNumber.meta({ description: "the period's total if the current pace holds to its end" }),
      quotaReachedAt: z.string().nullable().meta({
        description:
          'when the running total reaches the quota at that pace (ISO-8601); `asOf` if it already has; null if not within this period',
      }),
    })
    .meta({
      description:
        'At the current pace: the tokens counted since local midnight of the earlier of six days before today and the period start, ' +
        "divided by the time since then (a trailing 7-day rate, shorter in a period's first week), carried on to the period end.",
    }),
  asOf: z.string(),
});
export type UsageResponse = z.infer<typeof usageResponse>;

export const seriesResponse = z.object({
  tenant: z.string(),
  granularity: z.enum(['hour', 'day']),
  from: z.string(),
  to: z.string(),
  feature: z.string().nullable(),
  points: z.array(z.object({ start: z.string(), tokens: bigintNumber })),
});
export type SeriesResponse = z.infer<typeof seriesResponse>;

export const seriesCsvDescription = `With \`Accept: text/csv\`: a header row \`${SERIES_CSV_HEADER}\`, then one row per bucket, oldest first (\`start\` as ISO-8601 UTC, \`tokens\` an exact integer).`;
