import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, createTenants, expectReconciled, type FaultStack, type OwnRedis, SteadyLoad, startOwnRedis } from './harness.ts';

describe.skipIf(!servicesAvailable)('fault: Valkey (appendfsync always) crashed and restarted under load', () => {
  let redis: OwnRedis;
  let stack: FaultStack;

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await createFaultStack({ VALKEY_URL: redis.url });
  });
  afterAll(async () => {
    await stack?.close();
    await redis?.close();
  });

  it('loses no accepted event, answers 503 fast while Valkey is down, and recovers by itself', async () => {
    const ingest = await stack.start('functions/ingest/server.ts');
    await stack.startAggregator('valkey-agg');
    const tenants = await createTenants(stack.runtime, 'vk', 10);
    const load = new SteadyLoad({ apiKey: stack.apiKey, tenants, targets: () => [ingest.url], label: 'vk', retryMs: 50 }).start();
    let downAt = 0;
    let upAt = 0;
    try {
      await waitFor(() => load.ackedBatches > 100, { what: 'load to be flowing' });
      for (let restart = 0; restart < 2; restart++) {
        // SIGKILL, not a clean shutdown: only what the append-only file fsynced survives.
        downAt = Date.now();
        await redis.crash();
        // Down until ingest has been seen refusing for a while (at least 3 s of 503s).
        await waitFor(
          () => {
            const refused = load.attempts.filter((a) => a.at > downAt && a.status === 503);
            return refused.length >= 20 && Date.now() - downAt > 3_000;
          },
          { timeoutMs: 30_000, what: 'ingest to answer 503' },
        );
        // Down ends when the server is started again, not when it first answers: in between, ingest
        // may already have reconnected and accepted.
        const restartAt = Date.now();
        await redis.start();
        upAt = Date.now();
        // Recovers by itself: no process is restarted.
        await waitFor(() => load.attempts.some((a) => a.at > upAt && a.status === 202), {
          timeoutMs: 15_000,
          what: 'ingest to accept again',
        });
        const down = load.attempts.filter((a) => a.at > downAt + 500 && a.at + a.ms < restartAt);
        expect(down.length).toBeGreaterThan(0);
        // Every request is answered — a 503 with Retry-After — fast: none piles up behind the dead
        // connection and none is dropped. A dropped one names its cause here.
        const unanswered = down.filter((a) => a.status !== 503).map((a) => `${a.status} ${a.error ?? ''} after ${a.ms} ms`);
        expect(unanswered).toEqual([]);
        expect(down.every((a) => a.retryAfter === '1')).toBe(true);
        expect(Math.max(...down.map((a) => a.ms))).toBeLessThan(2_000);
        await sleep(2_000);
      }
      await waitFor(() => load.attempts.filter((a) => a.at > upAt && a.status === 202).length > 50, {
        what: 'steady acceptance after the restarts',
      });
    } finally {
      await load.stop();
    }
    await expectReconciled(stack.runtime, tenants, load.accepted);
  }, 180_000);
});
