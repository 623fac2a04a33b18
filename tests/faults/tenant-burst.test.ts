import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, type FaultStack } from './harness.ts';

// The images' heap flags (stacks/Dockerfile, scripts/bench/stack.ts PRODUCTION_NODE_OPTIONS).
const IMAGE_NODE_OPTIONS = '--max-old-space-size=96 --max-semi-space-size=4';
const TENANTS = 10_000;
const FEATURES = 10;
// Requests of the most events ingest takes (shared/events.ts MAX_BATCH_EVENTS): entries of ~125 events each.
const PER_REQUEST = 1_000;

describe.skipIf(!servicesAvailable)("fault: a backlog spread over many tenants, aggregator under the images' heap cap", () => {
  let stack: FaultStack;

  beforeAll(async () => {
    // The production defaults (8 partitions, 2 lanes, 100 entries a read), not the tests' 4 partitions.
    stack = await createFaultStack({ QUEUE_PARTITIONS: '8', AGGREGATOR_LANES: '2', AGGREGATOR_BATCH_SIZE: '100' });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it(`drains ${TENANTS.toLocaleString('en-US')} tenants x ${FEATURES} features (every event its own group) exactly, without dying`, async () => {
    const label = `burst${Math.random().toString(36).slice(2, 6)}`;
    const tenantOf = (index: number) => `${label}-${index}`;
    const tokensOf = (tenant: number, feature: number) => 1 + ((tenant * 31 + feature * 7) % 1_000);
    const now = Date.now();
    // Consecutive events go to different tenants, as a busy multi-tenant front end sends them: every
    // request of 100 events touches 100 (tenant, feature) pairs, and each pair occurs once.
    const total = TENANTS * FEATURES;
    await waitFor(() => stack.runtime.queue.ping(), { what: 'Valkey to be connected' });
    for (let start = 0; start < total; start += PER_REQUEST) {
      const events = [];
      for (let k = start; k < Math.min(total, start + PER_REQUEST); k++) {
        const tenant = k % TENANTS;
        const feature = Math.floor(k / TENANTS);
        events.push({ tenant: tenantOf(tenant), feature: `f${feature}`, tokens: tokensOf(tenant, feature), timestamp: now });
      }
      await stack.runtime.queue.enqueue(events, now);
    }
    const started = performance.now();
    const aggregator = await stack.startAggregator('burst-agg', { NODE_OPTIONS: IMAGE_NODE_OPTIONS });
    let died: string | undefined;
    void aggregator.exited.then((code) => (died = `exited with ${code}:\n${aggregator.output().slice(-2_000)}`));
    await waitFor(
      async () => {
        if (died) return true;
        return (await stack.runtime.queue.backlog()).every((n) => n === 0);
      },
      { timeoutMs: 240_000, intervalMs: 250, what: 'the backlog to drain' },
    );
    expect(died).toBeUndefined();
    const peak = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${aggregator.child.pid}/status`, 'utf8'))?.[1];
    const seconds = (performance.now() - started) / 1_000;
    process.stdout.write(
      `tenant burst: ${total.toLocaleString('en-US')} events over ${TENANTS.toLocaleString('en-US')} tenants drained in ${seconds.toFixed(1)} s (${Math.round(total / seconds).toLocaleString('en-US')} events/s, aggregator peak RSS ${Math.round(Number(peak) / 1024)} MB)\n`,
    );

    // Exact, per tenant and per (tenant, feature).
    const like = `${label}-%`;
    const periods = await stack.runtime.db.query<{ tenant: string; tokens: bigint; events: bigint }>(
      'SELECT tenant, sum(tokens)::bigint AS tokens, sum(events)::bigint AS events FROM usage_periods WHERE tenant LIKE $1 GROUP BY tenant',
      [like],
    );
    expect(periods.length).toBe(TENANTS);
    const wrong = periods.filter((row) => {
      const index = Number(row.tenant.slice(label.length + 1));
      let tokens = 0n;
      for (let feature = 0; feature < FEATURES; feature++) tokens += BigInt(tokensOf(index, feature));
      return row.tokens !== tokens || row.events !== BigInt(FEATURES);
    });
    expect(wrong.slice(0, 5)).toEqual([]);
    const [features] = await stack.runtime.db.query<{ rows: bigint; tokens: bigint; events: bigint }>(
      'SELECT count(DISTINCT (tenant, feature))::bigint AS rows, sum(tokens)::bigint AS tokens, sum(events)::bigint AS events FROM usage_daily WHERE tenant LIKE $1',
      [like],
    );
    let expectedTokens = 0n;
    for (let tenant = 0; tenant < TENANTS; tenant++)
      for (let feature = 0; feature < FEATURES; feature++) expectedTokens += BigInt(tokensOf(tenant, feature));
    expect(features).toEqual({ rows: BigInt(total), tokens: expectedTokens, events: BigInt(total) });
    for (const table of ['usage_hourly', 'usage_daily']) {
      const [sums] = await stack.runtime.db.query<{ tokens: bigint; events: bigint }>(
        `SELECT sum(tokens)::bigint AS tokens, sum(events)::bigint AS events FROM ${table} WHERE tenant LIKE $1`,
        [like],
      );
      expect(sums).toEqual({ tokens: expectedTokens, events: BigInt(total) });
    }
    const [{ created }] = (await stack.runtime.db.query<{ created: number }>(
      'SELECT count(*)::int AS created FROM tenants WHERE name LIKE $1',
      [like],
    )) as [{ created: number }];
    expect(created).toBe(TENANTS);
    expect(died).toBeUndefined();
  }, 300_000);
});
