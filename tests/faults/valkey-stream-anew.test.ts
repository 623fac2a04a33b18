import { Redis } from 'iovalkey';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyBatch } from '../../functions/aggregator/apply.ts';
import { AggregatorRunner } from '../../functions/aggregator/runner.ts';
import type { ValkeyQueue } from '../../shared/platform/queue/valkey.ts';
import { waitFor } from '../helpers/processes.ts';
import {
  createKeySpace,
  createTestDatabase,
  openValkeyQueue,
  servicesAvailable,
  type TestDatabase,
  uniqueName,
  VALKEY_URL,
} from '../helpers/services.ts';

/**
 * A Valkey that lost its data (no append-only file, a lost disk) or was replaced starts its streams
 * anew, with ids from its own clock. Where that clock is behind the checkpoint the old stream left
 * (this server's clock set back, or the old one's ahead), every new entry sorts before the
 * checkpoint: reading after it finds nothing, and the events are answered 202 and counted zero times.
 * Here the old stream's last entry is written with an id an hour ahead, as a server whose clock was
 * an hour fast would have, and the stream is then deleted as a data loss would.
 */
describe.skipIf(!servicesAvailable)('a partition stream made anew with ids behind the checkpoint (real Valkey, real PostgreSQL)', () => {
  const hourAhead = () => `${Date.now() + 3_600_000}-0`;
  let redis: Redis;

  beforeAll(() => {
    redis = new Redis(VALKEY_URL);
  });
  afterAll(() => redis?.disconnect());

  /** One tenant's events on one partition, their running total in PostgreSQL, and the data loss. */
  async function setUp(database: TestDatabase) {
    const keys = createKeySpace();
    const queue = await openValkeyQueue(keys.prefix, { partitions: 1, dedupeWindowMs: 60_000 });
    const tenant = uniqueName('anew');
    const { db } = database;
    const start = () => {
      const runner = new AggregatorRunner({
        db,
        queue,
        logger: pino({ level: 'silent' }),
        apply: (event) => applyBatch({ db, defaultQuota: 1_000_000_000n, leaseMs: 2_000 }, event),
        ownerId: uniqueName('stream-anew'),
        leaseMs: 2_000,
        batchSize: 100,
      });
      return runner.start().then(() => runner);
    };
    const send = (tokens: number) => queue.enqueue([{ tenant, feature: 'f', tokens, timestamp: Date.now() }], Date.now());
    /** Appends an entry with an explicit id, as ingest's script does with the server's clock. */
    const appendAt = async (id: string, tokens: number) => {
      const epoch = await redis.get(`${keys.prefix}:g:0`);
      await redis.xadd(
        `${keys.prefix}:s:0`,
        id,
        'e',
        `${tenant}\tf\t${tokens}\t${Date.now()}`,
        'n',
        '1',
        'r',
        String(Date.now()),
        'g',
        epoch!,
      );
      await redis.incr(`${keys.prefix}:b:0`);
    };
    const loseData = () => redis.del(`${keys.prefix}:s:0`, `${keys.prefix}:g:0`, `${keys.prefix}:b:0`);
    const total = async () => {
      const [row] = await db.query<{ tokens: string }>('SELECT tokens::text FROM usage_periods WHERE tenant = $1', [tenant]);
      return Number(row?.tokens ?? 0);
    };
    const totalReaches = (tokens: number) =>
      waitFor(async () => (await total()) === tokens, { timeoutMs: 20_000, what: `${tenant}'s total to reach ${tokens}` });
    return { keys, queue, start, send, appendAt, loseData, total, totalReaches };
  }

  describe('while the aggregator runs', () => {
    let database: TestDatabase;
    let runner: AggregatorRunner | undefined;
    let queue: ValkeyQueue | undefined;
    let clear: (() => Promise<void>) | undefined;

    beforeAll(async () => {
      database = await createTestDatabase();
    });
    afterAll(async () => {
      await runner?.stop();
      await queue?.close();
      await clear?.();
      await database?.drop();
    });

    it('finds the new stream although nothing sorts after the checkpoint, and counts its events once', async () => {
      const setup = await setUp(database);
      ({ queue } = setup);
      clear = setup.keys.clear;
      runner = await setup.start();
      await setup.send(1);
      await setup.totalReaches(1);
      await setup.appendAt(hourAhead(), 10);
      await setup.totalReaches(11);

      await setup.loseData();
      await setup.send(100);
      // Before the fix this stayed at 11: the entry's id sorts before the hour-ahead checkpoint.
      await setup.totalReaches(111);
      await setup.send(1_000);
      await setup.totalReaches(1_111);
      const [row] = await database.db.query<{ last_id: string; stream_epoch: string }>(
        'SELECT last_id, stream_epoch FROM partition_checkpoints WHERE partition = 0',
      );
      expect(row!.stream_epoch).toBe(await redis.get(`${setup.keys.prefix}:g:0`));
      // Applied entries are trimmed from the new stream, not the ones after its checkpoint.
      await waitFor(async () => (await redis.xlen(`${setup.keys.prefix}:s:0`)) === 0, { timeoutMs: 10_000, what: 'the trim' });
      expect(await setup.total()).toBe(1_111);
    });
  });

  describe('while no aggregator runs', () => {
    let database: TestDatabase;
    let runner: AggregatorRunner | undefined;
    let queue: ValkeyQueue | undefined;
    let clear: (() => Promise<void>) | undefined;

    beforeAll(async () => {
      database = await createTestDatabase();
    });
    afterAll(async () => {
      await runner?.stop();
      await queue?.close();
      await clear?.();
      await database?.drop();
    });

    it('reads the new stream from its start when its later entries sort after the checkpoint', async () => {
      const setup = await setUp(database);
      ({ queue } = setup);
      clear = setup.keys.clear;
      runner = await setup.start();
      await setup.send(1);
      await setup.totalReaches(1);
      const ahead = hourAhead();
      await setup.appendAt(ahead, 10);
      await setup.totalReaches(11);
      await runner.stop();
      runner = undefined;

      await setup.loseData();
      await setup.send(100);
      // A later entry of the new stream past the old checkpoint: the new server's clock caught up.
      await setup.appendAt(`${Number(ahead.split('-')[0]) + 1}-0`, 1_000);
      runner = await setup.start();
      // Before the fix the total reached 1,011: the entry before the checkpoint was skipped.
      await setup.totalReaches(1_111);
      await setup.send(10_000);
      await setup.totalReaches(11_111);
    });
  });

  it('trims a stream only in the epoch its checkpoint belongs to', async () => {
    const keys = createKeySpace();
    const queue = await openValkeyQueue(keys.prefix, { partitions: 1, dedupeWindowMs: 60_000 });
    try {
      const event = { tenant: uniqueName('trim'), feature: 'f', tokens: 1, timestamp: Date.now() };
      await queue.enqueue([event], Date.now());
      const [old] = (await queue.read([{ partition: 0, afterId: '0-0' }], 10, 0))[0]!.entries;
      await redis.del(`${keys.prefix}:s:0`, `${keys.prefix}:g:0`);
      await queue.enqueue([event], Date.now());
      const [fresh] = (await queue.read([{ partition: 0, afterId: '0-0' }], 10, 0))[0]!.entries;
      expect(old!.epoch).toBeTruthy();
      expect(fresh!.epoch).toBeTruthy();
      expect(fresh!.epoch).not.toBe(old!.epoch);
      expect(await queue.epochs([0])).toEqual([fresh!.epoch]);

      // The old stream's checkpoint, past every id of the new one, trims nothing of it.
      await queue.trim(0, '99999999999999-0', old!.epoch);
      await queue.trim(0, '99999999999999-0', null);
      expect(await redis.xlen(`${keys.prefix}:s:0`)).toBe(1);
      await queue.trim(0, fresh!.id, fresh!.epoch);
      expect(await redis.xlen(`${keys.prefix}:s:0`)).toBe(0);

      // A stream an ingest of before epochs wrote has no epoch: an aggregator that knows none trims it.
      await redis.del(`${keys.prefix}:s:0`, `${keys.prefix}:g:0`);
      const legacy = await redis.xadd(`${keys.prefix}:s:0`, '*', 'e', `${event.tenant}\tf\t1\t${Date.now()}`, 'n', '1', 'r', '0');
      await queue.trim(0, legacy!, null);
      expect(await redis.xlen(`${keys.prefix}:s:0`)).toBe(0);
    } finally {
      await queue.close();
      await keys.clear();
    }
  });
});
