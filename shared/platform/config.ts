import { readFileSync } from 'node:fs';
import { z } from 'zod';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `30s`, `5m`, `24h`, `7d` (or a bare number of milliseconds) into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * DURATION_UNITS[match[2] ?? 'ms']!;
}

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined || ms <= 0) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration such as 500ms, 30s, 5m, 24h or 7d' });
        return z.NEVER;
      }
      return ms;
    });

const boolean = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' })
    .optional()
    .transform((value) => (value === undefined ? fallback : ['true', '1', 'yes'].includes(value)));

const port = (fallback: number) => z.coerce.number().int().min(0).max(65_535).default(fallback);
const optionalUrl = z
  .url()
  .optional()
  .or(z.literal('').transform(() => undefined));

const configSchema = z.object({
  NODE_ENV: z.string().default('development'),
  PORT: port(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(200).default(10),
  DATABASE_STATEMENT_TIMEOUT: duration('30s'),
  VALKEY_URL: z
    .string()
    .regex(/^(redis|rediss|valkey|valkeys):\/\//, 'must be a redis:// or valkey:// URL')
    .optional(),
  VALKEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_-]{1,64}$/, 'must be 1-64 chars of A-Z a-z 0-9 : _ -')
    .default('fm'),
  VALKEY_COMMAND_TIMEOUT: duration('800ms'),
  ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  DEFAULT_MONTHLY_QUOTA: z.coerce.bigint().min(1n, 'must be at least 1').default(1_000_000n),
  DEDUPE_WINDOW: duration('24h'),
  QUEUE_PARTITIONS: z.coerce.number().int().min(1).max(256).default(8),
  QUEUE_MAX_BACKLOG: z.coerce.number().int().min(1).default(1_000_000),
  AGGREGATOR_ID: z.string().min(1).max(128).optional(),
  AGGREGATOR_BATCH_SIZE: z.coerce.number().int().min(1).max(100_000).default(100),
  AGGREGATOR_LEASE: duration('10s'),
  AGGREGATOR_LANES: z.coerce.number().int().min(1).max(16).default(2),
  SLACK_WEBHOOK_URL: optionalUrl,
  WEBHOOK_ALLOWED_HOSTS: z
    .string()
    .default('hooks.slack.com')
    .transform((list) =>
      list
        .split(',')
        .map((host) => host.trim().toLowerCase())
        .filter(Boolean),
    ),
  WEBHOOK_ALLOW_INSECURE: boolean(false),
  ALERT_DELIVERY_GIVE_UP: duration('24h'),
  ALERT_RETRY_BASE: duration('1s'),
  WEBHOOK_TIMEOUT: duration('5s'),
  PUBLIC_URL: z.url().default('http://127.0.0.1:3000'),
  METRICS_PORT: port(9464),
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  // Behind Traefik every request comes from the proxy: then refused credentials are counted per
  // client by the last X-Forwarded-For entry (the one the proxy appended), not per proxy address.
  TRUST_PROXY: boolean(false),
  // On SIGTERM an HTTP function keeps serving this long before it closes its listener: a proxy that
  // learns of stopped tasks by polling (Traefik's Swarm provider) must stop sending it requests first.
  // At most 10 s: the delay and the drain after it must fit the 15 s a stop may take.
  SHUTDOWN_DELAY: z
    .string()
    .default('0ms')
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined || ms > 10_000) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration from 0ms to 10s, such as 3s' });
        return z.NEVER;
      }
      return ms;
    }),
  // Off: no metrics endpoint and every instrument a no-op (for measuring what telemetry costs).
  TELEMETRY_ENABLED: boolean(true),
  LOKI_URL: optionalUrl,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATA_DIR: z.string().min(1).default('.data'),
  USAGE_CACHE_TTL: z
    .string()
    .default('250ms')
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration such as 0ms or 250ms' });
        return z.NEVER;
      }
      return ms;
    }),
});

export type Config = z.infer<typeof configSchema>;
/** Every variable the config reads (each is in .env.example and the README's table). */
export const CONFIG_VARIABLES = Object.keys(configSchema.shape) as (keyof Config)[];

/** Variables that may instead be given as a path in `<NAME>_FILE` (Docker secrets). */
const FILE_VARIABLES = ['DATABASE_URL', 'VALKEY_URL', 'ADMIN_TOKEN', 'SLACK_WEBHOOK_URL'] as const;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads `*_FILE` secrets, validates every variable and names the first bad ones in the error. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const resolved: Record<string, string | undefined> = { ...env };
  for (const name of FILE_VARIABLES) {
    const file = env[`${name}_FILE`];
    if (file && !env[name]) {
      try {
        resolved[name] = readFileSync(file, 'utf8').trim();
      } catch (error) {
        throw new ConfigError(`${name}_FILE: cannot read ${file}: ${(error as Error).message}`);
      }
    }
  }
  for (const [name, value] of Object.entries(resolved)) {
    if (value === '') resolved[name] = undefined;
  }
  const parsed = configSchema.safeParse(resolved);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** Loads the config or stops the process with a message naming the bad variable. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    process.stderr.write(`${JSON.stringify({ level: 'fatal', msg: (error as Error).message })}\n`);
    process.exit(78);
  }
}
