/**
 * `npm run soak -- --minutes N`: every function as its own process (the production bundles), a
 * steady mixed load on 127.0.0.1 for N minutes, the RSS of each process sampled every 10 s, then an
 * exact reconciliation of what was accepted against the rollups. Memory is "flat" when, after the
 * warm-up, every sample is within ±10% of that process's median. Not run in CI (it takes minutes);
 * the latest figures are in docs/reliability.md.
 *
 * Options: --minutes (10), --rate events/s (2000, sent as batches of 20), --warmup minutes
 * (a fifth of the run, at least 1), --tsx (run the TypeScript entries instead of bundles).
 * Uses DATABASE_URL / VALKEY_URL (defaults on localhost), in a database and key prefix of its own.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'iovalkey';
import postgres from 'postgres';
import { connectPostgres } from '../shared/platform/db.ts';
import { migrate } from '../shared/platform/migrate.ts';
import type { FunctionName } from '../functions/routes.ts';
import { PRODUCTION_NODE_OPTIONS, buildBundles } from './bench/stack.ts';
import { freePort, type NodeProcess, ROOT, spawnNode } from './lib/processes.ts';

const ADMIN_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const VALKEY_URL = process.env.VALKEY_URL ?? 'redis://127.0.0.1:6379';
const ADMIN_TOKEN = `soak-admin-${randomBytes(12).toString('hex')}`;
const PARTITIONS = 8;
const SAMPLE_EVERY_MS = 10_000;
const TICK_MS = 100;
const MAX_IN_FLIGHT = 256;
const BATCH = 20;
const FLAT_TOLERANCE = 0.1;

const { values: options } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '2000' },
    warmup: { type: 'string' },
    tsx: { type: 'boolean', default: false },
  },
});
const minutes = Number(options.minutes);
const eventsPerSecond = Number(options.rate);
const warmupMinutes = options.warmup === undefined ? Math.max(1, minutes / 5) : Number(options.warmup);
if (!(minutes > 0) || !(eventsPerSecond > 0) || !(warmupMinutes >= 0) || warmupMinutes >= minutes) {
  process.stderr.write('usage: npm run soak -- --minutes N [--rate events/s] [--warmup minutes] [--tsx]\n');
  process.exit(2);
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

function rssMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

const ENTRIES: Record<FunctionName, string> = {
  ingest: 'functions/ingest/server.ts',
  usage: 'functions/usage/server.ts',
  health: 'functions/health/server.ts',
  tenants: 'functions/tenants/server.ts',
  aggregator: 'functions/aggregator/main.ts',
};

interface Running extends NodeProcess {
  name: FunctionName;
  url: string;
}

const children: Running[] = [];

function startFunction(name: FunctionName, bundleDir: string | undefined, env: Record<string, string>, port: number): Running {
  const args = bundleDir ? [join(bundleDir, name, 'index.mjs')] : ['--import', 'tsx', join(ROOT, ENTRIES[name])];
  const node = spawnNode(args, {
    env: { NODE_OPTIONS: process.env.NODE_OPTIONS ?? PRODUCTION_NODE_OPTIONS, ...env, PORT: String(port) },
    outputLimit: 32_000,
  });
  const running = { ...node, name, url: `http://127.0.0.1:${port}` };
  children.push(running);
  return running;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    const dead = children.find((c) => c.child.exitCode !== null);
    if (dead) throw new Error(`${dead.name} exited with ${dead.child.exitCode}:\n${dead.output()}`);
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

class Latencies {
  private readonly values: number[] = [];
  ok = 0;
  failed = 0;
  record(ms: number, ok: boolean): void {
    this.values.push(ms);
    if (ok) this.ok++;
    else this.failed++;
  }
  percentile(p: number): number {
    const sorted = [...this.values].sort((a, b) => a - b);
    return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
  }
}

async function main(): Promise<void> {
  const dbName = `fm_soak_${randomBytes(6).toString('hex')}`;
  const prefix = `fmsoak_${randomBytes(5).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  const redis = new Redis(VALKEY_URL, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(ADMIN_DATABASE_URL);
  dbUrl.pathname = `/${dbName}`;
  const db = connectPostgres(dbUrl.toString(), { max: 2 });
  let bundleDir: string | undefined;
  const stopAll = async () => {
    await Promise.all(children.map((running) => running.terminate(5_000)));
  };
  process.once('SIGINT', () => {
    for (const { child } of children) child.kill('SIGKILL');
    process.exit(130);
  });
  try {
    await migrate(db);
    if (!options.tsx) bundleDir = (await buildBundles()).dir;
    const env = {
      DATABASE_URL: dbUrl.toString(),
      VALKEY_URL,
      VALKEY_PREFIX: prefix,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
      QUEUE_PARTITIONS: String(PARTITIONS),
      DEDUPE_WINDOW: '2m',
    };
    const functions = {} as Record<FunctionName, Running>;
    for (const name of Object.keys(ENTRIES) as FunctionName[]) {
      functions[name] = startFunction(
        name,
        bundleDir,
        { ...env, METRICS_PORT: String(await freePort()), ...(name === 'aggregator' ? { AGGREGATOR_ID: 'soak', LOG_LEVEL: 'info' } : {}) },
        await freePort(),
      );
    }
    await waitUntil(
      'the HTTP functions',
      async () => {
        for (const name of ['ingest', 'usage', 'health', 'tenants'] as const) await fetch(`${functions[name].url}/api/health`);
        return true;
      },
      30_000,
    );
    await waitUntil('the aggregator', async () => functions.aggregator.output().includes('aggregator running'), 30_000);

    const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    const created = await fetch(`${functions.tenants.url}/api/keys`, {
      method: 'POST',
      headers: adminHeaders,
      body: JSON.stringify({ name: 'soak' }),
    });
    const { key } = (await created.json()) as { key: string };
    const auth = { authorization: `Bearer ${key}` };

    const tenants = Array.from({ length: 50 }, (_, i) => `soak-${i}`);
    const features = ['gpt-4o', 'openai/gpt-4o-mini', 'claude-3.5', 'embed', 'whisper'];
    const accepted = new Map<string, bigint>();
    const latency: Record<string, Latencies> = {
      ingest: new Latencies(),
      usage: new Latencies(),
      series: new Latencies(),
      health: new Latencies(),
      tenants: new Latencies(),
    };
    let inFlight = 0;
    let skipped = 0;
    let sequence = 0;

    const timed = async (kind: string, run: () => Promise<Response>, onOk?: (response: Response) => Promise<void>) => {
      if (inFlight >= MAX_IN_FLIGHT) {
        skipped++;
        return;
      }
      inFlight++;
      const started = performance.now();
      try {
        const response = await run();
        const ok = response.status < 400;
        if (ok && onOk) await onOk(response);
        else await response.body?.cancel();
        latency[kind]!.record(performance.now() - started, ok);
      } catch {
        latency[kind]!.record(performance.now() - started, false);
      } finally {
        inFlight--;
      }
    };

    const sendIngest = () => {
      const n = sequence++;
      const tenant = tenants[n % tenants.length]!;
      // Every tenth batch carries ids, so the dedupe path runs too (DEDUPE_WINDOW=2m keeps Valkey bounded).
      const batch = Array.from({ length: BATCH }, (_, i) => ({
        tenant,
        feature: features[(n + i) % features.length]!,
        tokens: 1 + ((n * 31 + i * 7) % 997),
        ...(n % 10 === 0 ? { id: `soak-${n}-${i}` } : {}),
      }));
      return timed(
        'ingest',
        () =>
          fetch(`${functions.ingest.url}/api/events`, {
            method: 'POST',
            headers: { ...auth, 'content-type': 'application/json' },
            body: JSON.stringify(batch),
          }),
        async (response) => {
          const body = (await response.json()) as { duplicateIndexes: number[] };
          const duplicates = new Set(body.duplicateIndexes);
          const sum = batch.reduce((total, event, index) => (duplicates.has(index) ? total : total + BigInt(event.tokens)), 0n);
          accepted.set(tenant, (accepted.get(tenant) ?? 0n) + sum);
        },
      );
    };

    // The new key reaches the other functions on their next key refresh; seed every tenant once it has.
    const seed = tenants.map((tenant) => ({ tenant, feature: features[0]!, tokens: 1 }));
    await waitUntil(
      'the key to work on ingest',
      async () => {
        const response = await fetch(`${functions.ingest.url}/api/events`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify(seed),
        });
        await response.body?.cancel();
        return response.status === 202;
      },
      30_000,
    );
    for (const tenant of tenants) accepted.set(tenant, 1n);
    await waitUntil(
      'the seed to be counted',
      async () => (await fetch(`${functions.usage.url}/api/usage/${tenants.at(-1)}`, { headers: auth })).status === 200,
      30_000,
    );

    const ingestPerTick = eventsPerSecond / BATCH / (1000 / TICK_MS);
    const samples = new Map<FunctionName, { atS: number; mb: number }[]>(
      (Object.keys(ENTRIES) as FunctionName[]).map((name) => [name, []]),
    );
    const started = Date.now();
    const endAt = started + minutes * 60_000;
    let owed = 0;
    let tick = 0;
    let nextSample = started;
    process.stdout.write(
      `soak: ${minutes} min at ${eventsPerSecond} events/s (batches of ${BATCH}), plus usage 40/s, series 5/s, health 2/s, tenants 1/s; ` +
        `${bundleDir ? 'production bundles' : 'tsx entries'}; warm-up ${warmupMinutes} min\n`,
    );
    while (Date.now() < endAt) {
      const now = Date.now();
      if (now >= nextSample) {
        const atS = Math.round((now - started) / 1000);
        const line: string[] = [];
        for (const running of children) {
          const mb = rssMb(running.child.pid!);
          samples.get(running.name)!.push({ atS, mb });
          line.push(`${running.name} ${mb.toFixed(1)}`);
        }
        process.stdout.write(`  t=${String(atS).padStart(4)}s RSS MB: ${line.join(', ')}; in flight ${inFlight}\n`);
        nextSample += SAMPLE_EVERY_MS;
      }
      owed += ingestPerTick;
      for (; owed >= 1; owed--) void sendIngest();
      for (let i = 0; i < 4; i++)
        void timed('usage', () => fetch(`${functions.usage.url}/api/usage/${tenants[(tick * 4 + i) % tenants.length]}`, { headers: auth }));
      if (tick % 2 === 0)
        void timed('series', () =>
          fetch(`${functions.usage.url}/api/usage/${tenants[tick % tenants.length]}/series?granularity=hour`, { headers: auth }),
        );
      if (tick % 5 === 0) void timed('health', () => fetch(`${functions.health.url}/api/health`));
      if (tick % 10 === 0) void timed('tenants', () => fetch(`${functions.tenants.url}/api/tenants?limit=20`, { headers: adminHeaders }));
      tick++;
      await sleep(Math.max(0, started + tick * TICK_MS - Date.now()));
    }
    await waitUntil('requests in flight to finish', async () => inFlight === 0, 30_000);

    // Exactly once over the whole run: the rollups hold what was accepted, no more, no less.
    const expected = [...accepted.values()].reduce((a, b) => a + b, 0n);
    let counted = 0n;
    const drainDeadline = Date.now() + 120_000;
    while (Date.now() < drainDeadline) {
      const [row] = await db.query<{ tokens: bigint | null }>('SELECT sum(tokens)::bigint AS tokens FROM usage_periods');
      counted = BigInt(row?.tokens ?? 0);
      if (counted === expected) break;
      await sleep(250);
    }

    const warmupS = warmupMinutes * 60;
    process.stdout.write(
      `\nRSS after the ${warmupMinutes}-minute warm-up (MB; flat = every sample within ±${FLAT_TOLERANCE * 100}% of the median)\n`,
    );
    process.stdout.write(
      '| process | samples | min | median | max | max deviation | first → last | peak 1st half → 2nd half | flat |\n|---|---|---|---|---|---|---|---|---|\n',
    );
    let allFlat = true;
    for (const [name, all] of samples) {
      const kept = all.filter((s) => s.atS >= warmupS && Number.isFinite(s.mb)).map((s) => s.mb);
      const sorted = [...kept].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
      const deviation = Math.max(...kept.map((mb) => Math.abs(mb - median) / median));
      const flat = kept.length > 0 && deviation <= FLAT_TOLERANCE;
      // A garbage-collected heap breathes in a sawtooth; a leak shows as peaks that keep rising.
      const half = Math.floor(kept.length / 2);
      const peaks = [Math.max(...kept.slice(0, half)), Math.max(...kept.slice(half))];
      allFlat &&= flat;
      process.stdout.write(
        `| ${name} | ${kept.length} | ${sorted[0]?.toFixed(1)} | ${median.toFixed(1)} | ${sorted.at(-1)?.toFixed(1)} | ` +
          `${(deviation * 100).toFixed(1)}% | ${kept[0]?.toFixed(1)} → ${kept.at(-1)?.toFixed(1)} | ${peaks[0]!.toFixed(1)} → ${peaks[1]!.toFixed(1)} | ${flat ? 'yes' : 'NO'} |\n`,
      );
    }
    process.stdout.write('\n| requests | ok | failed | p50 ms | p99 ms |\n|---|---|---|---|---|\n');
    for (const [kind, stats] of Object.entries(latency)) {
      process.stdout.write(
        `| ${kind} | ${stats.ok} | ${stats.failed} | ${stats.percentile(50).toFixed(1)} | ${stats.percentile(99).toFixed(1)} |\n`,
      );
    }
    const exact = counted === expected;
    process.stdout.write(
      `\nrequests skipped by the load generator (over ${MAX_IN_FLIGHT} in flight): ${skipped}\n` +
        `tokens accepted ${expected}, counted in the rollups ${counted}: ${exact ? 'exact' : 'MISMATCH'}\n` +
        `result: ${allFlat && exact ? 'PASS' : 'FAIL'}\n`,
    );
    process.exitCode = allFlat && exact ? 0 : 1;
  } finally {
    await stopAll();
    await db.close().catch(() => undefined);
    await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
    await admin.end({ timeout: 2 });
    const keys = Array.from({ length: PARTITIONS }, (_, p) => [`${prefix}:s:${p}`, `${prefix}:b:${p}`, `${prefix}:g:${p}`]).flat();
    await redis.del(...keys).catch(() => undefined);
    redis.disconnect();
    if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
  }
}

await main();
