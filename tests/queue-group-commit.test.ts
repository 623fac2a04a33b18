import { afterAll, describe, expect, it } from 'vitest';
import { createKeySpace, openValkeyQueue, servicesAvailable } from './helpers/services.ts';
import type { EnqueueResult, QueuedEvent } from '../shared/platform/queue/types.ts';
import type { ValkeyQueue } from '../shared/platform/queue/valkey.ts';

const PARTITIONS = 4;
const nextTurn = () => new Promise<void>((done) => setImmediate(done));

type ScriptCall = (numKeys: number, ...args: (string | number)[]) => Promise<[number, string]>;

/**
 * The queue's script calls as Valkey sees them, each still sent to the real server: `hold()` keeps
 * the next call from being sent until `release()`, as a slow round trip would, and `failNext()`
 * makes the next released call fail as a lost connection would.
 */
function watchCalls(queue: ValkeyQueue) {
  const client = (queue as unknown as { client: { fmEnqueue: ScriptCall } }).client;
  const send = client.fmEnqueue.bind(client);
  const calls: { tokens: number }[] = [];
  let gate: Promise<void> | undefined;
  let open = (): void => undefined;
  let failing = false;
  client.fmEnqueue = async (numKeys, ...args) => {
    // The lines carry "tenant\tfeature\ttokens\ttimestamp": the test's tokens tell its requests apart.
    const tokens = args
      .filter((arg): arg is string => typeof arg === 'string' && arg.includes('\t'))
      .flatMap((text) => text.split('\n'))
      .reduce((sum, line) => sum + Number(line.split('\t')[2]), 0);
    calls.push({ tokens });
    const held = gate;
    gate = undefined;
    await held;
    if (failing) {
      failing = false;
      throw new Error('connection lost (test)');
    }
    return send(numKeys, ...args);
  };
  return {
    calls,
    hold() {
      gate = new Promise((done) => (open = done));
    },
    release: () => open(),
    failNext() {
      failing = true;
    },
  };
}

describe.skipIf(!servicesAvailable)('ValkeyQueue group commit (one script call in flight)', () => {
  const keySpace = createKeySpace();
  const queues: ValkeyQueue[] = [];

  const open = async (): Promise<ValkeyQueue> => {
    const queue = await openValkeyQueue(keySpace.prefix, { partitions: PARTITIONS, dedupeWindowMs: 60_000 });
    queues.push(queue);
    return queue;
  };

  /** A tenant of the test's own and its events, told apart by their tokens. */
  const tenantEvents = (label: string) => {
    const tenant = `${label}-${keySpace.prefix}`;
    return { tenant, event: (tokens: number): QueuedEvent => ({ tenant, feature: 'f', tokens, timestamp: Date.now() }) };
  };

  const streamTokens = async (queue: ValkeyQueue, tenant: string): Promise<number[]> => {
    const parts = await queue.read(
      Array.from({ length: PARTITIONS }, (_, partition) => ({ partition, afterId: '0-0' })),
      10_000,
      0,
    );
    return parts
      .flatMap((part) => part.entries.flatMap((entry) => entry.events))
      .filter((event) => event.tenant === tenant)
      .map((event) => Number(event.tokens))
      .sort((a, b) => a - b);
  };

  afterAll(async () => {
    for (const queue of queues) await queue.close();
    await keySpace.clear();
  });

  it('sends the requests that arrive while a call is out together in the next call, and answers each', async () => {
    const queue = await open();
    const watch = watchCalls(queue);
    const { tenant, event } = tenantEvents('gc');

    watch.hold();
    const first = queue.enqueue([event(1)], Date.now());
    while (watch.calls.length === 0) await nextTurn();
    // Twenty requests, each in an event-loop turn of its own, while the first call is out.
    const later: Promise<EnqueueResult>[] = [];
    for (let i = 2; i <= 21; i++) {
      later.push(queue.enqueue([event(i)], Date.now()));
      await nextTurn();
    }
    expect(watch.calls).toHaveLength(1);
    watch.release();

    expect(await first).toMatchObject({ accepted: 1, duplicates: 0 });
    for (const result of await Promise.all(later)) expect(result).toMatchObject({ accepted: 1, duplicates: 0 });
    expect(watch.calls.map((call) => call.tokens)).toEqual([1, (2 + 21) * 10]);
    expect(await streamTokens(queue, tenant)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  });

  it('a failed call fails its own requests only: those that waited for it go in the next call', async () => {
    const queue = await open();
    const watch = watchCalls(queue);
    const { tenant, event } = tenantEvents('gf');

    watch.hold();
    watch.failNext();
    const first = queue.enqueue([event(100)], Date.now());
    while (watch.calls.length === 0) await nextTurn();
    const waiting = [queue.enqueue([event(1)], Date.now())];
    await nextTurn();
    waiting.push(queue.enqueue([event(2), event(3)], Date.now()));
    watch.release();

    await expect(first).rejects.toThrow('connection lost (test)');
    expect(await Promise.all(waiting)).toMatchObject([{ accepted: 1 }, { accepted: 2 }]);
    expect(watch.calls.map((call) => call.tokens)).toEqual([100, 6]);
    expect(await streamTokens(queue, tenant)).toEqual([1, 2, 3]);
  });
});
