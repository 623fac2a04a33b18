import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'iovalkey';
import { expect } from 'vitest';
import { createApiKey } from '../../shared/domain/keys.ts';
import { crossedThresholds } from '../../shared/domain/alerts.ts';
import { loadConfig } from '../../shared/platform/config.ts';
import { createRuntime, type Runtime } from '../../shared/runtime/runtime.ts';
import { upsertTenant } from '../../shared/domain/tenants.ts';
import { addTo, byTenant, rolledUp, sortedEntries, type Totals } from '../helpers/load.ts';
import { freePort, type RunningProcess, startProcess, waitFor } from '../helpers/processes.ts';
import { functionEnv } from '../helpers/runtime.ts';
import { createKeySpace, createTestDatabase, type TestDatabase } from '../helpers/services.ts';

export const aggregatorReady = (output: string): boolean => output.includes('aggregator running');

/**
 * One fault test's world: its own database and key space, an in-process runtime to look at the
 * results with, an API key, and every process it starts (all killed by `close`).
 */
export interface FaultStack {
  database: TestDatabase;
  runtime: Runtime;
  env: Record<string, string>;
  apiKey: string;
  start(entry: string, extra?: Record<string, string>): Promise<RunningProcess>;
  startAggregator(id: string, extra?: Record<string, string>): Promise<RunningProcess>;
  close(): Promise<void>;
}

export async function createFaultStack(extra: Record<string, string> = {}): Promise<FaultStack> {
  const database = await createTestDatabase();
  const keySpace = createKeySpace();
  // Metrics endpoints off: parallel processes would all reach for :9464/:9465.
  const env = functionEnv(database.url, keySpace.prefix, { TELEMETRY_ENABLED: 'false', ...extra });
  const runtime = await createRuntime('fault-test', { config: loadConfig(env) });
  const { key: apiKey } = await createApiKey(runtime, 'faults', null);
  const processes: RunningProcess[] = [];
  const start = async (entry: string, more: Record<string, string> = {}, ready?: (output: string) => boolean) => {
    const started = await startProcess(entry, { ...env, ...more }, ready ? { ready } : {});
    processes.push(started);
    return started;
  };
  return {
    database,
    runtime,
    env,
    apiKey,
    start: (entry, more) => start(entry, more),
    startAggregator: (id, more = {}) =>
      start('functions/aggregator/main.ts', { AGGREGATOR_ID: id, LOG_LEVEL: 'info', ...more }, aggregatorReady),
    async close() {
      await Promise.all(processes.map((process) => process.kill('SIGKILL')));
      await runtime.close();
      await keySpace.clear();
      await database.drop();
    },
  };
}

/** Tenants with quotas an order of magnitude apart, so a run crosses some thresholds and not others. */
export async function createTenants(
  runtime: Runtime,
  label: string,
  count: number,
  patch: (index: number) => { slackWebhookUrl?: string } = () => ({}),
): Promise<string[]> {
  const tenants = Array.from({ length: count }, (_, i) => `${label}-${i}-${Math.random().toString(36).slice(2, 8)}`);
  for (const [i, tenant] of tenants.entries()) {
    await upsertTenant(runtime.db, tenant, { monthlyQuota: 10n ** BigInt(4 + (i % 5)), ...patch(i) }, 1_000_000n);
  }
  return tenants;
}

export interface Attempt {
  at: number;
  ms: number;
  /** HTTP status, or 0 when no response came back (refused, reset). */
  status: number;
  target: string;
  retryAfter: string | null;
  /** Why no response came back (status 0). */
  error?: string;
}

export interface LoadOptions {
  apiKey: string;
  tenants: readonly string[];
  /** Ingest URLs tried in turn; a failed attempt moves to the next. */
  targets: () => readonly string[];
  label: string;
  workers?: number;
  batchSize?: number;
  /** Pause after each acknowledged batch, per worker. */
  intervalMs?: number;
  /** Pause before retrying a batch that was not acknowledged. */
  retryMs?: number;
}

const FEATURES = ['gpt-4o', 'openai/gpt-4o-mini', 'claude-3.5', 'embed', 'whisper'];

/**
 * A steady stream of ingest batches. Every event carries a unique id and every batch is retried
 * until it is answered 202, so an attempt whose answer was lost (a reset, a restart) is settled by
 * the idempotency key: in the end every event sent was accepted exactly once, and `accepted` is
 * what the rollups must hold — no more, no less.
 */
