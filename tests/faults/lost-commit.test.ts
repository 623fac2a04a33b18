import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addTo, byTenant, rolledUp, sortedEntries, type Totals } from '../helpers/load.ts';
import { waitFor } from '../helpers/processes.ts';
import { type PostgresProxy, proxyDatabase } from '../helpers/proxy.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, createTenants, expectReconciled, type FaultStack } from './harness.ts';

const LOST_ANSWERS = 6;
const FEATURES = ['gpt-4o', 'embed', 'whisper'];

describe.skipIf(!servicesAvailable)("fault: the answer to the aggregator's COMMIT is lost", () => {
  let stack: FaultStack;
  let proxy: PostgresProxy;
  let behindProxy: Record<string, string>;

  beforeAll(async () => {
    // Small rounds: many commits, so every lost answer falls on a round with more work behind it.
    stack = await createFaultStack({ AGGREGATOR_BATCH_SIZE: '5', AGGREGATOR_LANES: '2' });
    const proxied = await proxyDatabase(stack.database.url);
    proxy = proxied.proxy;
    behindProxy = { DATABASE_URL: proxied.url };
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.close();
  });

  it(`counts every event once when ${LOST_ANSWERS} committed rounds are reported to the aggregator as failed`, async () => {
    const tenants = await createTenants(stack.runtime, 'lost', 8);
    const accepted: Totals = new Map();
    // Straight into the queue: what is under test starts at the stream, and the totals are known exactly.
    for (let request = 0; request < 200; request++) {
      const events = Array.from({ length: 20 }, (_, i) => ({
        tenant: tenants[(request + i) % tenants.length]!,
        feature: FEATURES[(request * 3 + i) % FEATURES.length]!,
        tokens: 1 + ((request * 7919 + i * 104_729) % 997),
        timestamp: Date.now(),
      }));
      await stack.runtime.queue.enqueue(events, Date.now());
      for (const event of events) addTo(accepted, event.tenant, event.feature, event.tokens);
    }
    // The first rollup commits are carried out by PostgreSQL, and the aggregator only sees its connection drop.
    proxy.dropCommitAnswers(LOST_ANSWERS);
    const aggregator = await stack.startAggregator('lost-agg', behindProxy);
    const expected = byTenant(accepted);
    let countedTwice: string | undefined;
    await waitFor(
      async () => {
        const { periods } = await rolledUp(stack.runtime.db, tenants);
        // A batch applied twice shows as a tenant over its total: stop at once rather than wait out the deadline.
        const over = sortedEntries(periods).filter(([tenant, tokens]) => tokens > (expected.get(tenant) ?? 0n));
        if (over.length > 0) countedTwice = over.map(([tenant, tokens]) => `${tenant} ${tokens} > ${expected.get(tenant)}`).join(', ');
        if (countedTwice) return true;
        return (
          proxy.droppedCommitAnswers === LOST_ANSWERS && sortedEntries(expected).every(([tenant, tokens]) => periods.get(tenant) === tokens)
        );
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'every lost answer to be dealt with and the rollups to equal the events' },
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n--- aggregator output ---\n${aggregator.output().slice(-3_000)}`);
    });
    expect(countedTwice, 'tenants counted more than they were sent').toBeUndefined();
    expect(proxy.droppedCommitAnswers).toBe(LOST_ANSWERS);
    await expectReconciled(stack.runtime, tenants, accepted, 30_000);
    // The drops were absorbed, not survived by a restart.
    expect(await Promise.race([aggregator.exited.then(() => 'exited'), Promise.resolve('running')])).toBe('running');
  }, 120_000);
});
