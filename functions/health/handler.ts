import awsLambdaFastify from '@fastify/aws-lambda';
import { createRuntime } from '../../shared/runtime/runtime.ts';
import { buildHealthApp } from './app.ts';

const runtime = await createRuntime('health', { withoutKeys: true });
const app = buildHealthApp(runtime);

/** AWS Lambda (API Gateway v2 / function URL) entry; the same app the container serves. */
export const handler = awsLambdaFastify(app);
await app.ready();
