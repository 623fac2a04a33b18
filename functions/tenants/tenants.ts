import type { FastifyInstance } from 'fastify';
import { listAlerts } from '../../shared/domain/alerts.ts';
import { ApiError } from '../../shared/platform/http/errors.ts';
import { parseRequest } from '../../shared/platform/http/validate.ts';
import { putTenantBody, tenantPatchFrom } from '../../shared/domain/tenant-settings.ts';
import { getTenant, listTenants, upsertTenant } from '../../shared/domain/tenants.ts';
import type { TenantsDeps } from './app.ts';
import { listTenantsQuery, tenantParams } from './schema.ts';

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
