import { metrics } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import { requestDurations } from './metrics.ts';

export type TelemetryConfig = Pick<Config, 'METRICS_HOST' | 'METRICS_PORT' | 'TELEMETRY_ENABLED' | 'NODE_ENV'>;

export interface Telemetry {
  /** Where Prometheus scrapes this process; undefined when telemetry is off or the port was taken. */
  readonly metricsUrl: string | undefined;
  /** Logs where metrics are served, or why they are not (the logger exists only after start). */
  announce(logger: Logger): void;
  shutdown(): Promise<void>;
}

/**
 * Starts OpenTelemetry's metrics SDK with a Prometheus endpoint. Call it before building any app: OTel's
 * metrics API has no proxy meter, so instruments made before the provider exists stay no-ops.
 * Metrics only — no auto-instrumentation (it does not survive esbuild bundling and costs the hot
 * path); HTTP and domain metrics are recorded by hand.
 */
export async function startTelemetry(service: string, config: TelemetryConfig): Promise<Telemetry> {
  if (!config.TELEMETRY_ENABLED) {
    return {
      metricsUrl: undefined,
      announce: (logger) => logger.info('telemetry off (TELEMETRY_ENABLED=false)'),
      shutdown: async () => {},
    };
  }
  let listenError: Error | undefined;
  const exporter = await new Promise<PrometheusExporter>((resolve) => {
    const created: PrometheusExporter = new PrometheusExporter(
      {
        host: config.METRICS_HOST,
        port: config.METRICS_PORT,
        // Every series would otherwise carry otel_scope_name/version labels that say nothing here.
        withoutScopeInfo: true,
        metricProducers: [requestDurations],
      },
      (error) => {
        listenError = error ?? undefined;
        resolve(created);
      },
    );
  });
  // A meter provider alone, not the NodeSDK: FlagMeter records metrics only, and the SDK would also
  // register a context manager, propagators and tracer and logger providers that nothing here uses.
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: service, 'deployment.environment.name': config.NODE_ENV }),
    readers: [exporter],
  });
  metrics.setGlobalMeterProvider(provider);
  const host = config.METRICS_HOST.includes(':') ? `[${config.METRICS_HOST}]` : config.METRICS_HOST;
  const metricsUrl = listenError ? undefined : `http://${host}:${config.METRICS_PORT}/metrics`;
  return {
    metricsUrl,
    announce(logger) {
      // A taken port costs the metrics, not the function: it keeps serving and says so loudly.
      if (listenError) logger.error({ err: listenError.message, port: config.METRICS_PORT }, 'metrics endpoint not started');
      else logger.info({ metricsUrl }, 'metrics endpoint listening');
    },
    shutdown: async () => {
      await provider.shutdown();
      metrics.disable();
    },
  };
}
