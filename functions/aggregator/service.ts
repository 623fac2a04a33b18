import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Context } from 'aws-lambda';
import type { Runtime } from '../../shared/runtime/runtime.ts';
import { aggregatorMetrics } from '../../shared/platform/telemetry/metrics.ts';
import { AlertDelivery, type DeliveryOutcome } from './delivery.ts';
import type { AggregatorResult } from './apply.ts';
import { createAggregatorHandler } from './handler.ts';
import { AggregatorRunner } from './runner.ts';

export interface AggregatorHooks {
  onApplied?: (result: AggregatorResult) => void;
  onDelivery?: (outcome: DeliveryOutcome, attempts: number) => void;
}

export interface RunningAggregator {
  runner: AggregatorRunner;
  delivery: AlertDelivery;
  stop(): Promise<void>;
}

/**
 * The invocation context the runner hands the handler, as Lambda would: a commit has until the
 * partition lease runs out.
 */
function runnerContext(leaseMs: number): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: 'flagmeter-aggregator',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'flagmeter:aggregator:runner',
    memoryLimitInMB: '128',
    awsRequestId: randomUUID(),
    logGroupName: 'flagmeter',
    logStreamName: hostname(),
    getRemainingTimeInMillis: () => leaseMs,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

/** The aggregator function as a process runs it: runner feeding the middy handler, plus the alert outbox. */
export async function startAggregator(runtime: Runtime, hooks: AggregatorHooks = {}): Promise<RunningAggregator> {
  const { config, db, queue, logger } = runtime;
  if (config.WEBHOOK_ALLOW_INSECURE) {
    logger.warn('WEBHOOK_ALLOW_INSECURE=true: webhooks may use http and internal addresses; for local testing only');
  }
  const metrics = aggregatorMetrics(() => queue.backlog());
  const delivery = new AlertDelivery({
    db,
    logger,
    policy: { allowedHosts: config.WEBHOOK_ALLOWED_HOSTS, allowInsecure: config.WEBHOOK_ALLOW_INSECURE },
    globalWebhookUrl: config.SLACK_WEBHOOK_URL,
    publicUrl: config.PUBLIC_URL,
    giveUpMs: config.ALERT_DELIVERY_GIVE_UP,
    retryBaseMs: config.ALERT_RETRY_BASE,
    timeoutMs: config.WEBHOOK_TIMEOUT,
    onOutcome: (outcome, attempts) => {
      metrics.delivery(outcome, attempts);
      hooks.onDelivery?.(outcome, attempts);
    },
  });
  const handler = createAggregatorHandler({
    db,
    defaultQuota: config.DEFAULT_MONTHLY_QUOTA,
    leaseMs: config.AGGREGATOR_LEASE,
    logger,
    onCommitDuration: (seconds) => metrics.committed(seconds),
  });
  const context = runnerContext(config.AGGREGATOR_LEASE);
  const runner = new AggregatorRunner({
    db,
    queue,
    logger,
    apply: (event) => handler(event, context),
    ownerId: config.AGGREGATOR_ID ?? `${hostname()}-${process.pid}`,
    leaseMs: config.AGGREGATOR_LEASE,
    batchSize: config.AGGREGATOR_BATCH_SIZE,
    lanes: config.AGGREGATOR_LANES,
    onApplied: (result) => {
      metrics.applied(result.events, result.oldestReceivedAt, result.alertThresholds);
      if (result.alertThresholds.length > 0) delivery.notify();
      hooks.onApplied?.(result);
    },
  });
  await runner.start();
  delivery.start();
  return {
    runner,
    delivery,
    async stop() {
      // Together: delivery claims nothing more from the moment shutdown begins (the runner may take
      // seconds to finish its round and give its leases back), and finishes the sends it has out.
      await Promise.all([runner.stop(), delivery.stop()]);
      metrics.close();
    },
  };
}
