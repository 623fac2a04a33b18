import pino, { type Logger } from 'pino';
import type { Config } from './config.ts';

export type { Logger };

/** JSON logger with the fields every FlagMeter log line carries; secrets are redacted by path. */
export function createLogger(service: string, config: Pick<Config, 'LOG_LEVEL' | 'NODE_ENV'>): Logger {
  return pino({
    level: config.LOG_LEVEL,
    base: { service, environment: config.NODE_ENV },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', 'key', 'token', 'adminToken', 'webhookUrl'],
      censor: '[redacted]',
    },
  });
}
