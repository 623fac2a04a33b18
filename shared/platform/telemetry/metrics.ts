import { type Attributes, type BatchObservableResult, type Meter, metrics } from '@opentelemetry/api';

/**
 * Every series FlagMeter exports, as Prometheus names it (docs/observability.md explains each; the
 * observability test checks the dashboard and alert rules name only these).
 */
export const METRIC_NAMES = {
  httpRequestDuration: 'flagmeter_http_request_duration_seconds',
  eventsAccepted: 'flagmeter_ingest_events_accepted_total',
  eventsDuplicate: 'flagmeter_ingest_events_duplicate_total',
  requestsRejected: 'flagmeter_ingest_requests_rejected_total',
  queueBacklog: 'flagmeter_queue_backlog_events',
  batchEvents: 'flagmeter_aggregator_batch_events',
  eventsApplied: 'flagmeter_aggregator_events_applied_total',
  commitDuration: 'flagmeter_aggregator_commit_duration_seconds',
  aggregatorLag: 'flagmeter_aggregator_lag_seconds',
  alertsCreated: 'flagmeter_alerts_created_total',
  alertDeliveries: 'flagmeter_alert_deliveries_total',
  alertDeliveryAttempts: 'flagmeter_alert_delivery_attempts',
  dependencyUp: 'flagmeter_dependency_up',
  dependencyLatency: 'flagmeter_dependency_latency_seconds',
  dbPoolSize: 'flagmeter_db_pool_size',
  dbPoolInUse: 'flagmeter_db_pool_in_use',
} as const;

// The exporter appends `_total` to counters itself; instruments are created without it.
const counterName = (name: string): string => name.replace(/_total$/, '');

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const COMMIT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH_BUCKETS = [1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000];
const ATTEMPT_BUCKETS = [1, 2, 3, 5, 10, 20, 50];

/** The global meter: a no-op until startTelemetry has run, so in-process tests pay nothing. */
export function flagmeterMeter(): Meter {
  return metrics.getMeter('flagmeter');
}

export interface HttpMetrics {
  record(seconds: number, attributes: Attributes): void;
}

export function httpMetrics(meter = flagmeterMeter()): HttpMetrics {
  const duration = meter.createHistogram(METRIC_NAMES.httpRequestDuration, {
    description: 'HTTP requests by route (the route pattern, "unmatched" for 404s), method and status code; _count is the request count',
    unit: 's',
    advice: { explicitBucketBoundaries: LATENCY_BUCKETS },
  });
  return { record: (seconds, attributes) => duration.record(seconds, attributes) };
}

export interface IngestMetrics {
  accepted(events: number): void;
  duplicates(events: number): void;
  rejected(reason: string): void;
}

export function ingestMetrics(meter = flagmeterMeter()): IngestMetrics {
  const accepted = meter.createCounter(counterName(METRIC_NAMES.eventsAccepted), {
    description: 'Events answered 202 and durable in the queue (duplicates not included)',
  });
  const duplicates = meter.createCounter(counterName(METRIC_NAMES.eventsDuplicate), {
    description: 'Events answered 202 whose (tenant, id) was already seen in the dedupe window; not enqueued again',
  });
  const rejected = meter.createCounter(counterName(METRIC_NAMES.requestsRejected), {
    description: 'Ingest requests that enqueued nothing, by error code (reason)',
  });
  // Present from the start, at 0: a rate over a series that does not exist yet is no data, not 0.
  accepted.add(0);
  duplicates.add(0);
  // One attributes object per reason: the set of codes is small and fixed.
  const reasons = new Map<string, Attributes>();
  return {
    accepted: (events) => accepted.add(events),
    duplicates: (events) => duplicates.add(events),
    rejected(reason) {
      let attributes = reasons.get(reason);
      if (!attributes) reasons.set(reason, (attributes = { reason }));
      rejected.add(1, attributes);
    },
  };
}

export interface AggregatorMetrics {
  applied(events: number, oldestReceivedAt: number, alertThresholds: readonly number[]): void;
  committed(seconds: number): void;
  delivery(outcome: string, attempts: number): void;
  /** Stops observing the queue (the aggregator stopped). */
  close(): void;
}

/**
 * The aggregator's instruments. Backlog and lag are observed when Prometheus scrapes; lag reads 0
 * once the backlog is empty, so an idle aggregator does not report the last batch's lag for ever.
 */
export function aggregatorMetrics(backlog: () => Promise<number[]>, meter = flagmeterMeter()): AggregatorMetrics {
  const batchEvents = meter.createHistogram(METRIC_NAMES.batchEvents, {
    description: 'Events per committed aggregator batch',
    advice: { explicitBucketBoundaries: BATCH_BUCKETS },
  });
  const applied = meter.createCounter(counterName(METRIC_NAMES.eventsApplied), {
    description: 'Events committed into the rollups',
  });
  const commitDuration = meter.createHistogram(METRIC_NAMES.commitDuration, {
    description: 'Time to apply one batch: rollup upserts, thresholds and checkpoint in one transaction',
    unit: 's',
    advice: { explicitBucketBoundaries: COMMIT_BUCKETS },
  });
  const alertsCreated = meter.createCounter(counterName(METRIC_NAMES.alertsCreated), {
    description: 'Threshold alerts created (in the rollup transaction that crossed them)',
  });
  const deliveries = meter.createCounter(counterName(METRIC_NAMES.alertDeliveries), {
    description: 'Slack alert delivery attempts by outcome: delivered, retry, rate_limited, failed, no_webhook',
  });
  const attempts = meter.createHistogram(METRIC_NAMES.alertDeliveryAttempts, {
    description: 'Attempts an alert had taken when a delivery attempt ended, by outcome',
    advice: { explicitBucketBoundaries: ATTEMPT_BUCKETS },
  });
  const backlogGauge = meter.createObservableGauge(METRIC_NAMES.queueBacklog, {
    description: 'Events waiting in the queue, per partition',
  });
  const lagGauge = meter.createObservableGauge(METRIC_NAMES.aggregatorLag, {
    description: 'Seconds from receipt of the oldest event in the last committed batch to its commit; 0 when the backlog is empty',
    unit: 's',
  });
  applied.add(0);
  let lastLagSeconds = 0;
  const partitionAttributes: Attributes[] = [];
  const observe = async (result: BatchObservableResult): Promise<void> => {
    const counts = await backlog().catch(() => undefined);
    if (counts) {
      counts.forEach((count, partition) => result.observe(backlogGauge, count, (partitionAttributes[partition] ??= { partition })));
    }
    const waiting = counts?.some((count) => count > 0) ?? true;
    result.observe(lagGauge, waiting ? lastLagSeconds : 0);
  };
  meter.addBatchObservableCallback(observe, [backlogGauge, lagGauge]);
  const outcomes = new Map<string, Attributes>();
  return {
    applied(events, oldestReceivedAt, alertThresholds) {
      batchEvents.record(events);
      applied.add(events);
      lastLagSeconds = Math.max(0, (Date.now() - oldestReceivedAt) / 1_000);
      for (const threshold of alertThresholds) alertsCreated.add(1, { threshold: String(threshold) });
    },
    committed: (seconds) => commitDuration.record(seconds),
    delivery(outcome, attemptCount) {
      let attributes = outcomes.get(outcome);
      if (!attributes) outcomes.set(outcome, (attributes = { outcome }));
      deliveries.add(1, attributes);
      attempts.record(attemptCount, attributes);
    },
    close: () => meter.removeBatchObservableCallback(observe, [backlogGauge, lagGauge]),
  };
}
