/**
 * `npm run bench`: measures FlagMeter against SPEC §9 on this machine and prints one table.
 *
 * It builds the function bundles into a temporary folder, creates its own database (fm_bench_*) and
 * Valkey key prefix, starts every function from its bundle as its own process (as production runs
 * them), drives load from separate processes (autocannon; the FlagMeter client for end to end), and
 * after every ingest scenario drains the queue and checks that the rollups equal what was answered
 * 202. Everything it started or created is removed at the end, Ctrl-C included.
 *
 *   npm run bench [-- --scenario single,usage] [--duration 10] [--e2e-duration 30] [--backlog 1000000] [--dedupe-events 200000]
 *                 [--tenants 1000,100000]
 *                 [--telemetry on|off] [--write] [--json FILE] [--cpu-prof DIR] [--bundles DIR]
 *
 * Scenarios: startup, baseline, single, batched, drain, usage, dedupe, e2e, loadtest (default: all).
 * The drain runs once per `--tenants` count (a backlog over that many tenants × 10 features each; for
 * a first count of 1,000 it is the backlog the batched scenario fills, which always uses that grid).
 * `--write` puts the table into README.md and docs/benchmarks.md between the bench markers.
 * `--bundles DIR` runs already built bundles (e.g. `dist`) instead of building; `--cpu-prof DIR` has
 * every function process write a V8 CPU profile (read it with scripts/bench/profile.ts).
 * Function processes get the images' NODE_OPTIONS heap caps (or NODE_OPTIONS when set) and, like the
 * images, the compile cache built beside each bundle (NODE_COMPILE_CACHE, when set, overrides it).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { CannonRequest, CannonResult, CannonSpec } from './bench/cannon.ts';
import type { E2eResult, E2eSpec } from './bench/e2e.ts';
import {
  addExpected,
  batchedBodies,
  type BenchEvent,
  comboKey,
  type Expected,
  gridEvent,
  singleEventBodies,
  TENANT_COUNT,
  tenantName,
} from './bench/events.ts';
import {
  ADMIN_TOKEN,
  type BenchDatabase,
  BenchKeySpace,
  buildBundles,
  cpuMs,
  createBenchDatabase,
  DEDUPE_WINDOW_MS,
  freePort,
  type FunctionName,
  killAll,
  PRODUCTION_NODE_OPTIONS,
  QUEUE_PARTITIONS,
  ROOT,
  type RunningProcess,
  sleep,
  startProcess,
  timeToReady,
  VALKEY_URL,
} from './bench/stack.ts';
import { int, ms, renderTable, replaceBetweenMarkers, type Row, verdict } from './bench/table.ts';
import { verifyRollups } from './bench/verify.ts';
import type { LoadtestResult } from './loadtest.ts';

const SCENARIOS = ['startup', 'baseline', 'single', 'batched', 'drain', 'usage', 'dedupe', 'e2e', 'loadtest'] as const;
type Scenario = (typeof SCENARIOS)[number];
const FUNCTIONS: FunctionName[] = ['tenants', 'health', 'usage', 'ingest', 'aggregator'];
const CONNECTIONS = 50;
const STARTS_PER_FUNCTION = 3;
const PROBE_TENANT = 'bench-probe';

const { values: args } = parseArgs({
  options: {
    scenario: { type: 'string', default: SCENARIOS.join(',') },
    duration: { type: 'string', default: '10' },
    'e2e-duration': { type: 'string', default: '30' },
    'e2e-rate': { type: 'string', default: '20000' },
    'dedupe-events': { type: 'string', default: '200000' },
    tenants: { type: 'string', default: '1000,100000' },
    backlog: { type: 'string', default: '1000000' },
    'loadtest-clients': { type: 'string', default: '200' },
    telemetry: { type: 'string', default: 'on' },
    write: { type: 'boolean', default: false },
    json: { type: 'string' },
    'cpu-prof': { type: 'string' },
    bundles: { type: 'string' },
  },
});
const selected = new Set(args.scenario.split(',').map((name) => name.trim()) as Scenario[]);
for (const name of selected) {
  if (!SCENARIOS.includes(name)) {
    process.stderr.write(`unknown scenario "${name}"; choose from ${SCENARIOS.join(', ')}\n`);
    process.exit(64);
  }
}
// The ingest ratio needs its baseline, and the drain needs the backlog the batched scenario fills.
if (selected.has('single')) selected.add('baseline');
if (selected.has('drain')) selected.add('batched');
const durationS = Number(args.duration);
const telemetryOn = args.telemetry !== 'off';

const log = (line: string) => process.stderr.write(`${line}\n`);
const rows: Row[] = [];
const raw: Record<string, unknown> = {};
const expected: Expected = new Map();
const processes = new Map<FunctionName | 'baseline', RunningProcess[]>();
let bundlesDir = '';
let database: BenchDatabase | undefined;
let keySpace: BenchKeySpace | undefined;
let apiKey = '';
const live: Partial<Record<FunctionName, RunningProcess>> = {};

const passThrough = (names: string[]): Record<string, string> =>
  Object.fromEntries(names.filter((name) => process.env[name]).map((name) => [name, process.env[name]!]));

async function functionEnv(name: FunctionName): Promise<{ env: Record<string, string>; port: number }> {
  const port = await freePort();
  return {
    port,
    env: {
      NODE_ENV: 'production',
      PORT: String(port),
      HOST: '127.0.0.1',
      METRICS_PORT: String(await freePort()),
      TELEMETRY_ENABLED: String(telemetryOn),
      DATABASE_URL: database!.url,
      VALKEY_URL,
      VALKEY_PREFIX: keySpace!.prefix,
      ADMIN_TOKEN,
      QUEUE_PARTITIONS: String(QUEUE_PARTITIONS),
      // Room for the whole drain backlog plus what the single-event scenario leaves behind.
      QUEUE_MAX_BACKLOG: String(Number(args.backlog) * 3),
      DEDUPE_WINDOW: `${DEDUPE_WINDOW_MS}ms`,
      LOG_LEVEL: 'info',
      // The images' heap caps (stacks/Dockerfile), unless the caller sets its own.
      NODE_OPTIONS: process.env.NODE_OPTIONS ?? PRODUCTION_NODE_OPTIONS,
      // The compile cache scripts/build.ts writes beside each bundle, used as the image uses it.
      ...(existsSync(join(bundlesDir, name, '.compile-cache'))
        ? { NODE_COMPILE_CACHE: join(bundlesDir, name, '.compile-cache'), NODE_COMPILE_CACHE_PORTABLE: '1' }
        : {}),
      ...passThrough(['NODE_COMPILE_CACHE', 'AGGREGATOR_BATCH_SIZE', 'AGGREGATOR_LANES']),
      ...(name === 'aggregator' ? { AGGREGATOR_ID: `bench-${keySpace!.prefix}` } : {}),
    },
  };
}

async function launch(name: FunctionName): Promise<RunningProcess> {
  const { env, port } = await functionEnv(name);
  // --cpu-prof DIR: each function process writes a V8 CPU profile there when it stops.
  const profile = args['cpu-prof']
    ? ['--cpu-prof', `--cpu-prof-dir=${resolve(args['cpu-prof'])}`, `--cpu-prof-name=${name}-\${pid}.cpuprofile`]
    : [];
  const started = startProcess(name, [...profile, join(bundlesDir, name, 'index.mjs')], env, port);
  processes.set(name, [...(processes.get(name) ?? []), started]);
  return started;
}

const authHeaders = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });

async function answers(url: string, status: number, init: RequestInit = {}): Promise<boolean> {
  const response = await fetch(url, init);
  await response.body?.cancel();
  return response.status === status;
}

/** What "ready" means per function: its first successful answer (the aggregator: its running log line). */
function readinessProbe(name: FunctionName, process_: RunningProcess): () => Promise<boolean> {
  switch (name) {
    case 'tenants':
      return () => answers(`${process_.url}/api/tenants?limit=1`, 200, { headers: authHeaders(ADMIN_TOKEN) });
    case 'health':
      return () => answers(`${process_.url}/api/health`, 200);
    case 'usage':
      return () => answers(`${process_.url}/api/usage/${PROBE_TENANT}`, 200, { headers: authHeaders(apiKey) });
    case 'ingest':
      return async () => {
        const ok = await answers(`${process_.url}/api/events`, 202, {
          method: 'POST',
          headers: authHeaders(apiKey),
          body: JSON.stringify({ tenant: PROBE_TENANT, feature: 'probe', tokens: 1 }),
        });
        if (ok) addExpected(expected, [{ tenant: PROBE_TENANT, feature: 'probe', tokens: 1 }]);
        return ok;
      };
    case 'aggregator':
      return async () => process_.output().includes('aggregator running');
  }
}

