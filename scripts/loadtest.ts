/**
 * `npm run loadtest -- --url URL`: the classic load profile against a real deployment. Clients ramp
 * from 0 to `--max-clients` (default 1,000) over `--ramp` seconds and then hold until `--duration`;
 * each walks a shuffled mix of 80% `POST /api/events` (one event; 5% of them invalid, expecting 400)
 * and 20% `GET /api/usage/:tenant`. Reports p50/p95/p99, answers by status and kind, and pass/fail
 * against p95 < 200 ms and p99 < 500 ms with under 1% unexpected answers (5xx, wrong status,
 * connection errors).
 *
 *   npm run loadtest -- --url https://meter.example.com --api-key fm_... [--duration 180] [--ramp 120]
 *     [--max-clients 1000] [--tenants 100] [--usage-url URL] [--json]
 *
 * `--usage-url` is for local runs where ingest and usage listen on separate ports (the bench does
 * that); behind Traefik both paths share one URL. The API key may also come from FLAGMETER_API_KEY.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { type RunningCannon, startAutocannon } from './bench/cannon.ts';
import { type LatencySummary, LatencyRecorder } from './bench/latency.ts';

type Kind = 'post' | 'invalid' | 'get';

export interface LoadtestOptions {
  url: string;
  usageUrl: string;
  apiKey: string;
  durationS: number;
  rampS: number;
  maxClients: number;
  tenants: number;
}

export interface LoadtestResult {
  options: Omit<LoadtestOptions, 'apiKey'>;
  requests: number;
  requestsPerSecond: number;
  latencyMs: LatencySummary;
  statusesByKind: Record<Kind, Record<string, number>>;
  connectionErrors: number;
  unexpected: number;
  unexpectedRate: number;
  /** Tokens answered 202, per tenant and feature: what the rollups must show once drained. */
  acceptedTokens: Record<string, Record<string, number>>;
  pass: { p95: boolean; p99: boolean; errors: boolean; all: boolean };
}

const EXPECTED_STATUS: Record<Kind, number> = { post: 202, invalid: 400, get: 200 };
const STEPS = 20;
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Deterministic shuffle, so every run sends the same mix in the same order. */
function shuffled<T>(items: T[], seed = 42): T[] {
  const result = [...items];
  let state = seed;
  for (let i = result.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    const j = state % (i + 1);
    [result[i], result[j]] = [result[j]!, result[i]!];
  }
  return result;
}

interface PlannedRequest {
  kind: Kind;
  method: 'GET' | 'POST';
  path: string;
  body?: string;
  tenant: string;
  tokens: number;
}

/** A 100-request cycle: 80 POSTs (4 of them invalid) and 20 GETs, over `tenants` tenants. */
function plan(tenantNames: string[]): PlannedRequest[] {
  const requests: PlannedRequest[] = [];
  for (let i = 0; i < 100; i++) {
    const tenant = tenantNames[i % tenantNames.length]!;
    const tokens = 1 + ((i * 37) % 500);
    if (i < 76) {
      requests.push({
        kind: 'post',
        method: 'POST',
        path: '/api/events',
        body: JSON.stringify({ tenant, feature: 'gpt-4o', tokens }),
        tenant,
        tokens,
      });
    } else if (i < 80) {
      // Invalid in a different way each: zero tokens, missing feature, bad tenant name, tokens as text.
      const bodies = [
        { tenant, feature: 'gpt-4o', tokens: 0 },
        { tenant, tokens },
        { tenant: 'bad tenant!', feature: 'gpt-4o', tokens },
        { tenant, feature: 'gpt-4o', tokens: 'many' },
      ];
      requests.push({ kind: 'invalid', method: 'POST', path: '/api/events', body: JSON.stringify(bodies[i - 76]), tenant, tokens: 0 });
    } else {
      requests.push({ kind: 'get', method: 'GET', path: `/api/usage/${tenant}`, tenant, tokens: 0 });
    }
  }
  return shuffled(requests);
}

