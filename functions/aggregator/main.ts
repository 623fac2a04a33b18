import { ConfigError } from '../../shared/platform/config.ts';
import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { stopOnSignal } from '../../shared/runtime/shutdown.ts';
import { startAggregator } from './service.ts';

// 9465, not the HTTP functions' 9464: the stack's health check probes the aggregator there.
const runtime = await createObservedRuntime('aggregator', { withoutKeys: true, defaultMetricsPort: 9465 });
const aggregator = await startAggregator(runtime).catch((error: Error) => {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${JSON.stringify({ level: 'fatal', service: 'aggregator', msg: error.message })}\n`);
  process.exit(78);
});
runtime.logger.info({ partitions: runtime.queue.partitions }, 'aggregator running');

stopOnSignal(runtime.logger, 'finishing the batch in flight', [() => aggregator.stop(), () => runtime.close()]);