async function startFunction(name: FunctionName): Promise<{ process: RunningProcess; readyMs: number; cpuMs: number }> {
  const started = await launch(name);
  const readyMs = await timeToReady(started, readinessProbe(name, started));
  live[name] = started;
  return { process: started, readyMs, cpuMs: cpuMs(started.pid) };
}

async function stopFunction(name: FunctionName): Promise<void> {
  await live[name]?.stop();
  delete live[name];
}

/** Creates the bench's API key and the probe tenant through the admin API, as an operator would. */
async function provision(tenantsUrl: string): Promise<void> {
  const key = await fetch(`${tenantsUrl}/api/keys`, {
    method: 'POST',
    headers: authHeaders(ADMIN_TOKEN),
    body: JSON.stringify({ name: 'bench' }),
  });
  if (key.status !== 201) throw new Error(`POST /api/keys answered ${key.status}: ${await key.text()}`);
  apiKey = ((await key.json()) as { key: string }).key;
  const tenant = await fetch(`${tenantsUrl}/api/tenants/${PROBE_TENANT}`, {
    method: 'PUT',
    headers: authHeaders(ADMIN_TOKEN),
    body: JSON.stringify({ monthlyQuota: 1_000_000 }),
  });
  await tenant.body?.cancel();
  if (tenant.status >= 300) throw new Error(`PUT /api/tenants answered ${tenant.status}`);
}

