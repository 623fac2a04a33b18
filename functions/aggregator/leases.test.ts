import postgres from 'postgres';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../tests/helpers/processes.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, VALKEY_URL } from '../../tests/helpers/services.ts';
import { MemoryQueue } from '../../shared/platform/queue/memory.ts';
import type { EventQueue } from '../../shared/platform/queue/types.ts';
import { ValkeyQueue } from '../../shared/platform/queue/valkey.ts';
import { applyBatch } from './apply.ts';
import { AggregatorRunner } from './runner.ts';

/**
 * Lease upkeep against a checkpoint row that a commit holds: the upkeep skips the row (the commit renews
 * it itself), keeps the partition while its committed owner and fence are still this replica's, and
 * lets it go once a takeover has committed.
 */
describe.skipIf(!servicesAvailable)('aggregator lease upkeep (real PostgreSQL)', () => {
  let database: TestDatabase;
  let holder: postgres.Sql;
  let runner: AggregatorRunner;
  const warnings: { msg: string; partition?: number }[] = [];

  const leases = async (): Promise<Map<number, number>> => {
    const rows = await database.db.query<{ partition: number; until: number }>(
      'SELECT partition, (extract(epoch FROM lease_until) * 1000)::float8 AS until FROM partition_checkpoints ORDER BY partition',
    );
    return new Map(rows.map((row) => [row.partition, Number(row.until)]));
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    holder = postgres(database.url, { max: 1, onnotice: () => {} });
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    runner = new AggregatorRunner({
      db: database.db,
      queue: new MemoryQueue(2, 60_000, 1_000_000),
      logger,
      apply: (event) => applyBatch({ db: database.db, defaultQuota: 1_000n, leaseMs: 2_000 }, event),
      ownerId: 'lease-test',
      leaseMs: 2_000,
      batchSize: 100,
    });
    await runner.start();
    await waitFor(() => runner.ownedPartitions.length === 2, { timeoutMs: 10_000, what: 'the runner to own both partitions' });
  });
  afterAll(async () => {
    await runner?.stop();
    await holder?.end({ timeout: 1 });
    await database?.drop();
  });

  it('skips a row a commit holds, renews the others meanwhile and keeps the held partition', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    // Holds partition 0's checkpoint row the way a rollup commit does, for as long as the test says.
    const holding = holder.begin(async (tx) => {
      await tx`SELECT partition FROM partition_checkpoints WHERE partition = 0 FOR UPDATE`;
      locked();
      await released;
    });
    await isLocked;
    const before = await leases();
    try {
      // Two renewals of partition 1 while partition 0 is held: upkeep that waited on the lock would renew nothing.
      await waitFor(
        async () => {
          const now = await leases();
          return now.get(1)! > before.get(1)! + 500;
        },
        { timeoutMs: 10_000, what: "partition 1's lease to be renewed twice while partition 0's row is held" },
      );
      expect((await leases()).get(0)).toBe(before.get(0));
      expect(runner.ownedPartitions).toEqual([0, 1]);
      expect(warnings.filter((line) => line.msg === 'lease lost')).toEqual([]);
    } finally {
      release();
      await holding;
    }
    await waitFor(async () => (await leases()).get(0)! > before.get(0)!, {
      timeoutMs: 10_000,
      what: "partition 0's lease to be renewed once released",
    });
  });

  it('lets a held partition go once a takeover of it commits', async () => {
    await holder.begin(async (tx) => {
      await tx`SELECT partition FROM partition_checkpoints WHERE partition = 0 FOR UPDATE`;
      // Held through at least one upkeep round, then taken over by another replica for an hour.
      await tx`SELECT pg_sleep(1)`;
      await tx`UPDATE partition_checkpoints SET owner = 'other', fence = fence + 1, lease_until = now() + interval '1 hour' WHERE partition = 0`;
    });
    await waitFor(() => runner.ownedPartitions.length === 1, { timeoutMs: 10_000, what: 'the runner to let partition 0 go' });
    expect(runner.ownedPartitions).toEqual([1]);
    expect(warnings).toContainEqual(expect.objectContaining({ msg: 'lease lost', partition: 0 }));
  });
  it('refuses to start on a Valkey queue with fewer partitions than the checkpoints hold, naming QUEUE_PARTITIONS', async () => {
    const keySpace = createKeySpace();
    const queue = new ValkeyQueue({
      url: VALKEY_URL,
      prefix: keySpace.prefix,
      partitions: 1,
      dedupeWindowMs: 60_000,
      maxBacklog: 1_000_000,
      commandTimeoutMs: 10_000,
      logger: pino({ level: 'silent' }),
    });
    const fewer = (over: EventQueue) =>
      new AggregatorRunner({
        db: database.db,
        queue: over,
        logger: pino({ level: 'silent' }),
        apply: (event) => applyBatch({ db: database.db, defaultQuota: 1_000n, leaseMs: 2_000 }, event),
        ownerId: 'fewer-partitions',
        leaseMs: 2_000,
        batchSize: 100,
      });
    try {
      // Partition 1's stream would never be read again: the events waiting in it would never count.
      await expect(fewer(queue).start()).rejects.toThrow(/^QUEUE_PARTITIONS: 1, but the database holds checkpoints of 2 partitions/);
      expect(await database.db.query('SELECT partition FROM partition_checkpoints ORDER BY partition')).toEqual([
        { partition: 0 },
        { partition: 1 },
      ]);
    } finally {
      await queue.close();
      await keySpace.clear();
    }
    // The in-process queue keeps nothing across a restart: its extra checkpoint is dropped instead.
    await runner.stop();
    const memory = fewer(new MemoryQueue(1, 60_000, 1_000_000));
    await memory.start();
    await memory.stop();
    expect(await database.db.query('SELECT partition FROM partition_checkpoints ORDER BY partition')).toEqual([{ partition: 0 }]);
  });
});
