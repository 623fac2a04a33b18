import { lambdaHandler } from '../lambda.ts';
import { buildTenantsApp } from './app.ts';

/** AWS Lambda (API Gateway v2 / function URL) entry; the same app the container serves. */
export const handler = await lambdaHandler('tenants', buildTenantsApp, { withoutQueue: true });