/** Runs a child process that prints one JSON line, and parses it. */
async function runChild<T>(args_: string[]): Promise<T> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args_], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((done) => child.once('exit', done));
  const line = stdout.trim().split('\n').at(-1);
  if (!line?.startsWith('{')) throw new Error(`${args_[0]} exited with ${code}:\n${stderr}${stdout}`);
  return JSON.parse(line) as T;
}

async function cannon(spec: CannonSpec): Promise<CannonResult> {
  const file = join(tmpdir(), `flagmeter-bench-${randomBytes(4).toString('hex')}.json`);
  writeFileSync(file, JSON.stringify(spec));
  try {
    return await runChild<CannonResult>([join(ROOT, 'scripts/bench/cannon.ts'), file]);
  } finally {
    rmSync(file, { force: true });
  }
}

/**
 * Runs a load and also reports the CPU time the serving process spent per answered request (µs): on a
 * machine shared with other work, req/s swings with the neighbours but CPU per request barely does.
 */
async function cannonWithCpu(spec: CannonSpec, pid: number): Promise<CannonResult & { cpuUsPerRequest: number }> {
  const before = cpuMs(pid);
  const result = await cannon(spec);
  return { ...result, cpuUsPerRequest: ((cpuMs(pid) - before) * 1_000) / Math.max(1, result.requests) };
}

const cpuText = (result: { cpuUsPerRequest: number }, unit = 'request', per = 1): string =>
  `${Math.round(result.cpuUsPerRequest / per)} µs CPU per ${unit}`;

const postRequests = (bodies: BenchEvent[][]): CannonRequest[] =>
  bodies.map((events) => ({ method: 'POST', path: '/api/events', body: JSON.stringify(events.length === 1 ? events[0] : events) }));

function addAccepted(bodies: BenchEvent[][], result: CannonResult): number {
  let events = 0;
  bodies.forEach((body, index) => {
    addExpected(expected, body, result.okPerRequest[index]!);
    events += body.length * result.okPerRequest[index]!;
  });
  return events;
}

const statusText = (statuses: Record<string, number>) =>
  Object.entries(statuses)
    .map(([status, count]) => `${status}×${int(count)}`)
    .join(' ');

/** Waits until every queued event is committed (the backlog counters drop only after the commit). */
async function drained(timeoutMs = 240_000): Promise<number> {
  const started = performance.now();
  while ((await keySpace!.backlog()) > 0) {
    if (performance.now() - started > timeoutMs) throw new Error(`the aggregator did not drain within ${timeoutMs / 1_000} s`);
    await sleep(10);
  }
  return performance.now() - started;
}

/**
 * Whether this PostgreSQL runs without autovacuum (a CI machine's configuration: this one's has
 * `autovacuum = off`). Then nothing refreshes the planner's statistics after a bulk load, as a
 * deployed PostgreSQL does within a minute, and the scenario after the 100,000-tenant drain ran on
 * plans made for a database a hundredth of its size (docs/benchmarks.md, round 6).
 */
let autovacuumOff: boolean | undefined;

/** ANALYZE, as autovacuum would, when this PostgreSQL has no autovacuum to do it. */
async function analyzeWithoutAutovacuum(): Promise<void> {
  autovacuumOff ??= (await database!.db.query<{ autovacuum: string }>('SHOW autovacuum'))[0]?.autovacuum === 'off';
  if (autovacuumOff) await database!.db.query('ANALYZE');
}

/** Drains with the aggregator running, then checks the rollups against everything answered 202. */
async function drainAndVerify(label: string): Promise<void> {
  if (!live.aggregator) await startFunction('aggregator');
  await drained();
  await analyzeWithoutAutovacuum();
  const check = await verifyRollups(database!.db, expected);
  rows.push({
    scenario: `nothing lost after ${label} (rollups = accepted)`,
    measured: check.detail,
    target: 'equal',
    result: verdict(check.ok),
  });
  log(`  verified after ${label}: ${check.ok ? 'ok' : 'MISMATCH'} — ${check.detail}`);
}

async function measureStartup(): Promise<void> {
  const measured: Partial<Record<FunctionName, number[]>> = {};
  const cpu: Partial<Record<FunctionName, number[]>> = {};
  const starts = selected.has('startup') ? STARTS_PER_FUNCTION : 1;
  for (const name of FUNCTIONS) {
    for (let attempt = 0; attempt < starts; attempt++) {
      if (live[name]) await stopFunction(name);
      const { readyMs, cpuMs: used } = await startFunction(name);
      (measured[name] ??= []).push(readyMs);
      (cpu[name] ??= []).push(used);
      if (name === 'tenants' && attempt === 0) await provision(live.tenants!.url);
    }
    log(
      `  ${name}: ready in ${measured[name]!.map((value) => ms(value)).join(', ')} (CPU ${cpu[name]!.map((value) => ms(value)).join(', ')})`,
    );
  }
  raw.startupCpuMs = cpu;
  // Ingest scenarios run with the aggregator stopped, so that the queue fills and ingest is measured alone.
  await stopFunction('aggregator');
  raw.startupMs = measured;
  if (!selected.has('startup')) return;
  for (const name of FUNCTIONS) {
    const sorted = [...measured[name]!].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    const cpuSorted = [...cpu[name]!].sort((a, b) => a - b);
    rows.push({
      scenario: `start → first success: ${name}`,
      measured: `${ms(median)} (median of ${sorted.length}; max ${ms(sorted.at(-1)!)}; CPU ${ms(cpuSorted[Math.floor(cpuSorted.length / 2)]!)})`,
      target: '≤ 500 ms',
      result: verdict(median <= 500),
    });
  }
}

