/**
 * Measures the client against a running FlagMeter: the cost of one `track()` call in the caller's
 * thread, and the events/s one client process sustains end to end (202s from the server).
 *
 *   FLAGMETER_URL=http://127.0.0.1:3000 FLAGMETER_API_KEY=fm_... node --import tsx scripts/client-bench.ts
 *
 * BENCH_SECONDS (default 10), BENCH_BATCH (1000), BENCH_CONCURRENCY (4) tune the throughput run.
 */
import { createMeter, type MeterError } from '../packages/client/src/index.ts';

const url = process.env.FLAGMETER_URL;
const apiKey = process.env.FLAGMETER_API_KEY;
if (!url || !apiKey) {
  process.stderr.write('set FLAGMETER_URL and FLAGMETER_API_KEY (npm start prints both)\n');
  process.exit(64);
}
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const batchSize = Number(process.env.BENCH_BATCH ?? 1_000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 4);
const FEATURES = ['gpt-4o', 'openai/gpt-4o-mini', 'claude-sonnet-4', 'text-embedding-3-small'];
const tenant = `bench-${process.pid}`;
const errors: MeterError[] = [];

/** Time spent inside track() only: the loop is synchronous, so no sending overlaps it. */
async function trackOverhead(): Promise<number> {
  const calls = 100_000;
  const meter = createMeter({ url: url!, apiKey: apiKey!, batchSize: 1_000, maxBufferSize: calls, onError: (error) => errors.push(error) });
  const perCall: number[] = [];
  for (let round = 0; round < 12; round++) {
    const started = process.hrtime.bigint();
    for (let index = 0; index < calls; index++) void meter.track({ tenant, feature: FEATURES[index & 3]!, tokens: 1 + (index & 1023) });
    perCall.push(Number(process.hrtime.bigint() - started) / calls);
    await meter.flush();
  }
  await meter.close();
  // The first rounds warm the JIT up; the median of the rest is the steady cost.
  const steady = perCall.slice(2).sort((a, b) => a - b);
  return steady[Math.floor(steady.length / 2)]!;
}

/** As many events as the server takes: `block` makes the loop wait whenever the buffer is full. */
async function sustainedRate(): Promise<{
  eventsPerSecond: number;
  clientCpuNsPerEvent: number;
  stats: ReturnType<ReturnType<typeof createMeter>['stats']>;
}> {
  const meter = createMeter({
    url: url!,
    apiKey: apiKey!,
    batchSize,
    maxConcurrentRequests: concurrency,
    maxBufferSize: batchSize * concurrency * 2,
    onBufferFull: 'block',
    onError: (error) => errors.push(error),
  });
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1_000;
  for (let index = 0; performance.now() < deadline; index++) {
    await meter.track({ tenant, feature: FEATURES[index & 3]!, tokens: 1 + (index & 1023) });
  }
  await meter.close();
  const elapsed = (performance.now() - started) / 1_000;
  const stats = meter.stats();
  // The client's own CPU (tracking, JSON, HTTP) per event: what an application pays to meter.
  const cpu = process.cpuUsage(cpuBefore);
  const clientCpuNsPerEvent = Math.round(((cpu.user + cpu.system) * 1_000) / stats.accepted);
  return { eventsPerSecond: Math.round(stats.accepted / elapsed), clientCpuNsPerEvent, stats };
}

const overheadNs = await trackOverhead();
const { eventsPerSecond, clientCpuNsPerEvent, stats } = await sustainedRate();
process.stdout.write(
  `${JSON.stringify({ trackOverheadNs: Math.round(overheadNs), eventsPerSecond, clientCpuNsPerEvent, batchSize, concurrency, seconds, stats, errors: errors.length }, null, 2)}\n`,
);
