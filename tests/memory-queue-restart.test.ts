import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAggregatorHandler } from '../functions/aggregator/handler.ts';
import { AggregatorRunner } from '../functions/aggregator/runner.ts';
import { createLogger } from '../shared/platform/logger.ts';
import { MemoryQueue } from '../shared/platform/queue/memory.ts';
import { waitFor } from './helpers/processes.ts';
import { createTestDatabase, servicesAvailable, type TestDatabase } from './helpers/services.ts';

const logger = createLogger('test', { LOG_LEVEL: 'error', NODE_ENV: 'test' });

/**
 * `npm start` keeps its checkpoints in the database (PGlite's data folder) but its queue in memory,
 * with entry ids from the clock. A restart whose clock is behind an earlier run's checkpoints (set
 * back, or that run's ahead) made new entries sort before them: never read, counted zero times.
 */
describe.skipIf(!servicesAvailable)('the in-process queue after a restart', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('counts what it accepts even when an earlier run checkpointed ids from two minutes ahead', async () => {
    const { db } = database;
    await db.query('INSERT INTO partition_checkpoints (partition, last_id) SELECT generate_series(0, 1), $1', [
      `${Date.now() + 120_000}-0`,
    ]);
    const queue = new MemoryQueue(2, 86_400_000, 1_000_000);
    const handler = createAggregatorHandler({ db, defaultQuota: 1_000_000n, leaseMs: 10_000, logger });
    const runner = new AggregatorRunner({
      db,
      queue,
      logger,
      apply: (event) => handler(event, {} as never),
      ownerId: 'npm-start',
      leaseMs: 10_000,
      batchSize: 100,
    });
    await runner.start();
    try {
      const accepted = await queue.enqueue([{ tenant: 'acme', feature: 'f', tokens: 1_200, timestamp: Date.now() }], Date.now());
      expect(accepted.accepted).toBe(1);
      await waitFor(
        async () => (await db.query<{ tokens: bigint }>("SELECT tokens FROM usage_periods WHERE tenant = 'acme'"))[0]?.tokens === 1_200n,
        { timeoutMs: 15_000, what: 'the event to be counted' },
      );
      expect(await queue.backlog()).toEqual([0, 0]);
    } finally {
      await runner.stop();
    }
  });
});
