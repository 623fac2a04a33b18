import { hostname } from 'node:os';
import { createRuntime } from '../../shared/runtime.ts';
import { createAggregatorHandler } from './handler.ts';
import { AggregatorRunner } from './runner.ts';

const runtime = await createRuntime('aggregator', { withoutKeys: true });
const { config, logger } = runtime;
const handler = createAggregatorHandler({ db: runtime.db, defaultQuota: config.DEFAULT_MONTHLY_QUOTA });
const runner = new AggregatorRunner({
  db: runtime.db,
  queue: runtime.queue,
  logger,
  apply: (event) => handler(event, {} as never),
  ownerId: config.AGGREGATOR_ID ?? `${hostname()}-${process.pid}`,
  leaseMs: config.AGGREGATOR_LEASE,
  batchSize: config.AGGREGATOR_BATCH_SIZE,
});
await runner.start();
logger.info({ partitions: runtime.queue.partitions }, 'aggregator running');

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'finishing the batch in flight');
  runner
    .stop()
    .then(() => runtime.close())
    .then(() => process.exit(0), () => process.exit(1));
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
