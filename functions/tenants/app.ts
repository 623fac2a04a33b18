import type { FastifyInstance } from 'fastify';
import type { Authenticator } from '../../shared/domain/auth.ts';
import type { Config } from '../../shared/platform/config.ts';
import type { Db } from '../../shared/platform/db.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { registerKeyRoutes } from './keys.ts';
import { registerTenantRoutes } from './tenants.ts';

export interface TenantsDeps {
  auth: Authenticator;
  db: Db;
  config: Config;
  logger: Logger;
}

/** The admin function: API keys (and tenants, quotas and alert history). */
export function registerTenants(app: FastifyInstance, deps: TenantsDeps): void {
  registerKeyRoutes(app, deps);
  registerTenantRoutes(app, deps);
}

export function buildTenantsApp(deps: TenantsDeps): FastifyInstance {
  const app = createHttpApp(deps.logger);
  registerTenants(app, deps);
  return app;
}
