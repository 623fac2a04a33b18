import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningProcess } from '../helpers/processes.ts';
import { waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, createTenants, expectReconciled, type FaultStack, SteadyLoad } from './harness.ts';

const KILLS = 10;

describe.skipIf(!servicesAvailable)('fault: aggregator kill -9 with two replicas', () => {
  let stack: FaultStack;

  beforeAll(async () => {
    stack = await createFaultStack({ AGGREGATOR_BATCH_SIZE: '50' });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it(`counts every accepted event once and alerts once per threshold while a replica is killed with SIGKILL ${KILLS} times`, async () => {
    const ingest = await stack.start('functions/ingest/server.ts');
    const names = { a: 'kill-a', b: 'kill-b' };
    const replicas: Record<'a' | 'b', RunningProcess> = {
      a: await stack.startAggregator(names.a),
      b: await stack.startAggregator(names.b),
    };
    const tenants = await createTenants(stack.runtime, 'kill', 15);
    const load = new SteadyLoad({ apiKey: stack.apiKey, tenants, targets: () => [ingest.url], label: 'kill' }).start();
    /**
     * Whether `owner` has committed since the first call: some partition it has held throughout
     * applied more events. A sum over whatever it owns would not do — partitions are handed back and
     * forth as replicas come and go, and the sum can drop by more than the owner commits.
     */
    const committedBy = (owner: string) => {
      const base = new Map<number, bigint>();
      return async () => {
        const rows = await stack.runtime.db.query<{ partition: number; owner: string | null; applied: bigint }>(
          'SELECT partition, owner, applied_events AS applied FROM partition_checkpoints',
        );
        let committed = false;
        for (const row of rows) {
          if (row.owner !== owner) base.delete(row.partition);
          else if (!base.has(row.partition)) base.set(row.partition, row.applied);
          else if (row.applied > base.get(row.partition)!) committed = true;
        }
        return committed;
      };
    };
    try {
      for (let kill = 0; kill < KILLS; kill++) {
        const slot = kill % 2 === 0 ? 'a' : 'b';
        // Every few seconds, and only once the victim is applying (it has committed since it started).
        await waitFor(committedBy(names[slot]), { timeoutMs: 30_000, what: `${names[slot]} to commit` }).catch(async (error: Error) => {
          const rows = await stack.runtime.db.query(
            'SELECT partition, owner, fence::text, last_id, lease_until::text FROM partition_checkpoints ORDER BY partition',
          );
          throw new Error(
            `${error.message}\n${JSON.stringify(rows)}\n--- a ---\n${replicas.a.output().slice(-4_000)}\n--- b ---\n${replicas.b.output().slice(-4_000)}`,
          );
        });
        await sleep(1_000 + Math.random() * 2_000);
        await replicas[slot].kill('SIGKILL');
        // Most restarts come back under the same name (it takes its partitions back at once); every
        // third under a new one, so the dead lease must expire and the partitions be shared out again.
        if (kill % 3 === 2) names[slot] = `kill-${slot}-${kill}`;
        replicas[slot] = await stack.startAggregator(names[slot]);
      }
    } finally {
      await load.stop();
    }
    expect(load.ackedBatches).toBeGreaterThan(100);
    await expectReconciled(stack.runtime, tenants, load.accepted);
    const crossed = await stack.runtime.db.query<{ count: number }>('SELECT count(*)::int AS count FROM alerts');
    expect(crossed[0]!.count).toBeGreaterThan(0);
  }, 300_000);
});
