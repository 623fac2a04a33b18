import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { startAggregator } from './service.ts';

// 9465, not the HTTP functions' 9464: the stack's health check probes the aggregator there.
const runtime = await createObservedRuntime('aggregator', { withoutKeys: true, defaultMetricsPort: 9465 });
const aggregator = await startAggregator(runtime);
runtime.logger.info({ partitions: runtime.queue.partitions }, 'aggregator running');

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  runtime.logger.info({ signal }, 'finishing the batch in flight');
  setTimeout(() => process.exit(1), 15_000).unref();
  aggregator
    .stop()
    .then(() => runtime.close())
    .then(() => process.exit(0), () => process.exit(1));
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