/** The bare Fastify yardstick (scripts/bench/baseline.ts), started on first use and kept for the run. */
let baselineProcess: RunningProcess | undefined;
async function baseline(): Promise<RunningProcess> {
  if (baselineProcess) return baselineProcess;
  const port = await freePort();
  const started = startProcess(
    'baseline',
    ['--import', 'tsx', join(ROOT, 'scripts/bench/baseline.ts')],
    { PORT: String(port), NODE_ENV: 'production' },
    port,
  );
  processes.set('baseline', [started]);
  await timeToReady(started, () =>
    answers(`${started.url}/api/events`, 200, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }),
  );
  baselineProcess = started;
  return started;
}

interface Yardstick {
  requestsPerSecond: number;
  p99: number;
  cpuUsPerRequest: number;
}

async function measureBaseline(): Promise<Yardstick> {
  const bare = await baseline();
  const result = await cannonWithCpu(
    {
      url: bare.url,
      connections: CONNECTIONS,
      durationS,
      headers: { 'content-type': 'application/json' },
      requests: postRequests(singleEventBodies()),
    },
    bare.pid,
  );
  raw.baseline = result;
  rows.push({
    scenario: `baseline: bare Fastify POST {"ok":true}, ${CONNECTIONS} conn`,
    measured: `${int(result.requestsPerSecond)} req/s, p99 ${ms(result.latencyMs.p99)}; ${cpuText(result)}`,
    target: '(yardstick)',
    result: 'info',
  });
  log(`  baseline: ${int(result.requestsPerSecond)} req/s, p99 ${ms(result.latencyMs.p99)}, ${cpuText(result)}`);
  return { requestsPerSecond: result.requestsPerSecond, p99: result.latencyMs.p99, cpuUsPerRequest: result.cpuUsPerRequest };
}

async function measureSingle(yardstick: Yardstick): Promise<void> {
  const bodies = singleEventBodies();
  const result = await cannonWithCpu(
    { url: live.ingest!.url, connections: CONNECTIONS, durationS, headers: authHeaders(apiKey), requests: postRequests(bodies) },
    live.ingest!.pid,
  );
  raw.single = result;
  const accepted = addAccepted(bodies, result);
  const ratio = result.requestsPerSecond / yardstick.requestsPerSecond;
  const clean = result.errors === 0 && Object.keys(result.statuses).every((status) => status === '202');
  rows.push({
    scenario: `single-event ingest, ${CONNECTIONS} conn: req/s`,
    measured: `${int(result.requestsPerSecond)} req/s = ${Math.round(ratio * 100)}% of baseline (${statusText(result.statuses)}); ${cpuText(result)} = ${(result.cpuUsPerRequest / yardstick.cpuUsPerRequest).toFixed(2)} × baseline's`,
    target: '≥ 65% of baseline, no errors',
    result: verdict(ratio >= 0.65 && clean),
  });
  rows.push({
    scenario: `single-event ingest, ${CONNECTIONS} conn: latency`,
    measured: `p99 ${ms(result.latencyMs.p99)} = ${(result.latencyMs.p99 / yardstick.p99).toFixed(1)} × baseline's ${ms(yardstick.p99)} (p50 ${ms(result.latencyMs.p50)})`,
    target: 'p99 ≤ 2 × baseline p99 and ≤ 5 ms',
    result: verdict(result.latencyMs.p99 <= 2 * yardstick.p99 && result.latencyMs.p99 <= 5),
  });
  log(
    `  single: ${int(result.requestsPerSecond)} req/s (${Math.round(ratio * 100)}%), p99 ${ms(result.latencyMs.p99)}, ${int(accepted)} accepted, ${cpuText(result)}`,
  );
  const backlog = await keySpace!.backlog();
  const started = performance.now();
  await startFunction('aggregator');
  await drained();
  const seconds = (performance.now() - started) / 1_000;
  raw.singleDrain = { events: backlog, seconds };
  log(
    `  drained ${int(backlog)} single-event entries in ${seconds.toFixed(1)} s (${int(backlog / seconds)} events/s, aggregator start included)`,
  );
  await drainAndVerify('single-event ingest');
  await stopFunction('aggregator');
}

const tenantCounts = args.tenants.split(',').map((count) => Number(count.trim()));
if (tenantCounts.some((count) => !Number.isInteger(count) || count < 1)) {
  process.stderr.write(`--tenants takes a comma list of tenant counts, not "${args.tenants}"\n`);
  process.exit(64);
}

/** Sends `--backlog` events in 100-event batches over the grid of `tenants`; the aggregator is stopped, so they queue. */
async function fillBacklog(tenants: number): Promise<{ result: CannonResult & { cpuUsPerRequest: number }; accepted: number }> {
  const bodies = batchedBodies(100, tenants);
  const requests = Math.round(Number(args.backlog) / 100);
  const result = await cannonWithCpu(
    { url: live.ingest!.url, connections: CONNECTIONS, amount: requests, headers: authHeaders(apiKey), requests: postRequests(bodies) },
    live.ingest!.pid,
  );
  return { result, accepted: addAccepted(bodies, result) };
}

