/**
 * The end-to-end load process: an application tracking a steady stream of usage events through the
 * FlagMeter client, plus marker events (one new tenant each) whose time from 202 to visible in
 * `GET /api/usage/:tenant` it measures by polling. Prints one JSON result line.
 *
 * Arguments (JSON): {ingestUrl, usageUrl, apiKey, eventsPerSecond, durationS, markersPerSecond, runId}
 */
import { createMeter, type MeterError } from '../../packages/client/src/index.ts';
import { comboKey, gridEvent } from './events.ts';
import { type LatencySummary, summarise } from './latency.ts';

export interface E2eSpec {
  ingestUrl: string;
  usageUrl: string;
  apiKey: string;
  eventsPerSecond: number;
  durationS: number;
  markersPerSecond: number;
  /** Event ids are `<runId>-<n>`, so the orchestrator can name (and delete) their dedupe keys. */
  runId: string;
}

export interface E2eResult {
  tracked: number;
  accepted: number;
  achievedEventsPerSecond: number;
  /** Background events not counted (refused, dropped, given up): their keys, for the expected totals. */
  lost: number;
  markers: number;
  markersTimedOut: number;
  visibleMs: LatencySummary;
  /** (tenant, feature, tokens) of every tracked event that the client did not report as lost. */
  expected: [string, string][];
  markerTenants: string[];
}

// Polling is load on usage and PostgreSQL too: often enough for a 1 s target, rarely enough not to skew it.
const POLL_INTERVAL_MS = 25;
const VISIBLE_TIMEOUT_MS = 15_000;
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export const markerTenant = (runId: string, index: number): string => `m-${runId}-${index}`;

export async function runEndToEnd(spec: E2eSpec): Promise<E2eResult> {
  const lostIds = new Set<string>();
  const onError = (error: MeterError) => {
    for (const event of error.events) lostIds.add(event.id);
  };
  // Configured as a high-volume application would: full batches, a few in flight, `block` rather than drop.
  const meter = createMeter({
    url: spec.ingestUrl,
    apiKey: spec.apiKey,
    batchSize: 500,
    maxConcurrentRequests: 8,
    flushIntervalMs: 50,
    maxBufferSize: 20_000,
    onBufferFull: 'block',
    onError,
  });
  const markerMeter = createMeter({ url: spec.ingestUrl, apiKey: spec.apiKey, batchSize: 1, flushIntervalMs: 1, onError });
  const visible: number[] = [];
  let markersTimedOut = 0;
  const markerTenants: string[] = [];
  const watches: Promise<void>[] = [];

  const watchMarker = async (tenant: string, tokens: number) => {
    await markerMeter.track({ tenant, feature: 'marker', tokens, id: `${spec.runId}-${tenant}` });
    await markerMeter.flush();
    const accepted = performance.now();
    while (performance.now() - accepted < VISIBLE_TIMEOUT_MS) {
      const response = await fetch(`${spec.usageUrl}/api/usage/${tenant}`, { headers: { authorization: `Bearer ${spec.apiKey}` } }).catch(() => undefined);
      if (response?.status === 200) {
        const body = (await response.json()) as { tokens: string | number };
        if (String(body.tokens) === String(tokens)) {
          visible.push(performance.now() - accepted);
          return;
        }
      } else {
        await response?.body?.cancel();
      }
      await sleep(POLL_INTERVAL_MS);
    }
    markersTimedOut++;
  };

  const started = performance.now();
  const end = started + spec.durationS * 1_000;
  const markerEveryMs = 1_000 / spec.markersPerSecond;
  let tracked = 0;
  let markers = 0;
  while (performance.now() < end) {
    const elapsed = performance.now() - started;
    const due = Math.floor((elapsed / 1_000) * spec.eventsPerSecond);
    for (; tracked < due; tracked++) {
      const event = gridEvent(tracked);
      await meter.track({ ...event, id: `${spec.runId}-${tracked}` });
    }
    while (markers * markerEveryMs <= elapsed) {
      const tenant = markerTenant(spec.runId, markers);
      markerTenants.push(tenant);
      watches.push(watchMarker(tenant, 1 + markers));
      markers++;
    }
    await sleep(5);
  }
  const trackingSeconds = (performance.now() - started) / 1_000;
  await meter.close();
  await Promise.all(watches);
  await markerMeter.close();

  const expected = new Map<string, bigint>();
  for (let n = 0; n < tracked; n++) {
    if (lostIds.has(`${spec.runId}-${n}`)) continue;
    const event = gridEvent(n);
    const key = comboKey(event.tenant, event.feature);
    expected.set(key, (expected.get(key) ?? 0n) + BigInt(event.tokens));
  }
  for (let i = 0; i < markers; i++) {
    const tenant = markerTenant(spec.runId, i);
    if (!lostIds.has(`${spec.runId}-${tenant}`)) expected.set(comboKey(tenant, 'marker'), BigInt(1 + i));
  }
  const stats = meter.stats();
  return {
    tracked,
    accepted: stats.accepted,
    achievedEventsPerSecond: stats.accepted / trackingSeconds,
    lost: lostIds.size,
    markers,
    markersTimedOut,
    visibleMs: summarise(visible),
    expected: [...expected].map(([key, tokens]) => [key, tokens.toString()]),
    markerTenants,
  };
}

if (process.argv[1] === import.meta.filename) {
  const result = await runEndToEnd(JSON.parse(process.argv[2]!) as E2eSpec);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
