import middy, { type MiddlewareObj } from '@middy/core';
import type { Context } from 'aws-lambda';
import type { Logger } from '../../shared/platform/logger.ts';
import {
  type AggregatorDeps,
  type AggregatorEvent,
  type AggregatorResult,
  applyBatch,
  CheckpointMovedError,
  KnownTenants,
  StaleOwnerError,
} from './apply.ts';

type Middleware = MiddlewareObj<AggregatorEvent, AggregatorResult, Error, Context>;

const batchSummary = (event: AggregatorEvent): { partitions: number[]; entries: number } => ({
  partitions: event.batches.map((batch) => batch.partition),
  entries: event.batches.reduce((sum, batch) => sum + batch.entries.length, 0),
});

/** Times every commit, failed or not, for the commit-duration histogram. */
function commitTiming(record: (seconds: number) => void): Middleware {
  const startedAt = new WeakMap<object, number>();
  const stop = (request: object): void => {
    const started = startedAt.get(request);
    if (started !== undefined) record((performance.now() - started) / 1_000);
  };
  return {
    before: (request) => {
      startedAt.set(request, performance.now());
    },
    after: stop,
    onError: stop,
  };
}

/**
 * Sorts failed commits: a taken-over partition or a checkpoint that moved past the batch is an
 * expected outcome the runner acts on (nothing was applied either way), so it is left to the runner;
 * anything else is logged with the batch it concerns before the runner retries it.
 */
function errorClassification(logger: Logger): Middleware {
  return {
    onError: (request) => {
      const { error, event } = request;
      if (error instanceof StaleOwnerError || error instanceof CheckpointMovedError) return;
      logger.error({ err: error?.message, ...batchSummary(event) }, 'aggregator commit failed; nothing of the batch was applied');
    },
  };
}

export interface AggregatorHandlerOptions extends AggregatorDeps {
  logger: Logger;
  onCommitDuration?: (seconds: number) => void;
}

/**
 * The aggregator function: a middy handler over one batch of stream records (the runner's read
 * round, or a Lambda event source's batch). Middleware carries what is not the commit itself.
 */
export function createAggregatorHandler(options: AggregatorHandlerOptions) {
  const { logger, onCommitDuration, ...given } = options;
  const deps: AggregatorDeps = { ...given, knownTenants: given.knownTenants ?? new KnownTenants() };
  return middy<AggregatorEvent, AggregatorResult, Error, Context>({ timeoutEarlyInMillis: 0 })
    .use(commitTiming(onCommitDuration ?? (() => undefined)))
    .use(errorClassification(logger))
    .handler((event) => applyBatch(deps, event));
}
