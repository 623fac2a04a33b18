import { randomBytes } from 'node:crypto';
import { Redis } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeySpace, openValkeyQueue, servicesAvailable, VALKEY_URL } from './helpers/services.ts';
import { type QueuedEvent, partitionOf } from '../shared/platform/queue/types.ts';
import { dedupeBase, dedupeKeys, type ValkeyQueue } from '../shared/platform/queue/valkey.ts';

const event = (tenant: string, id?: string, tokens = 1): QueuedEvent => ({
  tenant,
  feature: 'f',
  tokens,
  timestamp: 0,
  ...(id ? { id } : {}),
});
const id40 = (n: number): string => `${randomBytes(14).toString('hex')}-${String(n).padStart(11, '0')}`;

describe.skipIf(!servicesAvailable)('ValkeyQueue dedupe (digests in expiring sets)', () => {
  const keySpace = createKeySpace();
  const redis = new Redis(VALKEY_URL);
  const queues: ValkeyQueue[] = [];
  const made: { windowMs: number; from: number }[] = [];

  const serverNow = async (): Promise<number> => {
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1_000 + Math.floor(Number(micros) / 1_000);
  };
  const open = async (windowMs: number): Promise<ValkeyQueue> => {
    made.push({ windowMs, from: await serverNow() });
    const queue = await openValkeyQueue(keySpace.prefix, { partitions: 4, dedupeWindowMs: windowMs });
    queues.push(queue);
    return queue;
  };
  /** A window whose current bucket (half a window) has at least `marginMs` left, so a test never straddles one by chance. */
  const windowWithRoom = async (approxMs: number, marginMs: number): Promise<number> => {
    const now = await serverNow();
    for (let windowMs = approxMs; ; windowMs += 2_000) {
      const span = Math.ceil(windowMs / 2);
      if ((Math.floor(now / span) + 1) * span - now >= marginMs) return windowMs;
    }
  };

  beforeAll(() => {
    redis.on('error', () => {});
  });
  afterAll(async () => {
    for (const queue of queues) await queue.close();
    const now = await serverNow();
    for (const { windowMs, from } of made) {
      const keys = await dedupeKeys(redis, keySpace.prefix, windowMs, from, now);
      for (let i = 0; i < keys.length; i += 1_000) await redis.del(...keys.slice(i, i + 1_000));
    }
    redis.disconnect();
    await keySpace.clear();
  });

  it('flags repeats of (tenant, id) in request order, across calls, and never an id-less event or another tenant', async () => {
    const queue = await open(await windowWithRoom(3_600_000, 30_000));
    const first = await queue.enqueue(
      [event('a', 'x'), event('a'), event('a', 'x'), event('b', 'x'), event('a', 'y'), event('a')],
      Date.now(),
    );
    expect(first.duplicateFlags).toEqual([false, false, true, false, false, false]);
    expect(first).toMatchObject({ accepted: 5, duplicates: 1 });
    const again = await queue.enqueue([event('b', 'x'), event('a'), event('a', 'y'), event('c', 'y')], Date.now());
    expect(again.duplicateFlags).toEqual([true, false, true, false]);

    // What reached the streams: every event not flagged, once.
    const entries = await queue.read(
      Array.from({ length: 4 }, (_, partition) => ({ partition, afterId: '0-0' })),
      100,
      0,
    );
    const tenants = entries.flatMap((part) => part.entries.flatMap((entry) => entry.events.map((e) => e.tenant))).sort();
    expect(tenants).toEqual(['a', 'a', 'a', 'a', 'a', 'b', 'c']);
    expect(entries.find((part) => part.partition === partitionOf('a', 4))!.entries[0]!.events).toHaveLength(4);
  });

  it('remembers an id for the whole window across bucket boundaries, and forgets it after 1.5 windows', async () => {
    const windowMs = 400;
    const span = windowMs / 2;
    const queue = await open(windowMs);
    const bucketNow = async () => Math.floor((await serverNow()) / span);
    const waitForBucket = async (bucket: number) => {
      const deadline = Date.now() + 10_000;
      while ((await bucketNow()) < bucket) if (Date.now() > deadline) throw new Error(`bucket ${bucket} never came`);
    };
    expect((await queue.enqueue([event('a', 'kept')], Date.now())).duplicates).toBe(0);
    // The id went into this bucket or, had a boundary passed meanwhile, the one before.
    const stored = await bucketNow();
    await waitForBucket(stored + 1);
    expect((await queue.enqueue([event('a', 'kept')], Date.now())).duplicates).toBe(1);
    await waitForBucket(stored + 3);
    expect((await queue.enqueue([event('a', 'kept')], Date.now())).duplicates).toBe(0);
  });

  it('keeps every set compact past a generation switch: ≤ 40 bytes per remembered id and no false duplicate', async () => {
    const windowMs = await windowWithRoom(7_200_000, 120_000);
    const queue = await open(windowMs);
    const count = 20_000;
    const ids = Array.from({ length: count }, (_, n) => id40(n));
    let accepted = 0;
    for (let i = 0; i < count; i += 1_000)
      accepted += (
        await queue.enqueue(
          ids.slice(i, i + 1_000).map((id) => event(`t${i % 7}`, id)),
          Date.now(),
        )
      ).accepted;
    expect(accepted).toBe(count);
    let duplicates = 0;
    for (let i = 0; i < count; i += 1_000)
      duplicates += (
        await queue.enqueue(
          ids.slice(i, i + 1_000).map((id) => event(`t${i % 7}`, id)),
          Date.now(),
        )
      ).duplicates;
    expect(duplicates).toBe(count);

    const bucket = Math.floor((await serverNow()) / Math.ceil(windowMs / 2));
    // 64 sets take the first 64 × 256 ids; the rest went to a second generation of 1,024 sets.
    expect(await redis.hget(`${dedupeBase(keySpace.prefix)}${bucket}`, 's')).toBe('64,1024');
    const keys = await dedupeKeys(redis, keySpace.prefix, windowMs, made.at(-1)!.from, await serverNow());
    let bytes = 0;
    const encodings = new Set<string>();
    for (const key of keys) {
      if ((await redis.exists(key)) === 0) continue;
      bytes += Number(await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
      if (key.split(':').length > 3) encodings.add(String(await redis.call('OBJECT', 'ENCODING', key)));
    }
    expect(encodings).toEqual(new Set(['intset']));
    expect(bytes / count).toBeLessThanOrEqual(40);
  });
});