/** One event per tenant, then wait (up to 15 s) until usage knows them, so GETs are not 404 at the start. */
async function seed(
  options: LoadtestOptions,
  tenantNames: string[],
  count: (tenant: string, feature: string, tokens: number) => void,
): Promise<void> {
  const headers = { authorization: `Bearer ${options.apiKey}`, 'content-type': 'application/json' };
  const response = await fetch(`${options.url}/api/events`, {
    method: 'POST',
    headers,
    body: JSON.stringify(tenantNames.map((tenant) => ({ tenant, feature: 'seed', tokens: 1 }))),
  });
  if (response.status !== 202) throw new Error(`seeding the load-test tenants answered ${response.status}: ${await response.text()}`);
  for (const tenant of tenantNames) count(tenant, 'seed', 1);
  const deadline = Date.now() + 15_000;
  for (const tenant of [tenantNames[0]!, tenantNames.at(-1)!]) {
    while (Date.now() < deadline) {
      const usage = await fetch(`${options.usageUrl}/api/usage/${tenant}`, { headers });
      await usage.body?.cancel();
      if (usage.status === 200) break;
      await sleep(100);
    }
  }
}

export async function runLoadtest(options: LoadtestOptions, progress: (line: string) => void = () => {}): Promise<LoadtestResult> {
  const run = randomBytes(3).toString('hex');
  const tenantNames = Array.from({ length: options.tenants }, (_, i) => `loadtest-${run}-${i}`);
  const acceptedTokens: Record<string, Record<string, number>> = {};
  const count = (tenant: string, feature: string, tokens: number) => {
    const features = (acceptedTokens[tenant] ??= {});
    features[feature] = (features[feature] ?? 0) + tokens;
  };
  await seed(options, tenantNames, count);
  const planned = plan(tenantNames);
  const latency = new LatencyRecorder();
  const statusesByKind: Record<Kind, Record<string, number>> = { post: {}, invalid: {}, get: {} };
  let connectionErrors = 0;
  const headers = { authorization: `Bearer ${options.apiKey}`, 'content-type': 'application/json' };
  const baseFor = (request: PlannedRequest) => (request.kind === 'get' ? options.usageUrl : options.url);

  // autocannon talks to one origin per instance: with separate ingest and usage URLs, each step runs
  // one instance per origin, sharing the step's clients 80/20.
  const origins = options.usageUrl === options.url ? [options.url] : [options.url, options.usageUrl];
  const started = performance.now();
  const instances: RunningCannon[] = [];
  const steps = Math.min(STEPS, options.maxClients);
  for (let step = 0; step < steps; step++) {
    const startAt = (step * options.rampS * 1_000) / steps;
    const clients = Math.floor(((step + 1) * options.maxClients) / steps) - Math.floor((step * options.maxClients) / steps);
    await sleep(Math.max(0, startAt - (performance.now() - started)));
    const remainingS = options.durationS - (performance.now() - started) / 1_000;
    if (remainingS < 1 || clients === 0) continue;
    for (const origin of origins) {
      const mine = planned.filter((request) => baseFor(request) === origin);
      const connections = origins.length === 1 ? clients : Math.max(1, Math.round((clients * mine.length) / planned.length));
      const running = startAutocannon({
        url: origin,
        connections,
        duration: Math.ceil(remainingS) + 60,
        timeout: 10,
        headers,
        requests: mine.map((request) => ({
          method: request.method,
          path: request.path,
          ...(request.body === undefined ? {} : { body: request.body }),
          onResponse: (status: number) => {
            statusesByKind[request.kind][status] = (statusesByKind[request.kind][status] ?? 0) + 1;
            if (status === 202 && request.kind === 'post') count(request.tenant, 'gpt-4o', request.tokens);
          },
        })),
      });
      running.instance.on('response', (_client, _status, _bytes, responseTime) => latency.record(responseTime));
      running.instance.on('reqError', () => connectionErrors++);
      instances.push(running);
    }
    progress(`${Math.round((performance.now() - started) / 1_000)}s: ${Math.floor(((step + 1) * options.maxClients) / steps)} clients`);
  }
  // Every stage stops together, each letting its requests in flight finish, so every 202 is counted.
  await sleep(Math.max(0, options.durationS * 1_000 - (performance.now() - started)));
  const answeredInTime = latency.count;
  for (const running of instances) running.stopGracefully();
  await Promise.all(instances.map((running) => running.done));
  const elapsedS = options.durationS;
  let unexpected = connectionErrors;
  for (const kind of Object.keys(statusesByKind) as Kind[]) {
    for (const [status, count] of Object.entries(statusesByKind[kind])) if (Number(status) !== EXPECTED_STATUS[kind]) unexpected += count;
  }
  const latencyMs = latency.summary();
  const requests = latency.count + connectionErrors;
  const unexpectedRate = requests === 0 ? 1 : unexpected / requests;
  const pass = { p95: latencyMs.p95 < 200, p99: latencyMs.p99 < 500, errors: unexpectedRate < 0.01 };
  const { apiKey: _secret, ...shown } = options;
  return {
    options: shown,
    requests,
    requestsPerSecond: answeredInTime / elapsedS,
    latencyMs,
    statusesByKind,
    connectionErrors,
    unexpected,
    unexpectedRate,
    acceptedTokens,
    pass: { ...pass, all: pass.p95 && pass.p99 && pass.errors },
  };
}

