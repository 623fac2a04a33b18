import type { FastifyInstance } from 'fastify';
import { listAlerts } from '../../shared/domain/alerts.ts';
import type { Authenticator } from '../../shared/domain/auth.ts';
import { createApiKey, listApiKeys, revokeApiKey } from '../../shared/domain/keys.ts';
import { tenantPatchFrom } from '../../shared/domain/tenant-settings.ts';
import { getTenant, listTenants, upsertTenant } from '../../shared/domain/tenants.ts';
import type { Config } from '../../shared/platform/config.ts';
import type { Db } from '../../shared/platform/db.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import { ApiError } from '../../shared/platform/http/errors.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { registerRoute } from '../route-spec.ts';
import * as routes from './routes.ts';

export interface TenantsDeps {
  auth: Authenticator;
  db: Db;
  config: Config;
  logger: Logger;
}

/** The admin function: API keys, tenants, quotas and alert history. */
export function registerTenants(app: FastifyInstance, deps: TenantsDeps): void {
  registerRoute(app, routes.createApiKey, deps, async ({ body }, _request, reply) => {
    reply.code(201);
    return createApiKey(deps, body.name, body.tenant ?? null);
  });
  registerRoute(app, routes.listApiKeys, deps, ({ query }) => listApiKeys(deps, query));
  registerRoute(app, routes.revokeApiKey, deps, async ({ params }) => revokeApiKey(deps, params.id));

  registerRoute(app, routes.putTenant, deps, async ({ params: { tenant }, body }, _request, reply) => {
    const patch = await tenantPatchFrom(body, deps);
    const { created } = await upsertTenant(deps.db, tenant, patch, deps.config.DEFAULT_MONTHLY_QUOTA);
    reply.code(created ? 201 : 200);
    return getTenant(deps.db, tenant);
  });

  registerRoute(app, routes.listTenants, deps, async ({ query }) =>
    listTenants(deps.db, {
      sort: query.sort,
      limit: query.limit,
      offset: query.offset,
      ...(query.q ? { search: query.q } : {}),
      ...(query.after ? { after: query.after } : {}),
    }),
  );

  registerRoute(app, routes.getTenant, deps, async ({ params: { tenant } }) => {
    const view = await getTenant(deps.db, tenant);
    if (!view) throw new ApiError('not_found', `unknown tenant "${tenant}"`);
    return view;
  });

  registerRoute(app, routes.listTenantAlerts, deps, async ({ params: { tenant }, query }) => {
    if (!(await getTenant(deps.db, tenant))) throw new ApiError('not_found', `unknown tenant "${tenant}"`);
    const alerts = await listAlerts(deps.db, tenant, {
      limit: query.limit,
      ...(query.before === undefined ? {} : { before: BigInt(query.before) }),
    });
    return { alerts, next: alerts.length === query.limit ? alerts.at(-1)!.id : null };
  });
}

export function buildTenantsApp(deps: TenantsDeps): FastifyInstance {
  const app = createHttpApp(deps.logger);
  registerTenants(app, deps);
  return app;
}
