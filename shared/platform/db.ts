import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import type { PGlite } from '@electric-sql/pglite';
import type { Logger } from './logger.ts';

export type Row = Record<string, unknown>;

/** Raw parameterised SQL; the same text runs on PostgreSQL (postgres.js) and embedded PGlite. */
export interface Queryable {
  query<T = Row>(text: string, params?: readonly unknown[]): Promise<T[]>;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /**
   * `unbounded`: no deadline on the answer (migrations: a long DDL statement is not a dead
   * connection, which TCP keepalive still notices). Otherwise as long as a statement may run, plus grace.
   */
  transaction<T>(work: (tx: Queryable) => Promise<T>, options?: { unbounded?: boolean }): Promise<T>;
  /**
   * Calls `onMessage` with the payload of each NOTIFY on `channel`, and `onSubscribed` each time the
   * subscription starts, the first time and after a lost connection (what was sent in between is
   * lost). Resolves to the function that ends it.
   */
  listen(channel: string, onMessage: (payload: string) => void, onSubscribed: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

const INT8 = 20;
const DATE = 1082;
const JSON_OID = 114;
const JSONB = 3802;

let driverGuardInstalled = false;

/**
 * postgres.js 3.4.9 can write to a socket it has already dropped when a connection is cut at the
 * wrong moment (connection.js nextWrite, porsager/postgres#1154/#1208). The TypeError is thrown from a
 * setImmediate callback, out of reach of any await, and would end the process. The connection is
 * gone either way and its queries fail through the driver's close handling (so a rollup transaction
 * is retried, never half-applied); only that exact error is absorbed, everything else still crashes.
 */
export function isDroppedSocketWrite(error: unknown): boolean {
  if (error instanceof TypeError) {
    return /Cannot read properties of null \(reading 'write'\)/.test(error.message) && (error.stack ?? '').includes('nextWrite');
  }
  // The same dropped socket can still report the reset, after the driver removed its listeners:
  // a bare socket error nobody listens for. Every socket of ours has an error handler.
  const { code, syscall } = error as NodeJS.ErrnoException;
  return error instanceof Error && (code === 'ECONNRESET' || code === 'EPIPE') && (syscall === 'read' || syscall === 'write');
}

function guardAgainstDroppedSocketWrites(): void {
  if (driverGuardInstalled) return;
  driverGuardInstalled = true;
  process.on('uncaughtException', (error) => {
    if (isDroppedSocketWrite(error)) {
      process.stderr.write(
        `${JSON.stringify({ level: 'warn', msg: 'a dropped database connection reported late; its queries fail and are retried', err: error.message })}\n`,
      );
      return;
    }
    process.stderr.write(
      `${JSON.stringify({ level: 'fatal', msg: 'uncaught exception', err: { message: error.message, stack: error.stack } })}\n`,
    );
    process.exit(1);
  });
}

/** No answer from PostgreSQL in time: the connection may be dead, and the statement's outcome is unknown. */
export class DatabaseTimeoutError extends Error {
  override name = 'DatabaseTimeoutError';
  readonly code = 'DATABASE_TIMEOUT';
}

export interface PostgresOptions {
  max?: number;
  connectTimeoutSeconds?: number;
  /**
   * Longest a statement may run (the server cancels it) and, with a little grace, longest a query
   * or a whole transaction waits for its answer here: a connection that died without a word (no
   * FIN, no RST) fails the caller instead of holding it for ever.
   */
  statementTimeoutMs?: number;
}

const DEADLINE_GRACE_MS = 2_000;

/** Rejects with DatabaseTimeoutError when `work` has not settled within `ms` (it is left to settle on its own). */
function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  if (!Number.isFinite(ms)) return work;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DatabaseTimeoutError(`no answer from PostgreSQL within ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/**
 * int8 comes back as bigint (sums are exact), date as 'YYYY-MM-DD' (periods are calendar dates).
 * Bigint parameters are passed as strings by callers.
 */
export function connectPostgres(url: string, options: PostgresOptions = {}): Db {
  guardAgainstDroppedSocketWrites();
  const statementTimeoutMs = options.statementTimeoutMs ?? 30_000;
  const sql = postgres(url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 60,
    // Probes idle sockets, so a connection that died silently is noticed in seconds, not hours.
    keep_alive: 5,
    connection: {
      statement_timeout: statementTimeoutMs,
      // A client that vanished mid-transaction must not hold its locks (the migration lock among them).
      idle_in_transaction_session_timeout: statementTimeoutMs,
    },
    onnotice: () => {},
    types: {
      bigint: {
        to: INT8,
        from: [INT8],
        serialize: (value: bigint | string | number) => String(value),
        parse: (value: string) => BigInt(value),
      },
      date: { to: DATE, from: [DATE], serialize: (value: string) => value, parse: (value: string) => value },
      // Callers pass JSON parameters already serialised (the same text PGlite takes); don't quote them again.
      json: {
        to: JSONB,
        from: [JSON_OID, JSONB],
        serialize: (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value)),
        parse: (value: string) => JSON.parse(value) as unknown,
      },
    },
  });
  const run = <T>(client: postgres.Sql | postgres.TransactionSql, text: string, params?: readonly unknown[]) =>
    client.unsafe(text, (params ?? []) as postgres.ParameterOrJSON<never>[], { prepare: true }) as unknown as Promise<T[]>;
  const deadlineMs = statementTimeoutMs + DEADLINE_GRACE_MS;
  return {
    kind: 'postgres',
    query: (text, params) => withDeadline(run(sql, text, params), deadlineMs),
    transaction: (work, options) =>
      withDeadline(
        sql.begin((tx) => work({ query: (text, params) => run(tx, text, params) })) as Promise<never>,
        options?.unbounded ? Number.POSITIVE_INFINITY : deadlineMs,
      ),
    // postgres.js listens on a connection of its own and subscribes again after it reconnects.
    listen: async (channel, onMessage, onSubscribed) => (await sql.listen(channel, onMessage, onSubscribed)).unlisten,
    close: () => sql.end({ timeout: 5 }),
  };
}

export interface RetryOptions {
  /** Longest one attempt may take before it counts as failed (its outcome unknown) and is retried. */
  attemptTimeoutMs?: number;
  maxBackoffMs?: number;
  /** Stops retrying (the last error is thrown) once this returns true. */
  cancelled?: () => boolean;
}

/**
 * Runs a start-up step until it succeeds, with exponential backoff and jitter, each attempt bounded
 * in time. A process comes up as soon as its database is steady rather than hanging or exiting on
 * the first dropped connection; the steps it retries are idempotent (see docs/reliability.md).
 */
export async function retryUntilDone<T>(what: string, logger: Logger, work: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const { attemptTimeoutMs = 45_000, maxBackoffMs = 5_000 } = options;
  let backoffMs = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await withDeadline(work(), attemptTimeoutMs);
    } catch (error) {
      if (options.cancelled?.()) throw error;
      const waitMs = Math.round(backoffMs * (0.5 + Math.random()));
      logger.warn({ err: (error as Error).message, attempt, retryInMs: waitMs }, `${what} failed; retrying`);
      await sleep(waitMs);
      backoffMs = Math.min(maxBackoffMs, backoffMs * 2);
    }
  }
}

/** Embedded PostgreSQL (PGlite) for `npm start` without DATABASE_URL; data kept under `dataDir`. */
export async function connectPglite(dataDir: string | undefined): Promise<Db> {
  const { PGlite } = await import('@electric-sql/pglite');
  const pg: PGlite = await PGlite.create({
    ...(dataDir ? { dataDir } : {}),
    parsers: { [INT8]: (value: string) => BigInt(value), [DATE]: (value: string) => value },
  });
  const run = async <T>(client: Pick<PGlite, 'query'>, text: string, params?: readonly unknown[]): Promise<T[]> =>
    (await client.query<T>(text, params ? [...params] : [])).rows;
  let queue: Promise<unknown> = Promise.resolve();
  // PGlite is one connection: serialise transactions so statements of two never interleave.
  const exclusive = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work, work);
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    kind: 'pglite',
    query: (text, params) => exclusive(() => run(pg, text, params)),
    transaction: (work) => exclusive(() => pg.transaction((tx) => work({ query: (text, params) => run(tx, text, params) }))),
    listen: async (channel, onMessage, onSubscribed) => {
      const unlisten = await exclusive(() => pg.listen(channel, onMessage));
      onSubscribed();
      return () => exclusive(unlisten);
    },
    close: () => pg.close(),
  };
}