function report(result: LoadtestResult): string {
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  const verdict = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
  const { latencyMs: l } = result;
  const lines = [
    `load test: ${result.options.url}${result.options.usageUrl === result.options.url ? '' : ` (usage: ${result.options.usageUrl})`}`,
    `  0 → ${result.options.maxClients} clients over ${result.options.rampS} s, ${result.options.durationS} s in all, ${result.options.tenants} tenants`,
    `  ${result.requests} requests, ${Math.round(result.requestsPerSecond)} req/s`,
    `  latency: p50 ${ms(l.p50)}  p95 ${ms(l.p95)}  p99 ${ms(l.p99)}  max ${ms(l.max)}`,
  ];
  for (const [kind, statuses] of Object.entries(result.statusesByKind)) {
    const parts = Object.entries(statuses).map(([status, count]) => `${status}: ${count}`);
    lines.push(`  ${kind.padEnd(7)} (expects ${EXPECTED_STATUS[kind as Kind]}): ${parts.join(', ') || 'none'}`);
  }
  lines.push(
    `  connection errors/timeouts: ${result.connectionErrors}; unexpected answers: ${result.unexpected} (${(result.unexpectedRate * 100).toFixed(2)}%)`,
  );
  lines.push(
    `  p95 < 200 ms: ${verdict(result.pass.p95)}   p99 < 500 ms: ${verdict(result.pass.p99)}   unexpected < 1%: ${verdict(result.pass.errors)}`,
  );
  lines.push(`  overall: ${verdict(result.pass.all)}`);
  return `${lines.join('\n')}\n`;
}

if (process.argv[1] === import.meta.filename) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      'usage-url': { type: 'string' },
      'api-key': { type: 'string' },
      duration: { type: 'string', default: '180' },
      ramp: { type: 'string' },
      'max-clients': { type: 'string', default: '1000' },
      tenants: { type: 'string', default: '100' },
      json: { type: 'boolean', default: false },
    },
  });
  const apiKey = values['api-key'] ?? process.env.FLAGMETER_API_KEY;
  if (!values.url || !apiKey) {
    process.stderr.write(
      'usage: npm run loadtest -- --url URL --api-key KEY [--duration 180] [--ramp 120] [--max-clients 1000] [--tenants 100] [--usage-url URL] [--json]\n',
    );
    process.exit(64);
  }
  const durationS = Number(values.duration);
  const options: LoadtestOptions = {
    url: values.url.replace(/\/$/, ''),
    usageUrl: (values['usage-url'] ?? values.url).replace(/\/$/, ''),
    apiKey,
    durationS,
    rampS: values.ramp === undefined ? Math.round((durationS * 2) / 3) : Number(values.ramp),
    maxClients: Number(values['max-clients']),
    tenants: Number(values.tenants),
  };
  const result = await runLoadtest(options, values.json ? undefined : (line) => process.stderr.write(`  ${line}\n`));
  process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : report(result));
  process.exitCode = result.pass.all ? 0 : 1;
}
