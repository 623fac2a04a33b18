import type { Attributes, BatchObservableResult } from '@opentelemetry/api';
import { loadConfigOrExit } from '../platform/config.ts';
import type { Db } from '../platform/db.ts';
import { createRuntime, type QueuelessRuntime, type Runtime, type RuntimeOptions } from './runtime.ts';
import { flagmeterMeter, METRIC_NAMES } from '../platform/telemetry/metrics.ts';
import { startTelemetry } from '../platform/telemetry/sdk.ts';

const PROBE_TIMEOUT_MS = 1_000;
const POSTGRES: Attributes = { dependency: 'postgres' };
const VALKEY: Attributes = { dependency: 'valkey' };

/** Seconds a probe took, or undefined when it failed or did not answer in time. */
async function probe(check: () => Promise<unknown>): Promise<number | undefined> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timeout')), PROBE_TIMEOUT_MS);
      }),
    ]);
    return (performance.now() - started) / 1_000;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Counts transactions and statements outside them in flight: each holds one pooled connection. */
function countConnectionsInUse(db: Db): { db: Db; inUse(): number } {
  let inUse = 0;
  const track = <T>(work: () => Promise<T>): Promise<T> => {
    inUse++;
    return work().finally(() => inUse--);
  };
  return {
    db: {
      kind: db.kind,
      query: (text, params) => track(() => db.query(text, params)),
      transaction: (work) => track(() => db.transaction(work)),
      // A subscription holds a connection of its own, outside the pool.
      listen: (channel, onMessage, onSubscribed) => db.listen(channel, onMessage, onSubscribed),
      close: () => db.close(),
    },
    inUse: () => inUse,
  };
}

/**
 * PostgreSQL and Valkey as this process sees them (probed when Prometheus scrapes, so no timer runs
 * between scrapes), and its database pool use. Wraps `runtime.db`: call it before building apps.
 */
export function observeRuntime(runtime: Runtime | QueuelessRuntime): void {
  const meter = flagmeterMeter();
  const up = meter.createObservableGauge(METRIC_NAMES.dependencyUp, {
    description: 'Whether this process reached the dependency at the last scrape (1) or not (0)',
  });
  const latency = meter.createObservableGauge(METRIC_NAMES.dependencyLatency, {
    description: 'Round trip of the last probe (SELECT 1, PING); absent while the dependency is down',
    unit: 's',
  });
  const poolSize = meter.createObservableGauge(METRIC_NAMES.dbPoolSize, { description: 'Connections the database pool may open' });
  const poolInUse = meter.createObservableGauge(METRIC_NAMES.dbPoolInUse, {
    description: 'Database connections busy with a statement or transaction (above the pool size, callers wait)',
  });
  const counted = countConnectionsInUse(runtime.db);
  runtime.db = counted.db;
  const size = runtime.db.kind === 'postgres' ? runtime.config.DATABASE_POOL_SIZE : 1;
  // Functions without a queue report PostgreSQL only: Valkey is not their dependency.
  const queue = 'queue' in runtime ? runtime.queue : undefined;
  meter.addBatchObservableCallback(
    async (result: BatchObservableResult) => {
      const probes: [Promise<number | undefined>, Attributes][] = [[probe(() => counted.db.query('SELECT 1')), POSTGRES]];
      if (queue) probes.push([probe(() => queue.ping()), VALKEY]);
      for (const [probed, attributes] of probes) {
        const seconds = await probed;
        result.observe(up, seconds === undefined ? 0 : 1, attributes);
        if (seconds !== undefined) result.observe(latency, seconds, attributes);
      }
      result.observe(poolSize, size);
      result.observe(poolInUse, counted.inUse());
    },
    [up, latency, poolSize, poolInUse],
  );
}

/**
 * A function's runtime with telemetry started first (before any app or instrument exists) and its
 * dependencies observed. `defaultMetricsPort` applies when METRICS_PORT is unset: the aggregator
 * serves on 9465 so that it can share a host with an HTTP function on 9464.
 */
type ObservedRuntimeOptions = RuntimeOptions & { defaultMetricsPort?: number };

export function createObservedRuntime(service: string, options: ObservedRuntimeOptions & { withoutQueue: true }): Promise<QueuelessRuntime>;
export function createObservedRuntime(service: string, options?: ObservedRuntimeOptions & { withoutQueue?: false }): Promise<Runtime>;
export async function createObservedRuntime(service: string, options: ObservedRuntimeOptions = {}): Promise<Runtime | QueuelessRuntime> {
  const { defaultMetricsPort, ...runtimeOptions } = options;
  const env =
    defaultMetricsPort === undefined || process.env.METRICS_PORT
      ? process.env
      : { ...process.env, METRICS_PORT: String(defaultMetricsPort) };
  const config = runtimeOptions.config ?? loadConfigOrExit(env);
  const telemetry = await startTelemetry(service, config);
  const runtime = await createRuntime(service, { ...runtimeOptions, config } as RuntimeOptions & { withoutQueue?: false });
  telemetry.announce(runtime.logger);
  observeRuntime(runtime);
  return runtime;
}
