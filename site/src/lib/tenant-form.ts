import { type PutTenantBody, putTenantBody, tenantPatchFrom } from '../../../shared/domain/tenant-settings.ts';
import { ApiError, zodDetails } from '../../../shared/platform/http/errors.ts';
import { upsertTenant } from '../../../shared/domain/tenants.ts';
import type { SiteDeps } from './deps.ts';

export const TENANT_FIELDS = ['monthlyQuota', 'thresholds', 'timeZone', 'slackWebhookUrl'] as const;
export type TenantField = (typeof TENANT_FIELDS)[number];
export type FieldErrors = Partial<Record<TenantField | 'form', string>>;

export type TenantFormResult = { ok: true } | { ok: false; errors: FieldErrors; values: Record<TenantField, string> };

const fieldOf = (path: string): TenantField | 'form' => {
  const field = path.split('.')[0] ?? '';
  return (TENANT_FIELDS as readonly string[]).includes(field) ? (field as TenantField) : 'form';
};

/** Text fields into the API's body: digits become numbers, anything else is left for zod to refuse. */
function bodyFrom(values: Record<TenantField, string>, clearWebhook: boolean): { body: Record<string, unknown>; errors: FieldErrors } {
  const errors: FieldErrors = {};
  const body: Record<string, unknown> = {};
  const quota = values.monthlyQuota.replace(/[\s,_]/g, '');
  body.monthlyQuota = /^\d+$/.test(quota) ? Number(quota) : quota;
  const thresholds = values.thresholds.split(/[\s,;]+/).filter(Boolean);
  if (thresholds.some((threshold) => !/^\d+$/.test(threshold))) {
    errors.thresholds = 'must be whole percents separated by commas, e.g. 80, 100';
  } else {
    body.thresholds = thresholds.map(Number);
  }
  if (values.timeZone) body.timeZone = values.timeZone;
  if (clearWebhook) body.slackWebhookUrl = null;
  else if (values.slackWebhookUrl) body.slackWebhookUrl = values.slackWebhookUrl;
  return { body, errors };
}

/**
 * Applies the tenant settings form through the same schema, checks and upsert as
 * PUT /api/tenants/:tenant; failures come back per field so the page shows each beside its input.
 */
export async function applyTenantForm(
  deps: Pick<SiteDeps, 'db' | 'config'> & { lookup?: Parameters<typeof tenantPatchFrom>[1]['lookup'] },
  tenant: string,
  form: FormData,
): Promise<TenantFormResult> {
  const values = Object.fromEntries(TENANT_FIELDS.map((field) => [field, String(form.get(field) ?? '').trim()])) as Record<
    TenantField,
    string
  >;
  const { body, errors } = bodyFrom(values, form.get('clearWebhook') === 'on');
  const parsed = putTenantBody.safeParse(body);
  if (!parsed.success) {
    for (const detail of zodDetails(parsed.error)) errors[fieldOf(detail.field)] ??= detail.message;
  }
  // The fields that passed the schema still get the API's deeper checks (zone database, webhook
  // policy), so one submit reports every problem, not only the first kind.
  const valid = putTenantBody.parse(Object.fromEntries(Object.entries(body).filter(([field]) => !(field in errors))));
  try {
    const patch = await tenantPatchFrom(valid satisfies PutTenantBody, deps);
    if (Object.keys(errors).length > 0) return { ok: false, errors, values };
    await upsertTenant(deps.db, tenant, patch, deps.config.DEFAULT_MONTHLY_QUOTA);
    return { ok: true };
  } catch (error) {
    // A check that could not be made just now (the webhook host's DNS lookup) is shown beside its
    // field like a refusal, keeping what was typed; anything else above 4xx is the server's fault.
    const retryable = error instanceof ApiError && error.code === 'service_unavailable' && error.details !== undefined;
    if (!(error instanceof ApiError) || (error.status >= 500 && !retryable)) throw error;
    for (const detail of error.details ?? [{ field: 'form', message: error.message }]) errors[fieldOf(detail.field)] ??= detail.message;
    return { ok: false, errors, values };
  }
}
