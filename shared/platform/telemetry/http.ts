import type { Attributes } from '@opentelemetry/api';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../logger.ts';
import { httpMetrics } from './metrics.ts';

const UNMATCHED = 'unmatched';

// Module-wide, so that apps sharing a process (npm start) share one object per label set: the
// request-duration series are keyed by the object.
const labelSets = new Map<string, Map<string, Map<number, Attributes>>>();
const labelsFor = (route: string, method: string, status: number): Attributes => {
  let byMethod = labelSets.get(route);
  if (!byMethod) labelSets.set(route, (byMethod = new Map()));
  let byStatus = byMethod.get(method);
  if (!byStatus) byMethod.set(method, (byStatus = new Map()));
  let labels = byStatus.get(status);
  if (!labels) byStatus.set(status, (labels = { route, method, status_code: status }));
  return labels;
};

/**
 * Records every response in the request-duration histogram, labelled by route pattern (never the
 * raw path: bounded cardinality), method and status. Label sets are made once per
 * route/method/status and reused, so the hot path allocates none. At debug level it also logs one
 * line per request, carrying the request id of Fastify's child logger.
 */
export function installHttpMetrics(app: FastifyInstance): void {
  const metrics = httpMetrics();
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url;
    // Unmatched paths share one label set whatever their method: scanners must not grow the series.
    const labels =
      route === undefined ? labelsFor(UNMATCHED, UNMATCHED, reply.statusCode) : labelsFor(route, request.method, reply.statusCode);
    const ms = reply.elapsedTime;
    metrics.record(ms / 1_000, labels);
    if ((request.log as Logger).isLevelEnabled('debug')) {
      request.log.debug(
        { route: labels.route, method: request.method, status: reply.statusCode, ms: Math.round(ms * 100) / 100 },
        'request completed',
      );
    }
    done();
  });
}
