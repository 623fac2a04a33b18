import type { FastifyInstance } from 'fastify';
import { listAlerts } from '../../shared/alerts.ts';
import { ApiError, type ErrorDetail } from '../../shared/http/errors.ts';
import { parseRequest } from '../../shared/http/validate.ts';
import { isValidTimeZone } from '../../shared/periods.ts';
import { type TenantPatch, getTenant, listTenants, upsertTenant } from '../../shared/tenants.ts';
import { checkWebhookUrl } from '../../shared/webhooks.ts';
import type { TenantsDeps } from './app.ts';
import { type PutTenantBody, listTenantsQuery, putTenantBody, tenantParams } from './schema.ts';

/** Checks what zod cannot (zone database, webhook policy and DNS) and builds the patch. */
export async function tenantPatchFrom(body: PutTenantBody, deps: Pick<TenantsDeps, 'config'>): Promise<TenantPatch> {
  const details: ErrorDetail[] = [];
  if (body.timeZone !== undefined && !isValidTimeZone(body.timeZone)) {
    details.push({ field: 'timeZone', message: `"${body.timeZone}" is not an IANA time zone such as Europe/Berlin` });
  }
  if (body.slackWebhookUrl) {
    const problem = await checkWebhookUrl(body.slackWebhookUrl, {
      allowedHosts: deps.config.WEBHOOK_ALLOWED_HOSTS,
      allowInsecure: deps.config.WEBHOOK_ALLOW_INSECURE,
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

export function registerTenantRoutes(app: FastifyInstance, deps: TenantsDeps): void {
  const onRequest = deps.auth.requireAdmin;

  app.put('/api/tenants/:tenant', { onRequest }, async (request, reply) => {
    const { tenant } = parseRequest(tenantParams, request.params, 'path');
    const patch = await tenantPatchFrom(parseRequest(putTenantBody, request.body, 'body'), deps);
    const { created } = await upsertTenant(deps.db, tenant, patch, deps.config.DEFAULT_MONTHLY_QUOTA);
    reply.code(created ? 201 : 200);
    return getTenant(deps.db, tenant);
  });

  app.get('/api/tenants', { onRequest }, async (request) => {
    const query = parseRequest(listTenantsQuery, request.query, 'query');
    return listTenants(deps.db, { sort: query.sort, limit: query.limit, offset: query.offset, ...(query.q ? { search: query.q } : {}) });
  });

  app.get('/api/tenants/:tenant', { onRequest }, async (request) => {
    const { tenant } = parseRequest(tenantParams, request.params, 'path');
    const view = await getTenant(deps.db, tenant);
    if (!view) throw new ApiError('not_found', `unknown tenant "${tenant}"`);
    return view;
  });

  app.get('/api/tenants/:tenant/alerts', { onRequest }, async (request) => {
    const { tenant } = parseRequest(tenantParams, request.params, 'path');
    if (!(await getTenant(deps.db, tenant))) throw new ApiError('not_found', `unknown tenant "${tenant}"`);
    return { alerts: await listAlerts(deps.db, tenant) };
  });
}