async function measureBatched(): Promise<void> {
  // The yardstick first: a bare Fastify parsing the same bodies, for as long as the batched run takes.
  const bodies = batchedBodies(100, TENANT_COUNT);
  const yardstick = await baseline();
  const bare = await cannonWithCpu(
    {
      url: yardstick.url,
      connections: CONNECTIONS,
      durationS: Math.min(durationS, 5),
      headers: { 'content-type': 'application/json' },
      requests: postRequests(bodies),
    },
    yardstick.pid,
  );
  const bareEventsPerSecond = bare.requestsPerSecond * 100;
  raw.batchedBaseline = bare;
  rows.push({
    scenario: `baseline: bare Fastify parsing the same 100-event bodies, ${CONNECTIONS} conn`,
    measured: `${int(bareEventsPerSecond)} events/s (p99 ${ms(bare.latencyMs.p99)}); ${cpuText(bare, 'event', 100)}`,
    target: '(yardstick)',
    result: 'info',
  });
  const { result, accepted } = await fillBacklog(TENANT_COUNT);
  raw.batched = result;
  const eventsPerSecond = accepted / result.durationS;
  rows.push({
    scenario: `batched ingest, 100 events/request, ${CONNECTIONS} conn`,
    measured: `${int(eventsPerSecond)} events/s = ${Math.round((eventsPerSecond / bareEventsPerSecond) * 100)}% of the bare parse (${int(accepted)} events in ${result.durationS.toFixed(1)} s, p99 ${ms(result.latencyMs.p99)}); ${cpuText(result, 'event', 100)} = ${(result.cpuUsPerRequest / bare.cpuUsPerRequest).toFixed(2)} × the bare parse's`,
    target: '≥ 300,000 events/s',
    result: verdict(eventsPerSecond >= 300_000),
  });
  log(
    `  batched: ${int(eventsPerSecond)} events/s (bare parse ${int(bareEventsPerSecond)}), ${int(accepted)} accepted, statuses ${statusText(result.statuses)}, ${cpuText(result, 'event', 100)} (bare ${cpuText(bare, 'event', 100)})`,
  );
}

/**
 * Queues `--backlog` events over the grid of `tenants` × 10 features, every body a different slice of
 * the grid (autocannon would have every connection start at the same body), sent straight from here
 * with 16 requests in flight; only the drain that follows is measured.
 */
