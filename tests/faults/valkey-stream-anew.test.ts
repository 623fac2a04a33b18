import { Redis } from 'iovalkey';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
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
describe.skipIf(!servicesAvailable)('partition streams made anew, restored, or renamed (real Valkey, real PostgreSQL)', () => {
  const hourAhead = () => `${Date.now() + 3_600_000}-0`;
  let redis: Redis;
  /** What the running scenario made, undone after it. */
  let made: { runner?: AggregatorRunner; queue?: ValkeyQueue; clear?: () => Promise<void>; database?: TestDatabase } = {};

  beforeAll(() => {
    redis = new Redis(VALKEY_URL);
  });
  afterEach(async () => {
    await made.runner?.stop();
    await made.queue?.close();
    await made.clear?.();
    await made.database?.drop();
    made = {};
  });
  afterAll(() => redis?.disconnect());

  /** One tenant's events on one partition of a database and key space of its own, and their total. */
  async function scenario() {
    const database = await createTestDatabase();
    const keys = createKeySpace();
    const queue = await openValkeyQueue(keys.prefix, { partitions: 1, dedupeWindowMs: 60_000 });
    made = { database, queue, clear: keys.clear };
    const tenant = uniqueName('anew');
    const { db } = database;
    const stream = `${keys.prefix}:s:0`;
    const epochKey = `${keys.prefix}:g:0`;
    const start = async (batchSize = 100) => {
      const runner = new AggregatorRunner({
        db,
        queue,
        logger: pino({ level: 'silent' }),
        apply: (event) => applyBatch({ db, defaultQuota: 1_000_000_000n, leaseMs: 2_000 }, event),
        ownerId: uniqueName('stream-anew'),
        leaseMs: 2_000,
        batchSize,
      });
      made.runner = runner;
      await runner.start();
    };
    const stop = async () => {
      await made.runner?.stop();
      made.runner = undefined;
    };
    const send = (tokens: number, events = 1) =>
      queue.enqueue(
        Array.from({ length: events }, () => ({ tenant, feature: 'f', tokens, timestamp: Date.now() })),
        Date.now(),
      );
    /** Appends an entry with an explicit id as ingest's script would; `epoch` null: as an ingest of before epochs would. */
    const appendAt = async (id: string, tokens: number, epoch: string | null = null) => {
      const fields = ['e', `${tenant}\tf\t${tokens}\t${Date.now()}`, 'n', '1', 'r', String(Date.now())];
      return (await redis.xadd(stream, id, ...fields, ...(epoch === null ? [] : ['g', epoch])))!;
    };
    const loseData = () => redis.del(stream, epochKey, `${keys.prefix}:b:0`);
    /** A backup of the stream and its epoch key as they are now; the function it returns restores it. */
    const backup = async () => {
      const [copy, epoch] = [await redis.dumpBuffer(stream), await redis.dumpBuffer(epochKey)];
      return async () => {
        await redis.restore(stream, 0, copy!, 'REPLACE');
        await redis.restore(epochKey, 0, epoch!, 'REPLACE');
      };
    };
    const total = async () => {
      const [row] = await db.query<{ tokens: string }>('SELECT tokens::text FROM usage_periods WHERE tenant = $1', [tenant]);
      return Number(row?.tokens ?? 0);
    };
    const totalReaches = (tokens: number) =>
      waitFor(async () => (await total()) === tokens, { timeoutMs: 20_000, what: `${tenant}'s total to reach ${tokens}` });
    /** The partition's checkpoint as an earlier aggregator left it (its rollups left out of the totals). */
    const checkpointAt = (lastId: string, epoch: string | null = null, earlier: unknown[] = []) =>
      db.query('INSERT INTO partition_checkpoints (partition, last_id, stream_epoch, earlier_epochs) VALUES (0, $1, $2, $3::jsonb)', [
        lastId,
        epoch,
        JSON.stringify(earlier),
      ]);
    const checkpoint = async () =>
      (
        await db.query<{ last_id: string; stream_epoch: string | null }>(
          'SELECT last_id, stream_epoch FROM partition_checkpoints WHERE partition = 0',
        )
      )[0];
    return { db, redis, stream, epochKey, start, stop, send, appendAt, loseData, backup, total, totalReaches, checkpoint, checkpointAt };
  }

  it('finds a new stream while the aggregator runs, although nothing in it sorts after the checkpoint, and counts it once', async () => {
    const s = await scenario();
    await s.start();
    await s.send(1);
    await s.totalReaches(1);
    await s.appendAt(hourAhead(), 10, await redis.get(s.epochKey));
    await s.totalReaches(11);

    await s.loseData();
    await s.send(100);
    // Before the fix this stayed at 11: the entry's id sorts before the hour-ahead checkpoint.
    await s.totalReaches(111);
    await s.send(1_000);
    await s.totalReaches(1_111);
    expect((await s.checkpoint())!.stream_epoch).toBe(await redis.get(s.epochKey));
    // Applied entries are trimmed from the new stream, not only the ones after its checkpoint.
    await waitFor(async () => (await redis.xlen(s.stream)) === 0, { timeoutMs: 10_000, what: 'the trim' });
    expect(await s.total()).toBe(1_111);
  });

  it('reads a new stream from its start when its later entries sort after the checkpoint', async () => {
    const s = await scenario();
    await s.start();
    await s.send(1);
    await s.totalReaches(1);
    const ahead = hourAhead();
    await s.appendAt(ahead, 10, await redis.get(s.epochKey));
    await s.totalReaches(11);
    await s.stop();

    await s.loseData();
    await s.send(100);
    // A later entry of the new stream past the old checkpoint: the new server's clock caught up.
    await s.appendAt(`${Number(ahead.split('-')[0]) + 1}-0`, 1_000, await redis.get(s.epochKey));
    await s.start();
    // Before the fix the total reached 1,011: the entry before the checkpoint was skipped.
    await s.totalReaches(1_111);
    await s.send(10_000);
    await s.totalReaches(11_111);
  });

  it('resumes an older copy of the data that comes back after what was applied in it, not from its start', async () => {
    const s = await scenario();
    await s.send(1);
    // A backup taken while the entry is in the stream (the aggregator applies it afterwards).
    const restoreBackup = await s.backup();
    await s.start();
    await s.totalReaches(1);
    await s.loseData();
    await s.send(10);
    await s.totalReaches(11);

    // The backup is restored: its stream, its epoch and its applied entry come back.
    await restoreBackup();
    await s.send(100);
    // Read from its start it was 112: the restored entry of 1 counted again.
    await s.totalReaches(111);
    await s.send(1_000);
    await s.totalReaches(1_111);
  });

  it('keeps reading where it was when the epoch key is lost but the stream is kept, or a stream of before epochs gets one', async () => {
    const s = await scenario();
    // An entry of epoch E1, applied (its rollup left out: the total counts what follows) and not yet trimmed.
    await s.send(1);
    const [applied] = await redis.xrange(s.stream, '-', '+');
    const epoch = await redis.get(s.epochKey);
    await s.checkpointAt(applied![0], epoch);

    await redis.del(s.epochKey);
    await s.send(10);
    // The newest entry names the stream's epoch: the key comes back unchanged.
    expect(await redis.get(s.epochKey)).toBe(epoch);
    await redis.del(s.epochKey);
    await s.appendAt('*', 100);
    await s.send(1_000);
    // The newest entry has no epoch (an ingest of before epochs wrote it): a new name, the same ids.
    const renamed = await redis.get(s.epochKey);
    expect(renamed).toMatch(/^c/);

    await s.start();
    // From the stream's start it would be 1,111: the applied entry of 1 again.
    await s.totalReaches(1_110);
    await s.send(10_000);
    await s.totalReaches(11_110);
    expect((await s.checkpoint())!.stream_epoch).toBe(renamed);
  });

  it('applies the entries of its epoch before switching to the next one met in a read, however the reads are cut', async () => {
    const s = await scenario();
    // e0 applied under E1 (its rollup left out), then 58 entries of E1, one of before epochs, and,
    // after the key is lost, a large one under a new name (c…): reads of changing sizes.
    await s.send(1);
    const [applied] = await redis.xrange(s.stream, '-', '+');
    await s.checkpointAt(applied![0], await redis.get(s.epochKey));
    for (let i = 0; i < 58; i++) await s.send(10);
    await s.appendAt('*', 100);
    await redis.del(s.epochKey);
    await s.send(1, 1_000);
    await s.start();
    // Before, the partition switched between the two epochs round after round (5,496 switches in
    // 4 s in the review's run) and stayed at 20 entries of 1,059; a switch back could count twice.
    await s.totalReaches(58 * 10 + 100 + 1_000);
    await waitFor(async () => (await redis.xlen(s.stream)) === 0, { timeoutMs: 10_000, what: 'the trim' });
    await s.send(5);
    await s.totalReaches(58 * 10 + 100 + 1_000 + 5);
  });

  it("moves a restored stream's next id past what was applied in it, where its clock is behind its ids", async () => {
    const s = await scenario();
    await s.send(1);
    // The old server's clock was an hour fast: its stream's last id is an hour ahead, and a backup
    // holds it. Then one more entry is applied.
    await s.appendAt(hourAhead(), 10, await redis.get(s.epochKey));
    const restoreBackup = await s.backup();
    await s.appendAt(`${Date.now() + 3_605_000}-0`, 100, await redis.get(s.epochKey));
    await s.start();
    await s.totalReaches(111);
    await s.loseData();
    await s.send(1_000);
    await s.totalReaches(1_111);

    await restoreBackup();
    const restored = await redis.get(s.epochKey);
    await waitFor(async () => (await s.checkpoint())!.stream_epoch === restored, { timeoutMs: 10_000, what: 'the switch back' });
    // Valkey would number these after the restored last id, before the last one applied: skipped
    // and then trimmed, before the fix.
    await s.send(10_000);
    await s.totalReaches(11_111);
  });

  it('finds an epoch on a busy stream whose entries carry none (an ingest of before epochs writing after a rollback)', async () => {
    const s = await scenario();
    // A named stream (its key set by an ingest of this version) that an older ingest goes on writing
    // without epochs, and more of it than the aggregator reads in seconds, two entries a round.
    await s.send(1);
    const [named] = await redis.xrange(s.stream, '-', '+');
    for (let i = 0; i < 3_000; i++) await s.appendAt('*', 1);
    // The named entry was applied by an aggregator of before epochs: its checkpoint has none, and
    // the stream, whose ids have passed it, is taken as the one it was applied from.
    await s.checkpointAt(named![0]);
    await s.start(2);
    const epoch = await redis.get(s.epochKey);
    // Before, only partitions whose reads came back empty were asked: with the epoch unknown every
    // trim was skipped, and the stream grew while the partition stayed busy.
    await waitFor(async () => (await s.checkpoint())!.stream_epoch === epoch, { timeoutMs: 10_000, what: 'the epoch to be found' });
    // Found while the partition is still busy: the last entry is not applied yet.
    const [last] = await redis.xrevrange(s.stream, '+', '-', 'COUNT', 1);
    expect(last, 'entries still waiting').toBeDefined();
    expect((await s.checkpoint())!.last_id).not.toBe(last![0]);
    await s.totalReaches(3_000);
    await waitFor(async () => (await redis.xlen(s.stream)) === 0, { timeoutMs: 10_000, what: 'the trim' });
  });

  it('reads a new stream from its start when a checkpoint without an epoch sits among its ids (the stream does not hold it)', async () => {
    const s = await scenario();
    const ahead = hourAhead();
    await s.checkpointAt(ahead);
    await s.send(100);
    await s.appendAt(`${Number(ahead.split('-')[0]) + 1}-0`, 1_000, await redis.get(s.epochKey));
    await s.start();
    // Before, the stream's ids having passed the checkpoint made it the checkpoint's stream: 1,000.
    await s.totalReaches(1_100);
  });

  it('takes back a stream left under any of its names, with the streams it remembers full, after what was applied in it', async () => {
    const s = await scenario();
    await s.send(1);
    const [applied] = await redis.xrange(s.stream, '-', '+');
    const first = await redis.get(s.epochKey);
    // Eight streams left long ago: the one left next must not be the one forgotten.
    const long = Array.from({ length: 8 }, (_, i) => ({ names: [`nold${i}`], lastId: `${i + 1}-0` }));
    await s.checkpointAt(applied![0], first, long);
    const restoreBackup = await s.backup();
    // The stream gets a second name (its key lost, its newest entry written before epochs).
    await s.appendAt('*', 10);
    await redis.del(s.epochKey);
    await s.send(100);
    await s.start();
    await s.totalReaches(110);
    await s.loseData();
    await s.send(1_000);
    await s.totalReaches(1_110);
    // The backup comes back under the stream's first name: the applied entry of 1 is in it.
    await restoreBackup();
    await waitFor(async () => (await s.checkpoint())!.stream_epoch === first, { timeoutMs: 10_000, what: 'the switch back' });
    await s.send(10_000);
    // Read from its start it would be 11,111.
    await s.totalReaches(11_110);
    const [row] = await s.db.query<{ earlier_epochs: { names: string[] }[] }>(
      'SELECT earlier_epochs FROM partition_checkpoints WHERE partition = 0',
    );
    expect(row!.earlier_epochs.length).toBeLessThanOrEqual(9);
  });

  it("reads a new stream from its start although one of its entries has the checkpoint's very id", async () => {
    const s = await scenario();
    const ahead = hourAhead();
    await s.checkpointAt(ahead, 'nold');
    await s.send(100);
    await s.appendAt(ahead, 1_000, await redis.get(s.epochKey));
    await s.start();
    // Before, the entry at the checkpoint's id made the new stream the checkpoint's: 0 counted.
    await s.totalReaches(1_100);
  });

  it("takes back a stream its checkpoint remembers in the first cut's form ([name, lastId] pairs)", async () => {
    const s = await scenario();
    await s.send(1);
    const [applied] = await redis.xrange(s.stream, '-', '+');
    const first = await redis.get(s.epochKey);
    await s.appendAt('*', 10, first);
    await s.checkpointAt('0-0', 'nnow', [[first, applied![0]]]);
    await s.start();
    // The pair dropped, the stream would be new to it and read from its start: 11.
    await s.totalReaches(10);
    await s.send(100);
    await s.totalReaches(110);
  });

  it('finds a new stream behind a checkpoint that has no epoch yet (one left by a version before epochs)', async () => {
    const s = await scenario();
    await s.checkpointAt(hourAhead());
    await s.send(100);
    await s.start();
    // Before, a checkpoint without an epoch was never compared, and this stayed at 0.
    await s.totalReaches(100);
    await s.send(1_000);
    await s.totalReaches(1_100);
  });

  it('trims a stream only in the epoch its checkpoint belongs to', async () => {
    const s = await scenario();
    const queue = made.queue!;
    await s.send(1);
    const [old] = (await queue.read([{ partition: 0, afterId: '0-0' }], 10, 0))[0]!.entries;
    await s.loseData();
    // A stream made anew in the same millisecond would give its first entry the old one's very id, which
    // an epoch-less checkpoint cannot tell apart (the case the epoch exists for): step past it first.
    const valkeyMs = async () => {
      const [seconds, micros] = await redis.time();
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    };
    await waitFor(async () => (await valkeyMs()) > Number(old!.id.split('-')[0]), {
      timeoutMs: 5_000,
      what: "Valkey's clock to pass the lost stream's last id",
    });
    await s.send(1);
    const [fresh] = (await queue.read([{ partition: 0, afterId: '0-0' }], 10, 0))[0]!.entries;
    expect(fresh!.id).not.toBe(old!.id);
    expect(old!.epoch).toMatch(/^n/);
    expect(fresh!.epoch).toMatch(/^n/);
    expect(fresh!.epoch).not.toBe(old!.epoch);
    expect(await queue.streamHeads([{ partition: 0, epoch: null, afterId: '0-0', inspect: true }])).toEqual([
      { epoch: fresh!.epoch, advanced: false, holds: true },
    ]);
    expect(await queue.streamHeads([{ partition: 0, epoch: null, afterId: old!.id, inspect: true }])).toEqual([
      { epoch: fresh!.epoch, advanced: false, holds: false },
    ]);

    // The old stream's checkpoint, past every id of the new one, trims nothing of it.
    expect(await queue.trim(0, '99999999999999-0', old!.epoch)).toBe(false);
    expect(await queue.trim(0, '99999999999999-0', null)).toBe(false);
    expect(await redis.xlen(s.stream)).toBe(1);
    expect(await queue.trim(0, fresh!.id, fresh!.epoch)).toBe(true);
    expect(await redis.xlen(s.stream)).toBe(0);

    // A stream an ingest of before epochs wrote has no epoch: it is trimmed as before.
    await s.loseData();
    const legacy = await s.appendAt('*', 1);
    expect(await queue.trim(0, legacy, old!.epoch)).toBe(true);
    expect(await redis.xlen(s.stream)).toBe(0);
  });
});
