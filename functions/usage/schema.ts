import { z } from 'zod';
import { featureName, tenantName } from '../../shared/domain/events.ts';

export const usageParams = z.object({ tenant: tenantName });

export const seriesQuery = z.strictObject({
  granularity: z.enum(['hour', 'day'], { error: 'must be hour or day' }).default('day'),
  from: z.iso.datetime({ offset: true, message: 'must be an ISO-8601 date-time' }).optional(),
  to: z.iso.datetime({ offset: true, message: 'must be an ISO-8601 date-time' }).optional(),
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
