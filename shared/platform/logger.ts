import pino, { type DestinationStream, type Logger } from 'pino';
import { pinoLoki } from 'pino-loki';
import type { Config } from './config.ts';

export type { Logger };

// Loki batches: one push a second at most, and a bounded buffer (oldest lines dropped) while Loki is away.
const LOKI_BATCH_SECONDS = 1;
const LOKI_MAX_BUFFERED_LINES = 10_000;
const LOKI_PUSH_TIMEOUT_MS = 5_000;

/**
 * Paths never written: credentials as request headers, API keys, the admin token and webhook URLs
 * (a Slack webhook URL is itself a secret), at the top level and one object down.
 */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'key',
  'token',
  'adminToken',
  'apiKey',
  'webhookUrl',
  'slackWebhookUrl',
  '*.authorization',
  '*.key',
  '*.token',
  '*.adminToken',
  '*.apiKey',
  '*.webhookUrl',
  '*.slackWebhookUrl',
];

/**
 * pino-loki's batch timer keeps the event loop alive, so a short script (the migrate job) would
 * never exit; its timers are unref'd and the buffer is flushed when the loop runs dry instead.
 */
function lokiStream(url: string, labels: Record<string, string>): DestinationStream {
  const setIntervalRef = globalThis.setInterval;
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => setIntervalRef(...args).unref()) as typeof setInterval;
  let stream: ReturnType<typeof pinoLoki>;
  try {
    stream = pinoLoki({
      host: url,
      labels,
      // The level name as pino writes it (our formatter writes names, which pino-loki's numeric map misses).
      propsToLabels: ['level'],
      // pino-loki reads `time` as epoch ms; ours is ISO text (still in the line), so Loki stamps the push.
      replaceTimestamp: true,
      batching: { interval: LOKI_BATCH_SECONDS, maxBufferSize: LOKI_MAX_BUFFERED_LINES },
      timeout: LOKI_PUSH_TIMEOUT_MS,
      // A Loki outage must not flood stderr with one error per batch.
      silenceErrors: true,
    });
  } finally {
    globalThis.setInterval = setIntervalRef;
  }
  process.once('beforeExit', () => stream.end());
  return stream;
}

/**
 * JSON logger with the fields every FlagMeter log line carries; secrets are redacted by path.
 * With `LOKI_URL` set, lines also go to Loki from this process (an in-process stream, not pino's
 * worker transport, which esbuild bundles cannot load), batched so that logging never waits on it.
 */
export function createLogger(service: string, config: Pick<Config, 'LOG_LEVEL' | 'NODE_ENV'> & Partial<Pick<Config, 'LOKI_URL'>>): Logger {
  const options: pino.LoggerOptions = {
    level: config.LOG_LEVEL,
    base: { service, environment: config.NODE_ENV },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (!config.LOKI_URL) return pino(options);
  const loki = lokiStream(config.LOKI_URL, { service, environment: config.NODE_ENV });
  return pino(
    options,
    pino.multistream([
      { level: config.LOG_LEVEL, stream: pino.destination(1) },
      { level: config.LOG_LEVEL, stream: loki },
    ]),
  );
}
