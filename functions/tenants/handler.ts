import awsLambdaFastify from '@fastify/aws-lambda';
import { createRuntime } from '../../shared/runtime/runtime.ts';
import { buildTenantsApp } from './app.ts';

const runtime = await createRuntime('tenants');
const app = buildTenantsApp(runtime);

/** AWS Lambda (API Gateway v2 / function URL) entry; the same app the container serves. */
export const handler = awsLambdaFastify(app);
await app.ready();
