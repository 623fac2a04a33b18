import type { FastifyInstance } from 'fastify';
import type { Runtime } from '../shared/runtime/runtime.ts';
import { registerHealth } from './health/app.ts';
import { registerIngest } from './ingest/app.ts';
import { registerTenants } from './tenants/app.ts';
import { registerUsage } from './usage/app.ts';

/** Every HTTP function on one app, as `npm start` serves them (each also runs alone in its container). */
export function registerAllFunctions(app: FastifyInstance, runtime: Runtime): void {
  registerIngest(app, runtime);
  registerUsage(app, runtime);
  registerHealth(app, runtime);
  registerTenants(app, runtime);
}