async function queueGrid(tenants: number): Promise<number> {
  const bodies = batchedBodies(100, tenants).slice(0, Math.round(Number(args.backlog) / 100));
  let accepted = 0;
  let next = 0;
  const worker = async () => {
    while (next < bodies.length) {
      const body = bodies[next++]!;
      const response = await fetch(`${live.ingest!.url}/api/events`, {
        method: 'POST',
        headers: authHeaders(apiKey),
        body: JSON.stringify(body),
      });
      await response.body?.cancel();
      if (response.status !== 202) throw new Error(`queueing the ${tenants}-tenant grid: ingest answered ${response.status}`);
      addExpected(expected, body);
      accepted += body.length;
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return accepted;
}

/** Drains the backlog once per `--tenants` count; a first count of 1,000 drains what the batched scenario queued. */
async function measureDrain(): Promise<void> {
  const rates: number[] = [];
  const drains: unknown[] = [];
  raw.drain = drains;
  for (const [index, tenants] of tenantCounts.entries()) {
    // The batched scenario queued its backlog over the 1,000-tenant grid; any other count is queued here
    // (autocannon's per-request accounting is only exact over a short list of bodies).
    if (index > 0 || tenants !== TENANT_COUNT) {
      if (index === 0) await drainAndVerify('the batched scenario');
      await stopFunction('aggregator');
      log(`  queued ${int(await queueGrid(tenants))} events over ${int(tenants)} tenants`);
    }
    const backlog = await keySpace!.backlog();
    const { readyMs } = await startFunction('aggregator');
    const drainMs = await drained(600_000);
    const eventsPerSecond = backlog / (drainMs / 1_000);
    rates.push(eventsPerSecond);
    drains.push({ tenants, backlog, readyMs, drainMs });
    const slowdown = rates[0]! / eventsPerSecond;
    rows.push({
      scenario: `aggregator drain: ${int(backlog)} queued events, ${int(tenants)} tenants (${int(Math.min(backlog, tenants * 10))} tenant×feature keys)`,
      measured: `${int(eventsPerSecond)} events/s (${(drainMs / 1_000).toFixed(1)} s from ready to committed)${index > 0 ? `; ${slowdown.toFixed(1)} × slower than at ${int(tenantCounts[0]!)} tenants` : ''}`,
      target: index === 0 ? '≥ 150,000 events/s' : '≥ 100,000 events/s and ≤ 2 × slower',
      result: verdict(index === 0 ? eventsPerSecond >= 150_000 : eventsPerSecond >= 100_000 && slowdown <= 2),
    });
    log(
      `  drain at ${int(tenants)} tenants: ${int(backlog)} events in ${(drainMs / 1_000).toFixed(1)} s = ${int(eventsPerSecond)} events/s`,
    );
    await drainAndVerify(`the drain at ${int(tenants)} tenants`);
  }
}

/** Usage reads need the grid's tenants: when the batched scenario did not run, send the grid once. */
async function ensureGridData(): Promise<void> {
  const [row] = await database!.db.query<{ count: number }>('SELECT count(*)::int AS count FROM tenants');
  if ((row?.count ?? 0) >= TENANT_COUNT) return;
  for (const body of batchedBodies(100)) {
    const response = await fetch(`${live.ingest!.url}/api/events`, {
      method: 'POST',
      headers: authHeaders(apiKey),
      body: JSON.stringify(body),
    });
    await response.body?.cancel();
    if (response.status !== 202) throw new Error(`seeding answered ${response.status}`);
    addExpected(expected, body);
  }
  await drainAndVerify('seeding the grid');
}

async function measureUsage(): Promise<void> {
  await ensureGridData();
  const requests: CannonRequest[] = Array.from({ length: TENANT_COUNT }, (_, i) => ({
    method: 'GET',
    path: `/api/usage/${tenantName(i)}`,
  }));
  const yardstick = await baseline();
  const bare = await cannonWithCpu(
    { url: yardstick.url, connections: CONNECTIONS, durationS, headers: authHeaders(apiKey), requests },
    yardstick.pid,
  );
  raw.usageBaseline = bare;
  rows.push({
    scenario: `baseline: bare Fastify GET answering a cached string, ${CONNECTIONS} conn`,
    measured: `${int(bare.requestsPerSecond)} req/s, p99 ${ms(bare.latencyMs.p99)}; ${cpuText(bare)}`,
    target: '(yardstick)',
    result: 'info',
  });
  const result = await cannonWithCpu(
    { url: live.usage!.url, connections: CONNECTIONS, durationS, headers: authHeaders(apiKey), requests },
    live.usage!.pid,
  );
  raw.usage = result;
  const ratio = result.requestsPerSecond / bare.requestsPerSecond;
  const allOk = Object.keys(result.statuses).every((status) => status === '200');
  rows.push({
    scenario: `usage read GET /api/usage/:tenant, ${CONNECTIONS} conn: req/s`,
    measured: `${int(result.requestsPerSecond)} req/s = ${Math.round(ratio * 100)}% of the bare GET (${statusText(result.statuses)}); ${cpuText(result)} = ${(result.cpuUsPerRequest / bare.cpuUsPerRequest).toFixed(2)} × the bare GET's`,
    target: '≥ 20,000 req/s, or ≥ 70% of the bare GET',
    result: verdict((result.requestsPerSecond >= 20_000 || ratio >= 0.7) && allOk),
  });
  rows.push({
    scenario: `usage read, ${CONNECTIONS} conn: latency`,
    measured: `p99 ${ms(result.latencyMs.p99)} (p50 ${ms(result.latencyMs.p50)}; bare GET p99 ${ms(bare.latencyMs.p99)})`,
    target: 'p99 ≤ 5 ms',
    result: verdict(result.latencyMs.p99 <= 5),
  });
  log(
    `  usage: ${int(result.requestsPerSecond)} req/s, p99 ${ms(result.latencyMs.p99)}, ${cpuText(result)} (bare GET ${int(bare.requestsPerSecond)} req/s, ${cpuText(bare)})`,
  );
}

/**
 * Valkey memory per remembered idempotency key: sends `--dedupe-events` events with 40-character ids
 * (the client's own id shape) in batches of 100, resends a tenth of them (all must be duplicates), and
 * weighs every dedupe key of the run with MEMORY USAGE (exact, SAMPLES 0) — a figure that other users
 * of a shared Valkey cannot disturb.
 */
async function measureDedupe(): Promise<void> {
  const total = Number(args['dedupe-events']);
  const runId = randomBytes(4).toString('hex');
  const bodies: (BenchEvent & { id: string })[][] = [];
  for (let k = 0; k < total; k += 100) {
    bodies.push(
      Array.from({ length: Math.min(100, total - k) }, (_, j) => ({
        ...gridEvent(k + j),
        id: `${runId}-${randomBytes(12).toString('hex')}-${String(k + j).padStart(7, '0')}`,
      })),
    );
  }
  const send = async (batch: (BenchEvent & { id: string })[]): Promise<{ accepted: number; duplicates: number }> => {
    const response = await fetch(`${live.ingest!.url}/api/events`, {
      method: 'POST',
      headers: authHeaders(apiKey),
      body: JSON.stringify(batch),
    });
    if (response.status !== 202) throw new Error(`dedupe scenario: ingest answered ${response.status}: ${await response.text()}`);
    return (await response.json()) as { accepted: number; duplicates: number };
  };
  let accepted = 0;
  for (let i = 0; i < bodies.length; i += 8) {
    const results = await Promise.all(bodies.slice(i, i + 8).map(send));
    results.forEach((result, j) => {
      accepted += result.accepted;
      if (result.accepted === bodies[i + j]!.length) addExpected(expected, bodies[i + j]!);
    });
  }
  let duplicates = 0;
  for (const batch of bodies.slice(0, Math.ceil(bodies.length / 10))) duplicates += (await send(batch)).duplicates;
  const resent = bodies.slice(0, Math.ceil(bodies.length / 10)).reduce((sum, batch) => sum + batch.length, 0);
  const keys = await keySpace!.dedupeKeys();
  const pipeline = keySpace!.redis.pipeline();
  for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
  const bytes = ((await pipeline.exec()) ?? []).reduce((sum, [, value]) => sum + Number(value ?? 0), 0);
  const perEvent = bytes / accepted;
  raw.dedupe = { events: total, accepted, resent, duplicates, keys: keys.length, bytes, bytesPerEvent: perEvent };
  rows.push({
    scenario: `dedupe memory: ${int(total)} events with 40-char ids, then a tenth resent`,
    measured: `${perEvent.toFixed(1)} bytes per remembered id (${int(bytes)} bytes in ${int(keys.length)} keys); ${int(duplicates)}/${int(resent)} resends flagged duplicate`,
    target: '≤ 40 bytes, every resend a duplicate',
    result: verdict(perEvent <= 40 && accepted === total && duplicates === resent),
  });
  log(`  dedupe: ${perEvent.toFixed(1)} bytes per id, ${int(keys.length)} keys, ${int(duplicates)}/${int(resent)} resends duplicate`);
  await drainAndVerify('the dedupe scenario');
}

async function measureEndToEnd(): Promise<void> {
  if (!live.aggregator) await startFunction('aggregator');
  const spec: E2eSpec = {
    ingestUrl: live.ingest!.url,
    usageUrl: live.usage!.url,
    apiKey,
    eventsPerSecond: Number(args['e2e-rate']),
    durationS: Number(args['e2e-duration']),
    markersPerSecond: 10,
    runId: randomBytes(4).toString('hex'),
  };
  // The queue's backlog while it runs says whether the aggregator keeps up (lag = backlog / rate).
  const backlogSamples: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      backlogSamples.push(await keySpace!.backlog());
      await sleep(250);
    }
  })();
  const result = await runChild<E2eResult>([join(ROOT, 'scripts/bench/e2e.ts'), JSON.stringify(spec)]).finally(() => (sampling = false));
  await sampler;
  const backlogMax = Math.max(0, ...backlogSamples);
  const backlogMean = backlogSamples.reduce((sum, value) => sum + value, 0) / Math.max(1, backlogSamples.length);
  for (const [key, tokens] of result.expected) expected.set(key, (expected.get(key) ?? 0n) + BigInt(tokens));
  const { expected: _omitted, markerTenants: _markers, ...shown } = result;
  raw.e2e = { ...shown, backlogMax, backlogMean };
  const v = result.visibleMs;
  const steady = result.achievedEventsPerSecond >= spec.eventsPerSecond * 0.95;
  rows.push({
    scenario: `end to end at ${int(spec.eventsPerSecond)} events/s for ${spec.durationS} s: 202 → visible in /api/usage`,
    measured: `p99 ${ms(v.p99)} (p50 ${ms(v.p50)}, max ${ms(v.max)}; ${v.count}/${result.markers} markers; ${int(result.achievedEventsPerSecond)} events/s sent, ${result.lost} lost by the client; queue backlog mean ${int(backlogMean)}, max ${int(backlogMax)} events)`,
    target: 'p99 ≤ 1 s',
    result: verdict(v.p99 <= 1_000 && result.markersTimedOut === 0 && steady),
  });
  log(
    `  e2e: p99 ${ms(v.p99)}, p50 ${ms(v.p50)}, ${int(result.achievedEventsPerSecond)} events/s, ${result.markersTimedOut} markers timed out, backlog mean ${int(backlogMean)} max ${int(backlogMax)}`,
  );
  await drainAndVerify('end to end');
}

