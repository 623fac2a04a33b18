import { z } from 'zod';
import type { Config } from '../platform/config.ts';
import type { Queryable } from '../platform/db.ts';
import { ApiError, type ErrorDetail } from '../platform/http/errors.ts';
import { isValidTimeZone, zoneOffsetMs } from './periods.ts';
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
 * Why `timeZone` cannot be a tenant's zone, or null when it can: both zone databases must know it by
 * name — Node's (periods, alerts) and PostgreSQL's (the usage and tenants queries; pg_timezone_names
 * holds names only, never POSIX or offset specs) — and read it alike. PostgreSQL takes `CET`, `EET`,
 * `MET` and `WET` as abbreviations of fixed offsets where Node follows their summer time, so an hour
 * at seven month ends a year would fall in one month for the aggregator and another for the usage
 * read. Both readings are compared in January and July of this year.
 */
export async function timeZoneProblem(db: Queryable, timeZone: string): Promise<string | null> {
  const notAZone = `"${timeZone}" is not an IANA time zone name such as Europe/Berlin (offsets are refused)`;
  if (!isValidTimeZone(timeZone)) return notAZone;
  const year = new Date().getUTCFullYear();
  const probes = [Date.UTC(year, 0, 15, 12), Date.UTC(year, 6, 15, 12)];
  const rows = await db.query<{ offset_minutes: number }>(
    `SELECT (extract(epoch FROM (at AT TIME ZONE $1) - (at AT TIME ZONE 'UTC')) / 60)::int AS offset_minutes
     FROM (VALUES (1, to_timestamp($2::float8 / 1000)), (2, to_timestamp($3::float8 / 1000))) AS probe(i, at)
     WHERE EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)
     ORDER BY i`,
    [timeZone, probes[0], probes[1]],
  );
  if (rows.length === 0) return notAZone;
  const differs = probes.some((at, i) => rows[i]!.offset_minutes * 60_000 !== zoneOffsetMs(timeZone, at));
  return differs
    ? `"${timeZone}" is read with other offsets by PostgreSQL than by Node (PostgreSQL takes it as a fixed abbreviation, or the two zone databases differ); use a zone named after a place, such as Europe/Berlin`
    : null;
}

/** Checks what zod cannot (both zone databases, webhook policy and DNS) and builds the patch. */
export async function tenantPatchFrom(
  body: PutTenantBody,
  deps: { config: WebhookConfig; db: Queryable; lookup?: Parameters<typeof checkWebhookUrl>[2] },
): Promise<TenantPatch> {
  const details: ErrorDetail[] = [];
  const zoneProblem = body.timeZone === undefined ? null : await timeZoneProblem(deps.db, body.timeZone);
  if (zoneProblem) details.push({ field: 'timeZone', message: zoneProblem });
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
