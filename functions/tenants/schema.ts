import { z } from 'zod';
import { tenantName } from '../../shared/events.ts';

export const createKeyBody = z.strictObject({
  name: z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters'),
  tenant: tenantName.nullable().optional(),
});

export const keyIdParams = z.object({ id: z.string().regex(/^key_[A-Za-z0-9_-]{1,64}$/, 'must be a key id such as key_…') });

export const apiKeyView = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string().nullable(),
  prefix: z.string(),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});
export type ApiKeyView = z.infer<typeof apiKeyView>;

export const createdKeyResponse = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string().nullable(),
  key: z.string().meta({ description: 'the secret; shown only in this response' }),
  createdAt: z.string(),
});
export type CreatedKeyResponse = z.infer<typeof createdKeyResponse>;

export const tenantParams = z.object({ tenant: tenantName });

export const MAX_QUOTA = Number.MAX_SAFE_INTEGER;

export const putTenantBody = z.strictObject({
  monthlyQuota: z
    .number({ error: `must be an integer from 1 to ${MAX_QUOTA}` })
    .int(`must be an integer from 1 to ${MAX_QUOTA}`)
    .min(1, `must be an integer from 1 to ${MAX_QUOTA}`)
    .max(MAX_QUOTA, `must be an integer from 1 to ${MAX_QUOTA}`)
    .optional(),
  slackWebhookUrl: z.string().max(2048, 'must be at most 2048 characters').nullable().optional(),
  thresholds: z
    .array(z.number().int('must be whole percents').min(1, 'each must be from 1 to 1000').max(1000, 'each must be from 1 to 1000'))
    .min(1, 'must hold at least one threshold')
    .max(10, 'must hold at most 10 thresholds')
    .optional(),
  timeZone: z.string().max(64).optional(),
});
export type PutTenantBody = z.infer<typeof putTenantBody>;

export const listTenantsQuery = z.strictObject({
  q: z.string().max(128).optional(),
  sort: z.enum(['name', 'usage', 'percent']).default('name'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  offset: z.coerce.number().int().min(0).max(10_000_000).default(0),
});

const bigintNumber = z.bigint().meta({ description: 'a 64-bit integer written exactly as a JSON number' });

export const tenantResponse = z.object({
  tenant: z.string(),
  monthlyQuota: bigintNumber,
  timeZone: z.string(),
  thresholds: z.array(z.number()),
  slackWebhookUrl: z.string().nullable().meta({ description: 'masked: host and last characters only' }),
  usage: z.object({
    period: z.object({ start: z.string(), end: z.string() }),
    tokens: bigintNumber,
    percent: z.number(),
    remaining: bigintNumber,
    status: z.enum(['ok', 'warning', 'over']),
    lastEventAt: z.string().nullable(),
  }),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const tenantListResponse = z.object({ tenants: z.array(tenantResponse), total: z.number().int() });

export const alertResponse = z.object({
  id: z.string(),
  threshold: z.number(),
  period: z.string(),
  usedTokens: bigintNumber,
  quota: bigintNumber,
  percent: z.number(),
  status: z.enum(['pending', 'delivered', 'failed', 'no_webhook']),
  createdAt: z.string(),
  deliveredAt: z.string().nullable(),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  rearmedAt: z.string().nullable(),
});
export const alertListResponse = z.object({ alerts: z.array(alertResponse) });
