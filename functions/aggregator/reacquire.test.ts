import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../tests/helpers/processes.ts';
import { createTestDatabase, servicesAvailable, type TestDatabase } from '../../tests/helpers/services.ts';
import { MemoryQueue } from '../../shared/platform/queue/memory.ts';
import type { PartitionEntries, PartitionPosition } from '../../shared/platform/queue/types.ts';
import { applyBatch } from './apply.ts';
import { AggregatorRunner } from './runner.ts';

/** The in-process queue, with a hook that runs once a read has found entries and before it answers. */
class HeldQueue extends MemoryQueue {
  hold: ((found: PartitionEntries[]) => Promise<void>) | undefined;

  override async read(positions: readonly PartitionPosition[], count: number, blockMs: number): Promise<PartitionEntries[]> {
    const found = await super.read(positions, count, blockMs);
    const hold = this.hold;
    if (hold && found.some((partition) => partition.entries.length > 0)) {
      this.hold = undefined;
      await hold(found);
    }
    return found;
  }
}

/**
 * A partition lost and taken back while a read waits: the read was made after the old position, and
 * the partition now continues after the position another replica committed.
 */
describe.skipIf(!servicesAvailable)('aggregator: a partition taken back during a read (real PostgreSQL)', () => {
  let database: TestDatabase;
  let runner: AggregatorRunner | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await runner?.stop();
    await database?.drop();
  });

  it('drops what the read found and reads on from the new position: nothing the other replica applied counts twice', async () => {
    const queue = new HeldQueue(1, 60_000, 1_000_000);
    // Three requests, three stream entries: 1, 10 and 100 tokens.
    for (const tokens of [1, 10, 100])
      await queue.enqueue([{ tenant: 'taken-back', feature: 'f', tokens, timestamp: Date.now() }], Date.now());
    const { db } = database;
    queue.hold = async ([found]) => {
      const [, second] = found!.entries;
      // Another replica takes the partition over and commits the first two entries (its rollups are
      // left out here: only what this replica adds is counted below), then lets it go.
      await db.query(
        `UPDATE partition_checkpoints SET owner = 'other', fence = fence + 1, last_id = $1, lease_until = now() + interval '1 hour'
         WHERE partition = 0`,
        [second!.id],
      );
      await waitFor(() => runner!.ownedPartitions.length === 0, { timeoutMs: 10_000, what: 'the lease to be seen lost' });
      await db.query('UPDATE partition_checkpoints SET owner = NULL, lease_until = NULL WHERE partition = 0');
      await waitFor(() => runner!.ownedPartitions.length === 1, { timeoutMs: 10_000, what: 'the partition to be taken back' });
    };
    runner = new AggregatorRunner({
      db,
      queue,
      logger: pino({ level: 'silent' }),
      apply: (event) => applyBatch({ db, defaultQuota: 1_000_000n, leaseMs: 2_000 }, event),
      ownerId: 'reacquire-test',
      leaseMs: 2_000,
      batchSize: 100,
    });
    await runner.start();
    const ids = (await queue.read([{ partition: 0, afterId: '0-0' }], 10, 0))[0]!.entries.map((entry) => entry.id);
    await waitFor(
      async () => {
        const [row] = await db.query<{ last_id: string }>('SELECT last_id FROM partition_checkpoints WHERE partition = 0');
        return row?.last_id === ids[2];
      },
      { timeoutMs: 15_000, what: 'the third entry to be committed' },
    );
    const [usage] = await db.query<{ tokens: string }>("SELECT tokens::text FROM usage_periods WHERE tenant = 'taken-back'");
    // Before the fix the held read was committed under the new lease: 1 + 10 + 100 = 111.
    expect(usage?.tokens).toBe('100');
    expect(queue.hold).toBeUndefined();
  });
});
