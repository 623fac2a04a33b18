import { type Attributes, type BatchObservableResult, type HrTime, type Meter, ValueType, metrics } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, type CollectionResult, DataPointType, type MetricProducer } from '@opentelemetry/sdk-metrics';

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

interface DurationSeries {
  attributes: Attributes;
  counts: number[];
  count: number;
  sum: number;
  min: number;
  max: number;
}

const hrTimeNow = (): HrTime => {
  const ms = performance.timeOrigin + performance.now();
  return [Math.floor(ms / 1_000), Math.round((ms % 1_000) * 1_000_000)];
};

/**
 * The request-duration histogram, bucketed here and handed to the Prometheus exporter as a metric
 * producer at scrape time. The SDK's own histogram hashes its attributes on every record (sorting and
 * serialising the label names): 2-3 µs a request, a tenth of what ingest spends on one. Label sets
 * are the caller's reused objects (one per route, method and status), so a record is one map lookup,
 * a bucket search and four additions. The series and buckets it exports are the same as before.
 */
export class RequestDurations implements MetricProducer {
  private readonly series = new Map<Attributes, DurationSeries>();
  private readonly startTime = hrTimeNow();

  constructor(private readonly boundaries: readonly number[]) {}

  record(seconds: number, attributes: Attributes): void {
    let series = this.series.get(attributes);
    if (!series) {
      series = { attributes, counts: new Array(this.boundaries.length + 1).fill(0), count: 0, sum: 0, min: seconds, max: seconds };
      this.series.set(attributes, series);
    }
    let bucket = 0;
    while (bucket < this.boundaries.length && seconds > this.boundaries[bucket]!) bucket++;
    series.counts[bucket]!++;
    series.count++;
    series.sum += seconds;
    if (seconds < series.min) series.min = seconds;
    if (seconds > series.max) series.max = seconds;
  }

  async collect(): Promise<CollectionResult> {
    const endTime = hrTimeNow();
    return {
      resourceMetrics: {
        // The exporter labels what producers hand it with the SDK's resource, not this one.
        resource: resourceFromAttributes({}),
        scopeMetrics: [
          {
            scope: { name: 'flagmeter' },
            metrics: [
              {
                descriptor: {
                  name: METRIC_NAMES.httpRequestDuration,
                  description:
                    'HTTP requests by route (the route pattern, "unmatched" for 404s), method and status code; _count is the request count',
                  unit: 's',
                  valueType: ValueType.DOUBLE,
                },
                aggregationTemporality: AggregationTemporality.CUMULATIVE,
                dataPointType: DataPointType.HISTOGRAM,
                dataPoints: [...this.series.values()].map((series) => ({
                  startTime: this.startTime,
                  endTime,
                  attributes: series.attributes,
                  value: {
                    buckets: { boundaries: [...this.boundaries], counts: [...series.counts] },
                    count: series.count,
                    sum: series.sum,
                    min: series.min,
                    max: series.max,
                  },
                })),
              },
            ],
          },
        ],
      },
      errors: [],
    };
  }
}

/** The process's request durations: every app of the process records here, the exporter reads it. */
export const requestDurations = new RequestDurations(LATENCY_BUCKETS);

/** Label sets must be the same object for the same labels (series are keyed by the object). */
export function httpMetrics(): HttpMetrics {
  return requestDurations;
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
