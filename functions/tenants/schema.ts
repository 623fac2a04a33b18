import { z } from 'zod';
import { postgresText, tenantName } from '../../shared/domain/events.ts';

import { apiKeyView, keyId } from '../../shared/domain/keys.ts';

export { apiKeyView, createdKeyResponse, createKeyBody, keyIdParams } from '../../shared/domain/keys.ts';
export { putTenantBody } from '../../shared/domain/tenant-settings.ts';

export const apiKeyListResponse = z.object({
  keys: z.array(apiKeyView),
  next: z.string().nullable().meta({ description: 'when more keys follow: the `before` of the next (older) page; null on the last page' }),
});

export const listKeysQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: keyId.optional().meta({ description: "the previous page's `next`: the keys created before that one" }),
});

export const tenantParams = z.object({ tenant: tenantName });

export const listTenantsQuery = z
  .strictObject({
    q: postgresText(z.string().max(128)).optional(),
    sort: z.enum(['name', 'usage', 'percent']).default('name'),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    offset: z.coerce.number().int().min(0).max(10_000_000).default(0),
    after: tenantName.optional().meta({
      description:
        "the previous page's `next`: the tenants after this name, in name order (no tenant skipped or repeated as tenants come and go)",
    }),
  })
  .superRefine((query, ctx) => {
    if (query.after !== undefined && query.sort !== 'name')
      ctx.addIssue({ code: 'custom', path: ['after'], message: 'pages only the name order (sort=name)' });
    if (query.after !== undefined && query.offset !== 0)
      ctx.addIssue({ code: 'custom', path: ['after'], message: 'replaces offset; send one or the other' });
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

export const tenantListResponse = z.object({
  tenants: z.array(tenantResponse),
  total: z.number().int(),
  next: z.string().nullable().meta({
    description: 'in name order, after a full page: the `after` of the next page (null on the last page, and for the other orders)',
  }),
});

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
export const alertListResponse = z.object({
  alerts: z.array(alertResponse),
  next: z.string().nullable().meta({ description: 'after a full page: the `before` of the next (older) page; null on the last page' }),
});

export const listAlertsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: z
    .string()
    .regex(/^[1-9]\d{0,18}$/, 'must be an alert id (a positive integer)')
    .optional()
    .meta({ description: "the previous page's `next`: the alerts older than that one" }),
});
