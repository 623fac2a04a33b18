import { z } from 'zod';
import type { Config } from '../platform/config.ts';
import type { Queryable } from '../platform/db.ts';
import { ApiError, type ErrorDetail } from '../platform/http/errors.ts';
import { isValidTimeZone } from './periods.ts';
import type { TenantPatch } from './tenants.ts';
import { checkWebhookUrl } from './webhooks.ts';

export const MAX_QUOTA = Number.MAX_SAFE_INTEGER;

/** A tenant's settings as PUT /api/tenants/:tenant and the dashboard's settings form take them. */
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

type WebhookConfig = Pick<Config, 'WEBHOOK_ALLOWED_HOSTS' | 'WEBHOOK_ALLOW_INSECURE'>;

/**
 * True when both zone databases know `timeZone` by name: Node's (periods, alerts) and PostgreSQL's
 * (the usage and tenants queries). pg_timezone_names holds names only, never POSIX or offset specs.
 */
export async function isKnownTimeZone(db: Queryable, timeZone: string): Promise<boolean> {
  if (!isValidTimeZone(timeZone)) return false;
  const rows = await db.query('SELECT 1 FROM pg_timezone_names WHERE name = $1', [timeZone]);
  return rows.length > 0;
}

/** Checks what zod cannot (both zone databases, webhook policy and DNS) and builds the patch. */
export async function tenantPatchFrom(
  body: PutTenantBody,
  deps: { config: WebhookConfig; db: Queryable; lookup?: Parameters<typeof checkWebhookUrl>[2] },
): Promise<TenantPatch> {
  const details: ErrorDetail[] = [];
  if (body.timeZone !== undefined && !(await isKnownTimeZone(deps.db, body.timeZone))) {
    details.push({
      field: 'timeZone',
      message: `"${body.timeZone}" is not an IANA time zone name such as Europe/Berlin (offsets are refused)`,
    });
  }
  if (body.slackWebhookUrl) {
    const policy = { allowedHosts: deps.config.WEBHOOK_ALLOWED_HOSTS, allowInsecure: deps.config.WEBHOOK_ALLOW_INSECURE };
    const problem = await checkWebhookUrl(body.slackWebhookUrl, policy, deps.lookup).catch((error: unknown) => {
      // A lookup that failed for now (503): said of the field, so a form can show it beside it.
      if (error instanceof ApiError && error.code === 'service_unavailable') {
        throw new ApiError(
          'service_unavailable',
          error.message,
          [{ field: 'slackWebhookUrl', message: 'could not be looked up just now; retry shortly' }],
          error.retryAfterSeconds,
        );
      }
      throw error;
    });
    if (problem) details.push({ field: 'slackWebhookUrl', message: problem });
  }
  if (details.length > 0) throw new ApiError('invalid_request', details.map((d) => `${d.field} ${d.message}`).join('; '), details);
  const patch: TenantPatch = {};
  if (body.monthlyQuota !== undefined) patch.monthlyQuota = BigInt(body.monthlyQuota);
  if (body.slackWebhookUrl !== undefined) patch.slackWebhookUrl = body.slackWebhookUrl || null;
  if (body.thresholds !== undefined) patch.thresholds = body.thresholds;
  if (body.timeZone !== undefined) patch.timeZone = body.timeZone;
  return patch;
}