export class SteadyLoad {
  readonly accepted: Totals = new Map();
  readonly attempts: Attempt[] = [];
  ackedBatches = 0;
  private running = false;
  private workers: Promise<void>[] = [];
  private sequence = 0;
  private targetIndex = 0;
  private unexpected: string[] = [];

  constructor(private readonly options: LoadOptions) {}

  start(): this {
    this.running = true;
    this.workers = Array.from({ length: this.options.workers ?? 4 }, () => this.work());
    return this;
  }

  /** Stops making new batches and waits until every batch already begun has been acknowledged. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    expect(this.unexpected, 'answers other than 202/503/connection errors').toEqual([]);
  }

  statusesSince(at: number): number[] {
    return this.attempts.filter((attempt) => attempt.at >= at).map((attempt) => attempt.status);
  }

  private nextBatch() {
    const n = this.sequence++;
    const size = this.options.batchSize ?? 20;
    return Array.from({ length: size }, (_, i) => ({
      tenant: this.options.tenants[(n * 7 + i) % this.options.tenants.length]!,
      feature: FEATURES[(n + i) % FEATURES.length]!,
      tokens: 1 + ((n * 7919 + i * 104_729) % 997),
      id: `${this.options.label}-${n}-${i}`,
    }));
  }

  private async work(): Promise<void> {
    const { apiKey, intervalMs = 25, retryMs = 100 } = this.options;
    while (this.running) {
      const batch = this.nextBatch();
      const body = JSON.stringify(batch);
      // Until the last batch is settled: a deadline protects the test from hanging for ever.
      const deadline = Date.now() + 120_000;
      for (;;) {
        const targets = this.options.targets();
        const target = targets[this.targetIndex++ % targets.length]!;
        const started = Date.now();
        let error: string | undefined;
        const response = await fetch(`${target}/api/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(10_000),
        }).catch((failure: Error) => {
          error = `${failure.message}${failure.cause ? `: ${(failure.cause as Error).message ?? String(failure.cause)}` : ''}`;
          return undefined;
        });
        const status = response?.status ?? 0;
        this.attempts.push({
          at: started,
          ms: Date.now() - started,
          status,
          target,
          retryAfter: response?.headers.get('retry-after') ?? null,
          ...(error ? { error } : {}),
        });
        if (status === 202) {
          await response!.body?.cancel();
          // Acknowledged, whether fresh or a duplicate of an earlier attempt whose answer was lost.
          for (const event of batch) addTo(this.accepted, event.tenant, event.feature, event.tokens);
          this.ackedBatches++;
          break;
        }
        const text = response ? await response.text() : '';
        if (status !== 0 && status !== 503) this.unexpected.push(`${status} ${text.slice(0, 200)}`);
        if (Date.now() > deadline) throw new Error(`a batch was not acknowledged within 120 s (last answer ${status})`);
        await sleep(retryMs);
      }
      await sleep(intervalMs);
    }
  }
}

/**
 * The final exact reconciliation: once the backlog has drained, every rollup table holds exactly
 * the accepted events per tenant and feature, and each tenant has exactly one alert per threshold
 * its period total has reached (and none for the others).
 */
export async function expectReconciled(runtime: Runtime, tenants: readonly string[], accepted: Totals, timeoutMs = 120_000): Promise<void> {
  const expected = byTenant(accepted);
  await waitFor(
    async () => {
      const { periods } = await rolledUp(runtime.db, tenants);
      return sortedEntries(expected).every(([tenant, tokens]) => periods.get(tenant) === tokens);
    },
    { timeoutMs, intervalMs: 250, what: 'rollups to equal the accepted events' },
  ).catch(async (error: Error) => {
    const { periods } = await rolledUp(runtime.db, tenants);
    throw new Error(
      `${error.message}\nexpected ${JSON.stringify(sortedEntries(expected).map(([t, n]) => [t, String(n)]))}\n` +
        `rolled up ${JSON.stringify(sortedEntries(periods).map(([t, n]) => [t, String(n)]))}`,
    );
  });
  await waitFor(async () => (await runtime.queue.backlog()).every((n) => n === 0), { timeoutMs: 30_000, what: 'the backlog to drain' });
  const rollups = await rolledUp(runtime.db, tenants);
  expect(sortedEntries(rollups.periods)).toEqual(sortedEntries(expected));
  expect(sortedEntries(rollups.hourly)).toEqual(sortedEntries(accepted));
  expect(sortedEntries(rollups.daily)).toEqual(sortedEntries(accepted));
  await expectOneAlertPerThreshold(runtime, tenants);
}

export async function expectOneAlertPerThreshold(runtime: Runtime, tenants: readonly string[]): Promise<Map<string, number>> {
  const names = JSON.stringify(tenants);
  const periods = await runtime.db.query<{ tenant: string; period: string; tokens: bigint; quota: bigint; thresholds: number[] }>(
    `SELECT p.tenant, p.period_start::text AS period, p.tokens, t.monthly_quota AS quota, t.thresholds
     FROM usage_periods p JOIN tenants t ON t.name = p.tenant
     WHERE p.tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))`,
    [names],
  );
  const alerts = await runtime.db.query<{ tenant: string; period: string; threshold: number; count: number; over: boolean }>(
    `SELECT a.tenant, a.period_start::text AS period, a.threshold, count(*)::int AS count,
            bool_and(a.used_tokens * 100 >= a.threshold::bigint * a.quota) AS over
     FROM alerts a WHERE a.tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))
     GROUP BY a.tenant, a.period_start, a.threshold`,
    [names],
  );
  const expected = new Map<string, number>();
  for (const row of periods) {
    for (const threshold of crossedThresholds(BigInt(row.tokens), BigInt(row.quota), row.thresholds))
      expected.set(`${row.tenant}/${row.period}/${threshold}`, 1);
  }
  const actual = new Map(alerts.map((row) => [`${row.tenant}/${row.period}/${row.threshold}`, row.count]));
  expect(sortedEntries(actual)).toEqual(sortedEntries(expected));
  // Each alert recorded usage at or over its threshold when it was created.
  expect(alerts.every((row) => row.over)).toBe(true);
  return actual;
}

/** A Redis server of this test's own (the shared one is never restarted), with the append-only file fsynced on every write. */
export interface OwnRedis {
  url: string;
  port: number;
  /** SIGKILL: whatever was not on disk is gone. */
  crash(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startOwnRedis(): Promise<OwnRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'fm-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const start = async () => {
    const spawned = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, '--save', ''],
      { stdio: 'ignore' },
    );
    child = spawned;
    exited = new Promise((resolve) => spawned.once('exit', () => resolve()));
    await waitFor(
      async () => {
        if (spawned.exitCode !== null) throw new Error(`redis-server exited with ${spawned.exitCode}`);
        const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
        client.on('error', () => {});
        try {
          await client.connect();
          // Loading the append-only file answers LOADING until it is done.
          return (await client.ping()) === 'PONG';
        } finally {
          client.disconnect();
        }
      },
      { timeoutMs: 20_000, what: 'redis-server to answer' },
    );
  };
  const crash = async () => {
    child?.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    crash,
    start,
    async close() {
      await crash();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type SlackMode = 'up' | 'down' | 'slow';

/**
 * A local Slack stand-in on a port that stays the same across outages: `down` closes the listener
 * (connections refused), `slow` answers 200 after `slowMs`, `up` answers 200 at once.
 */
export interface FlakySlack {
  url: string;
  /** Messages answered 200, by path, with the mode they were answered in. */
  delivered: { path: string; text: string; at: number; mode: SlackMode }[];
  setMode(mode: SlackMode): Promise<void>;
  close(): Promise<void>;
}

export async function startFlakySlack(slowMs = 5_000): Promise<FlakySlack> {
  const { createServer } = await import('node:http');
  const delivered: FlakySlack['delivered'] = [];
  let mode: SlackMode = 'up';
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const answeredIn = mode;
      const answer = () => {
        delivered.push({ path: request.url ?? '/', text: (JSON.parse(body) as { text: string }).text, at: Date.now(), mode: answeredIn });
        response.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      };
      if (answeredIn === 'slow') setTimeout(answer, slowMs);
      else answer();
    });
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
  await listen(0);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const stop = () => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return {
    url: `http://127.0.0.1:${port}`,
    delivered,
    async setMode(next) {
      if (next === 'down' && mode !== 'down') await stop();
      if (next !== 'down' && mode === 'down') await listen(port);
      mode = next;
    },
    async close() {
      if (mode !== 'down') await stop();
    },
  };
}
