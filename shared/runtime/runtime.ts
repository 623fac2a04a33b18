import { mkdirSync } from 'node:fs';
import { Authenticator, KeyStore } from '../domain/auth.ts';
import { type Config, ConfigError, loadConfigOrExit } from '../platform/config.ts';
import { connectPglite, connectPostgres, type Db } from '../platform/db.ts';
import { createLogger, type Logger } from '../platform/logger.ts';
import { MemoryQueue } from '../platform/queue/memory.ts';
import type { EventQueue } from '../platform/queue/types.ts';

/** What a function needs at run time, built once from the config. */
export interface Runtime {
  config: Config;
  logger: Logger;
  db: Db;
  queue: EventQueue;
  keys: KeyStore;
  auth: Authenticator;
  close(): Promise<void>;
}

/** The runtime of a function that never touches the event queue (tenants, usage): no Valkey client. */
export type QueuelessRuntime = Omit<Runtime, 'queue'>;

export interface RuntimeOptions {
  config?: Config;
  /** `npm start`: fall back to PGlite and an in-process queue when the URLs are unset. */
  embedded?: boolean;
  /** Skip the key store (functions that authenticate nothing). */
  withoutKeys?: boolean;
  /** Skip the event queue (functions that neither enqueue nor read events): VALKEY_URL is then not required. */
  withoutQueue?: boolean;
}

export async function openQueue(config: Config, logger: Logger): Promise<EventQueue> {
  if (!config.VALKEY_URL) return new MemoryQueue(config.QUEUE_PARTITIONS, config.DEDUPE_WINDOW, config.QUEUE_MAX_BACKLOG);
  // Imported here, not at the top: a bundle evaluates the Valkey client (iovalkey sets up ~400
  // command methods, ~25 ms of every start) only in the functions that open a queue.
  const { ValkeyQueue } = await import('../platform/queue/valkey.ts');
  return new ValkeyQueue({
    url: config.VALKEY_URL,
    prefix: config.VALKEY_PREFIX,
    partitions: config.QUEUE_PARTITIONS,
    dedupeWindowMs: config.DEDUPE_WINDOW,
    maxBacklog: config.QUEUE_MAX_BACKLOG,
    commandTimeoutMs: config.VALKEY_COMMAND_TIMEOUT,
    logger,
  });
}

export async function openDb(config: Config): Promise<Db> {
  if (config.DATABASE_URL)
    return connectPostgres(config.DATABASE_URL, { max: config.DATABASE_POOL_SIZE, statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT });
  mkdirSync(config.DATA_DIR, { recursive: true });
  return connectPglite(`${config.DATA_DIR}/pglite`);
}

export function createRuntime(service: string, options: RuntimeOptions & { withoutQueue: true }): Promise<QueuelessRuntime>;
export function createRuntime(service: string, options?: RuntimeOptions & { withoutQueue?: false }): Promise<Runtime>;
export async function createRuntime(service: string, options: RuntimeOptions = {}): Promise<Runtime | QueuelessRuntime> {
  const config = options.config ?? loadConfigOrExit();
  const logger = createLogger(service, config);
  if (!options.embedded) {
    for (const name of options.withoutQueue ? (['DATABASE_URL'] as const) : (['DATABASE_URL', 'VALKEY_URL'] as const)) {
      if (!config[name]) {
        const error = new ConfigError(`${name}: required (only npm start runs without it, on embedded backends)`);
        logger.fatal(error.message);
        process.exit(78);
      }
    }
  }
  const db = await openDb(config);
  const queue = options.withoutQueue ? undefined : await openQueue(config, logger);
  const keys = new KeyStore(db, logger);
  if (!options.withoutKeys) await keys.start();
  const runtime: QueuelessRuntime = {
    config,
    logger,
    db,
    keys,
    auth: new Authenticator(keys, config.ADMIN_TOKEN, { trustProxy: config.TRUST_PROXY }),
    async close() {
      keys.stop();
      await queue?.close();
      await db.close();
    },
  };
  return queue ? { ...runtime, queue } : runtime;
}
