/**
 * What the bench runs against: its own database and key space on the shared PostgreSQL and Valkey,
 * freshly built function bundles, and each function as its own process (as in production).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'iovalkey';
import postgres from 'postgres';
import { connectPostgres, type Db } from '../../shared/platform/db.ts';
import { migrate } from '../../shared/platform/migrate.ts';
import { dedupeKeys } from '../../shared/platform/queue/valkey.ts';
import { ROOT, spawnNode } from '../lib/processes.ts';

export type { FunctionName } from '../../functions/routes.ts';
export { freePort, ROOT } from '../lib/processes.ts';

export const ADMIN_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const VALKEY_URL = process.env.VALKEY_URL ?? 'redis://127.0.0.1:6379';
export const ADMIN_TOKEN = `bench-admin-${randomBytes(12).toString('hex')}`;
export const QUEUE_PARTITIONS = 8;

export const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** The heap caps the images run with (stacks/Dockerfile): bench and soak measure what production runs. */
export const PRODUCTION_NODE_OPTIONS = '--max-old-space-size=96 --max-semi-space-size=4';

/** Builds every function bundle into a folder of its own, so a concurrent `npm run build` is never disturbed. */
export async function buildBundles(): Promise<{ dir: string; remove(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'flagmeter-bench-'));
  const build = spawnNode(['--import', 'tsx', join(ROOT, 'scripts/build.ts'), '--outdir', dir, '--no-lambda'], { env: { ...process.env } });
  const code = await build.exited;
  if (code !== 0) throw new Error(`npm run build failed (${code}):\n${build.output()}`);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface BenchDatabase {
  name: string;
  url: string;
  db: Db;
  drop(): Promise<void>;
}

export async function createBenchDatabase(): Promise<BenchDatabase> {
  const name = `fm_bench_${randomBytes(6).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  const db = connectPostgres(url.toString(), { max: 4 });
  await migrate(db);
  return {
    name,
    url: url.toString(),
    db,
    async drop() {
      await db.close().catch(() => undefined);
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 2 });
    },
  };
}

/** The functions' DEDUPE_WINDOW in the bench. */
export const DEDUPE_WINDOW_MS = 10 * 60_000;

/**
 * The bench's key prefix on the shared Valkey. Cleanup deletes by name — the streams, backlog
 * counters and the dedupe sets of the buckets its run covered — never SCAN or FLUSH.
 */
export class BenchKeySpace {
  readonly prefix = `fmbench_${randomBytes(5).toString('hex')}`;
  readonly redis = new Redis(VALKEY_URL, { maxRetriesPerRequest: 1 });
  readonly startedMs = Date.now();

  constructor() {
    this.redis.on('error', () => {});
  }

  /** Every dedupe key the run made so far (a minute of slack on either side for clock skew with the server). */
  dedupeKeys(): Promise<string[]> {
    return dedupeKeys(this.redis, this.prefix, DEDUPE_WINDOW_MS, this.startedMs - 60_000, Date.now() + 60_000);
  }

  async backlog(): Promise<number> {
    const keys = Array.from({ length: QUEUE_PARTITIONS }, (_, p) => `${this.prefix}:b:${p}`);
    const counts = await this.redis.mget(...keys);
    return counts.reduce((sum, count) => sum + Number(count ?? 0), 0);
  }

  async clear(): Promise<void> {
    const keys = Array.from({ length: 256 }, (_, p) => [`${this.prefix}:s:${p}`, `${this.prefix}:b:${p}`, `${this.prefix}:g:${p}`])
      .flat()
      .concat(await this.dedupeKeys());
    for (let i = 0; i < keys.length; i += 1_000) await this.redis.del(...keys.slice(i, i + 1_000));
    this.redis.disconnect();
  }
}

const OUTPUT_LIMIT = 64 * 1024;

export interface RunningProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  url: string;
  /** performance.now() when spawn() was called. */
  spawnedAt: number;
  output(): string;
  /** Peak resident set (VmHWM) so far, in MiB. */
  peakRssMb(): number;
  stop(): Promise<void>;
}

/** Reads VmHWM (the kernel's own peak-RSS mark: no sampling gaps) of a live process. */
export function peakRssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** CPU time (user + system) a live process has used so far, in ms: unlike wall time, barely moved by other load on the machine. */
export function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

const running = new Set<RunningProcess>();

/** Starts `node <args>` with `env` (plus PATH and HOME only) and returns at once. */
export function startProcess(name: string, args: string[], env: Record<string, string>, port: number): RunningProcess {
  const spawnedAt = performance.now();
  const node = spawnNode(args, { env, outputLimit: OUTPUT_LIMIT });
  const { child } = node;
  let peak = Number.NaN;
  const process_: RunningProcess = {
    name,
    child,
    pid: child.pid!,
    url: `http://127.0.0.1:${port}`,
    spawnedAt,
    output: node.output,
    peakRssMb: () => {
      if (node.running()) peak = peakRssMb(child.pid!);
      return peak;
    },
    async stop() {
      running.delete(process_);
      if (!node.running()) return;
      peak = peakRssMb(child.pid!);
      await node.terminate(5_000);
    },
  };
  running.add(process_);
  return process_;
}

/** Kills whatever is still running (on an error or Ctrl-C). */
export function killAll(): void {
  for (const process_ of running) process_.child.kill('SIGKILL');
  running.clear();
}

/**
 * Polls `probe` every 2 ms until it returns true; returns ms from spawn to that first success.
 * Fails when the process exits or `timeoutMs` passes.
 */
export async function timeToReady(process_: RunningProcess, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<number> {
  const deadline = process_.spawnedAt + timeoutMs;
  while (performance.now() < deadline) {
    if (process_.child.exitCode !== null) throw new Error(`${process_.name} exited with ${process_.child.exitCode}:\n${process_.output()}`);
    if (await probe().catch(() => false)) return performance.now() - process_.spawnedAt;
    await sleep(2);
  }
  throw new Error(`${process_.name} not ready after ${timeoutMs} ms:\n${process_.output()}`);
}