async function measureLoadtest(): Promise<void> {
  if (!live.aggregator) await startFunction('aggregator');
  const seconds = Math.max(6, durationS);
  const result = await runChild<LoadtestResult>([
    join(ROOT, 'scripts/loadtest.ts'),
    '--url',
    live.ingest!.url,
    '--usage-url',
    live.usage!.url,
    '--api-key',
    apiKey,
    '--duration',
    String(seconds),
    '--ramp',
    String(Math.round(seconds / 2)),
    '--max-clients',
    args['loadtest-clients'],
    '--tenants',
    '50',
    '--json',
  ]);
  for (const [tenant, features] of Object.entries(result.acceptedTokens)) {
    for (const [feature, tokens] of Object.entries(features))
      expected.set(comboKey(tenant, feature), (expected.get(comboKey(tenant, feature)) ?? 0n) + BigInt(tokens));
  }
  const { acceptedTokens: _omitted, ...shown } = result;
  raw.loadtest = shown;
  const l = result.latencyMs;
  rows.push({
    scenario: `load test, short local run: 0 → ${args['loadtest-clients']} clients over ${Math.round(seconds / 2)} s, ${seconds} s`,
    measured: `${int(result.requestsPerSecond)} req/s, p50 ${ms(l.p50)}, p95 ${ms(l.p95)}, p99 ${ms(l.p99)}, ${(result.unexpectedRate * 100).toFixed(2)}% unexpected`,
    target: 'p95 < 200 ms, p99 < 500 ms',
    result: verdict(result.pass.all),
  });
  log(
    `  loadtest: ${int(result.requestsPerSecond)} req/s, p95 ${ms(l.p95)}, p99 ${ms(l.p99)}, statuses ${JSON.stringify(result.statusesByKind)}`,
  );
  await drainAndVerify('the load test');
}

