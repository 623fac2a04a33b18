import awsLambdaFastify from '@fastify/aws-lambda';
import type { FastifyInstance } from 'fastify';
import { createRuntime, type QueuelessRuntime, type Runtime, type RuntimeOptions } from '../shared/runtime/runtime.ts';

/** How long a cold start waits for Valkey before serving anyway (its answers then say 503). */
const QUEUE_CONNECT_MS = 5_000;

/**
 * An AWS Lambda (API Gateway v2 / function URL) handler for one HTTP function: the same app the
 * container serves, through @fastify/aws-lambda. A function with a queue connects Valkey during the init phase, before
 * the first invocation: its client queues no command while connecting (a queue must fail fast), so
 * a first request on a fresh connection would be refused with a 503 otherwise.
 */
export function lambdaHandler(
  name: string,
  build: (runtime: QueuelessRuntime) => FastifyInstance,
  options: RuntimeOptions & { withoutQueue: true },
): Promise<ReturnType<typeof awsLambdaFastify>>;
export function lambdaHandler(
  name: string,
  build: (runtime: Runtime) => FastifyInstance,
  options?: RuntimeOptions & { withoutQueue?: false },
): Promise<ReturnType<typeof awsLambdaFastify>>;
export async function lambdaHandler(
  name: string,
  build: (runtime: never) => FastifyInstance,
  options: RuntimeOptions = {},
): Promise<ReturnType<typeof awsLambdaFastify>> {
  const runtime: Runtime | QueuelessRuntime = await createRuntime(name, options as RuntimeOptions & { withoutQueue?: false });
  const deadline = Date.now() + QUEUE_CONNECT_MS;
  while ('queue' in runtime) {
    try {
      await runtime.queue.ping();
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        runtime.logger.warn({ err: (error as Error).message }, 'valkey not reachable at cold start; serving anyway');
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  const app = build(runtime as never);
  const handle = awsLambdaFastify(app);
  await app.ready();
  // Timers stop while the instance is frozen between invocations, the API keys' reload among them.
  const handler = async (event: unknown, context: unknown) => {
    await runtime.keys.catchUp();
    return (handle as (event: unknown, context: unknown) => Promise<unknown>)(event, context);
  };
  return handler as unknown as ReturnType<typeof awsLambdaFastify>;
}
