import { DataPointType } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { METRIC_NAMES, RequestDurations } from './metrics.ts';

describe('RequestDurations (the request-duration histogram the exporter reads)', () => {
  it('counts each duration into the first bucket whose inclusive upper bound holds it, per label set', async () => {
    const durations = new RequestDurations([0.001, 0.01, 0.1]);
    const ok = { route: '/api/events', method: 'POST', status_code: 202 };
    const bad = { route: '/api/events', method: 'POST', status_code: 400 };
    for (const seconds of [0.0005, 0.001, 0.002, 0.01, 0.5]) durations.record(seconds, ok);
    durations.record(0.05, bad);

    const { resourceMetrics, errors } = await durations.collect();
    expect(errors).toEqual([]);
    const [metric] = resourceMetrics.scopeMetrics[0]!.metrics;
    expect(metric).toMatchObject({
      descriptor: { name: METRIC_NAMES.httpRequestDuration, unit: 's' },
      dataPointType: DataPointType.HISTOGRAM,
    });
    expect(metric!.dataPoints.map((point) => ({ attributes: point.attributes, value: point.value }))).toEqual([
      {
        attributes: ok,
        value: { buckets: { boundaries: [0.001, 0.01, 0.1], counts: [2, 2, 0, 1] }, count: 5, sum: 0.5135, min: 0.0005, max: 0.5 },
      },
      {
        attributes: bad,
        value: { buckets: { boundaries: [0.001, 0.01, 0.1], counts: [0, 0, 1, 0] }, count: 1, sum: 0.05, min: 0.05, max: 0.05 },
      },
    ]);
  });
});
