import { lambdaHandler } from '../lambda.ts';
import { buildUsageApp } from './app.ts';

/** AWS Lambda (API Gateway v2 / function URL) entry; the same app the container serves. */
export const handler = await lambdaHandler('usage', (runtime) => buildUsageApp({ ...runtime, followChanges: false }), {
  withoutQueue: true,
});
