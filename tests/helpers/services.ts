import { randomBytes } from 'node:crypto';
import { Redis } from 'iovalkey';
import postgres from 'postgres';
import { connectPostgres, type Db } from '../../shared/platform/db.ts';
import { migrate } from '../../shared/platform/migrate.ts';
import { createLogger } from '../../shared/platform/logger.ts';
import { ValkeyQueue } from '../../shared/platform/queue/valkey.ts';

/** Where the real services are; CI sets FLAGMETER_REQUIRE_SERVICES=1 so that absence fails, never skips. */
export const ADMIN_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const VALKEY_URL = process.env.VALKEY_URL ?? 'redis://127.0.0.1:6379';
export const REQUIRE_SERVICES = process.env.FLAGMETER_REQUIRE_SERVICES === '1';

async function reachable(): Promise<boolean> {
  const sql = postgres(ADMIN_DATABASE_URL, { max: 1, connect_timeout: 3, onnotice: () => {} });
  const redis = new Redis(VALKEY_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await sql`SELECT 1`;
    await redis.connect();
    await redis.ping();
    return true;
  } catch (error) {
    if (REQUIRE_SERVICES) throw new Error(`FLAGMETER_REQUIRE_SERVICES=1 but a service is unreachable: ${(error as Error).message}`);
    return false;
  } finally {
    await sql.end({ timeout: 1 });
    redis.disconnect();
  }
}

/** True when PostgreSQL and Redis answer; throws under FLAGMETER_REQUIRE_SERVICES=1 when they do not. */
export const servicesAvailable: boolean = await reachable();

export interface TestDatabase {
  url: string;
  db: Db;
  drop(): Promise<void>;
}

/** A fresh, migrated database of its own for one test file. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `fm_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  const db = connectPostgres(url.toString(), { max: 5 });
  await migrate(db);
  return {
    url: url.toString(),
    db,
    async drop() {
      await db.close();
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 1 });
    },
  };
}

/**
 * A key prefix of its own, so test files never see each other's streams. Cleanup deletes the streams
 * and counters by name (a SCAN would walk every key on the server); dedupe keys expire on their own
 * (tests run with a short DEDUPE_WINDOW).
 */
export function createKeySpace(): { prefix: string; clear(): Promise<void> } {
  const prefix = `fmt_${randomBytes(5).toString('hex')}`;
  return {
    prefix,
    async clear() {
      const redis = new Redis(VALKEY_URL, { maxRetriesPerRequest: 1 });
      redis.on('error', () => {});
      try {
        const keys = Array.from({ length: 256 }, (_, p) => [`${prefix}:s:${p}`, `${prefix}:b:${p}`, `${prefix}:g:${p}`]).flat();
        await redis.del(...keys);
      } finally {
        redis.disconnect();
      }
    },
  };
}

export const uniqueName = (label: string): string => `${label}-${randomBytes(4).toString('hex')}`;

/**
 * A ValkeyQueue on the test server under `prefix`, once it answers: the queue has no offline queue,
 * so a call made before its connection stands would fail rather than wait.
 */
export async function openValkeyQueue(prefix: string, options: { partitions: number; dedupeWindowMs: number }): Promise<ValkeyQueue> {
  const queue = new ValkeyQueue({
    url: VALKEY_URL,
    prefix,
    partitions: options.partitions,
    dedupeWindowMs: options.dedupeWindowMs,
    maxBacklog: 10_000_000,
    commandTimeoutMs: 10_000,
    logger: createLogger('test', { LOG_LEVEL: 'error', NODE_ENV: 'test' }),
  });
  const deadline = Date.now() + 10_000;
  while (
    !(await queue.ping().then(
      () => true,
      () => false,
    ))
  ) {
    if (Date.now() > deadline) throw new Error('valkey never connected');
    await new Promise((done) => setTimeout(done, 10));
  }
  return queue;
}
