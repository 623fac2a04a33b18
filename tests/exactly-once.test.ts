import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../shared/domain/keys.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';
import { addTo, byTenant, rolledUp, sendBatches, type SentEvent, sortedEntries, type Totals } from './helpers/load.ts';
import { type RunningProcess, startAggregatorProcess, startProcess, waitFor } from './helpers/processes.ts';
import { functionEnv } from './helpers/runtime.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, uniqueName } from './helpers/services.ts';

function makeBatches(tenants: string[], requests: number, perRequest: number): SentEvent[][] {
  const features = ['gpt-4o', 'openai/gpt-4o-mini', 'claude-3.5', 'embed', 'whisper'];
  return Array.from({ length: requests }, (_, r) =>
    Array.from({ length: perRequest }, (_, i) => ({
      tenant: tenants[(r * perRequest + i) % tenants.length]!,
      feature: features[(r + i) % features.length]!,
      tokens: 1 + ((r * 7919 + i * 104_729) % 5000),
    })),
  );
}

describe.skipIf(!servicesAvailable)('exactly once through aggregator crashes', () => {
  let database: TestDatabase;
  let keySpace: ReturnType<typeof createKeySpace>;
  let runtime: Runtime;
  let env: Record<string, string>;
  let apiKey: string;
  let ingest: RunningProcess;
  const running: RunningProcess[] = [];

  const startAggregator = async (id: string) => {
    const aggregator = await startAggregatorProcess(env, id);
    running.push(aggregator);
    return aggregator;
  };

  const expectExactly = async (tenants: string[], accepted: Totals) => {
    const expected = byTenant(accepted);
    await waitFor(
      async () => {
        const { periods } = await rolledUp(runtime.db, tenants);
        return sortedEntries(expected).every(([tenant, tokens]) => periods.get(tenant) === tokens);
      },
      { timeoutMs: 90_000, intervalMs: 250, what: 'rollups to equal the accepted events' },
    );
    const rollups = await rolledUp(runtime.db, tenants);
    expect(sortedEntries(rollups.periods)).toEqual(sortedEntries(expected));
    expect(sortedEntries(rollups.hourly)).toEqual(sortedEntries(accepted));
    expect(sortedEntries(rollups.daily)).toEqual(sortedEntries(accepted));
    // Nothing more arrives later: the backlog is drained, not merely ahead of the check.
    await waitFor(async () => (await runtime.queue.backlog()).every((n) => n === 0), { what: 'the backlog to drain' });
    expect(sortedEntries((await rolledUp(runtime.db, tenants)).periods)).toEqual(sortedEntries(expected));
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    keySpace = createKeySpace();
    env = functionEnv(database.url, keySpace.prefix, { AGGREGATOR_BATCH_SIZE: '50' });
    runtime = await createRuntime('test', { config: loadConfig(env) });
    apiKey = (await createApiKey(runtime, 'load', null)).key;
    ingest = await startProcess('functions/ingest/server.ts', env);
  });

  afterAll(async () => {
    await Promise.all([ingest, ...running].map((process) => process?.kill('SIGKILL')));
    await runtime?.close();
    await keySpace?.clear();
    await database?.drop();
  });

  it('counts 100,000 events over 25 tenants exactly once while the aggregator is killed with SIGKILL 6 times', async () => {
    const tenants = Array.from({ length: 25 }, (_, i) => uniqueName(`crash${i}`));
    const accepted: Totals = new Map();
    let aggregator = await startAggregator('agg-solo');
    const sending = sendBatches(ingest.url, apiKey, makeBatches(tenants, 1000, 100), accepted, { concurrency: 6 });
    let kills = 0;
    let sendingDone = false;
    void sending.finally(() => (sendingDone = true));
    while (kills < 6) {
      // Kill only while it is applying: wait until it has committed something since it started.
      const [before] = await runtime.db.query<{ applied: bigint }>(
        'SELECT coalesce(sum(applied_events), 0)::bigint AS applied FROM partition_checkpoints',
      );
      await waitFor(
        async () => {
          const [now] = await runtime.db.query<{ applied: bigint }>(
            'SELECT coalesce(sum(applied_events), 0)::bigint AS applied FROM partition_checkpoints',
          );
          return now!.applied > before!.applied || sendingDone;
        },
        { what: 'the aggregator to commit' },
      );
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 300));
      await aggregator.kill('SIGKILL');
      kills++;
      aggregator = await startAggregator('agg-solo');
    }
    const { sent } = await sending;
    expect(sent).toBe(100_000);
    expect(kills).toBe(6);
    await expectExactly(tenants, accepted);
    // A graceful stop releases the leases at once.
    expect(await aggregator.kill('SIGTERM')).toBe(0);
  }, 240_000);

  it('counts exactly once with two aggregators running at once and one of them killed with SIGKILL', async () => {
    const tenants = Array.from({ length: 20 }, (_, i) => uniqueName(`pair${i}`));
    const accepted: Totals = new Map();
    await startAggregator('agg-a');
    const victim = await startAggregator('agg-b');
    // Both must hold partitions before the kill, or there is nothing to take over.
    await waitFor(
      async () => {
        const rows = await runtime.db.query<{ owner: string }>(
          'SELECT DISTINCT owner FROM partition_checkpoints WHERE lease_until > now() ORDER BY owner',
        );
        return rows.map((row) => row.owner).join() === 'agg-a,agg-b';
      },
      { what: 'both aggregators to own partitions' },
    );
    const sending = sendBatches(ingest.url, apiKey, makeBatches(tenants, 400, 100), accepted, { concurrency: 6 });
    await waitFor(
      async () => {
        const [row] = await runtime.db.query<{ applied: bigint }>(
          "SELECT coalesce(sum(applied_events), 0)::bigint AS applied FROM partition_checkpoints WHERE owner = 'agg-b'",
        );
        return row!.applied > 0n;
      },
      { what: 'agg-b to apply something' },
    );
    await victim.kill('SIGKILL');
    await sending;
    await expectExactly(tenants, accepted);
    const owners = await runtime.db.query<{ owner: string }>('SELECT DISTINCT owner FROM partition_checkpoints WHERE lease_until > now()');
    expect(owners.map((row) => row.owner)).toEqual(['agg-a']);
  }, 180_000);

  it('counts an event with a stable id once however often the client retries it', async () => {
    const tenant = uniqueName('retry');
    const event = { tenant, feature: 'f', tokens: 7, id: 'req-1' };
    const accepted: Totals = new Map();
    for (let i = 0; i < 3; i++) await sendBatches(ingest.url, apiKey, [[event]], accepted);
    addTo(new Map(), tenant, 'f', 0);
    await expectExactly([tenant], accepted);
    expect(accepted.get(`${tenant}\tf`)).toBe(7n);
  });
});