function peakRssRows(): void {
  const peaks: Record<string, number> = {};
  for (const [name, started] of processes) {
    peaks[name] = Math.max(...started.map((process_) => process_.peakRssMb()).filter((value) => !Number.isNaN(value)));
  }
  raw.peakRssMb = peaks;
  for (const name of FUNCTIONS) {
    if (!Number.isFinite(peaks[name])) continue;
    rows.push({
      scenario: `peak RSS (VmHWM): ${name}`,
      measured: `${peaks[name]!.toFixed(0)} MB`,
      target: '≤ 150 MB',
      result: verdict(peaks[name]! <= 150),
    });
  }
  if (Number.isFinite(peaks.baseline)) {
    rows.push({
      scenario: 'peak RSS (VmHWM): baseline Fastify',
      measured: `${peaks.baseline!.toFixed(0)} MB`,
      target: '(yardstick)',
      result: 'info',
    });
  }
}

function gitDescription(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short=7', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function writeTable(table: string, header: string): void {
  const block = `${header}\n\n${table}`;
  for (const file of ['README.md', 'docs/benchmarks.md']) {
    const path = join(ROOT, file);
    if (!existsSync(path)) continue;
    const updated = replaceBetweenMarkers(readFileSync(path, 'utf8'), block);
    if (updated === undefined) log(`  ${file}: no <!-- bench:start --> / <!-- bench:end --> markers; not written`);
    else writeFileSync(path, updated);
  }
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await Promise.all(Object.keys(live).map((name) => stopFunction(name as FunctionName))).catch(() => undefined);
    await baselineProcess?.stop();
    killAll();
    await keySpace?.clear().catch((error: Error) => log(`  could not delete the bench keys: ${error.message}`));
    await database?.drop().catch((error: Error) => log(`  could not drop ${database?.name}: ${error.message}`));
    if (bundlesDir && !args.bundles) rmSync(bundlesDir, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`\n${signal}: stopping the bench and removing what it created`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const started = performance.now();
  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}`;
  const loadBefore = loadavg()[0]!.toFixed(1);
  log(`FlagMeter bench — ${machine}, commit ${gitDescription()}, telemetry ${telemetryOn ? 'on' : 'off'}, load average ${loadBefore}`);
  if (args.bundles) {
    bundlesDir = resolve(args.bundles);
    log(`using the bundles in ${bundlesDir}`);
  } else {
    log('building bundles…');
    bundlesDir = (await buildBundles()).dir;
  }
  database = await createBenchDatabase();
  keySpace = new BenchKeySpace();
  log(`database ${database.name}, key prefix ${keySpace.prefix}`);
  log('starting functions…');
  await measureStartup();
  let yardstick: Yardstick = { requestsPerSecond: Number.NaN, p99: Number.NaN, cpuUsPerRequest: Number.NaN };
  if (selected.has('baseline')) {
    log('baseline…');
    yardstick = await measureBaseline();
  }
  if (selected.has('single')) {
    log('single-event ingest…');
    await measureSingle(yardstick);
  }
  if (selected.has('batched')) {
    log('batched ingest (filling the drain backlog, aggregator stopped)…');
    await measureBatched();
  }
  if (selected.has('drain')) {
    log('aggregator drain…');
    await measureDrain();
  } else if (selected.has('batched')) {
    await drainAndVerify('batched ingest');
  }
  if (selected.has('usage')) {
    log('usage read…');
    await measureUsage();
  }
  if (selected.has('dedupe')) {
    log('dedupe memory…');
    await measureDedupe();
  }
  if (selected.has('e2e')) {
    log('end to end…');
    await measureEndToEnd();
  }
  if (selected.has('loadtest')) {
    log('load test (short local run)…');
    await measureLoadtest();
  }
  peakRssRows();
  const analyzed = autovacuumOff ? '; autovacuum off in this PostgreSQL, so the bench ran ANALYZE after each drain' : '';
  const header = `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}; commit ${gitDescription()}; telemetry ${telemetryOn ? 'on' : 'off'}${analyzed}; 1-min load average ${loadBefore} before the run; ${Math.round((performance.now() - started) / 1_000)} s run.`;
  const table = renderTable(rows);
  process.stdout.write(`\n${header}\n\n${table}\n`);
  if (args.write) writeTable(table, header);
  if (args.json) writeFileSync(args.json, `${JSON.stringify({ header, rows, raw }, null, 2)}\n`);
  const failed = rows.filter((row) => row.result === 'FAIL').length;
  process.stdout.write(`\n${failed === 0 ? 'every target met' : `${failed} target(s) missed`}\n`);
}

try {
  await main();
} catch (error) {
  log(`bench failed: ${(error as Error).stack ?? error}`);
  if (rows.length > 0) process.stdout.write(`\nmeasured before the failure:\n\n${renderTable(rows)}\n`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
