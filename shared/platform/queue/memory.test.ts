import { describe, expect, it } from 'vitest';
import { MemoryQueue } from './memory.ts';
import { QueueFullError, partitionOf } from './types.ts';

const event = (tenant: string, id?: string) => ({ tenant, feature: 'f', tokens: 1, timestamp: 0, ...(id ? { id } : {}) });

describe('MemoryQueue (npm start without Valkey)', () => {
  it('counts the backlog per partition, drops it on trim, and refuses past the cap', async () => {
    const queue = new MemoryQueue(2, 60_000, 5);
    const p = partitionOf('a', 2);
    await queue.enqueue([event('a'), event('a'), event('a', 'x'), event('a', 'x')], Date.now());
    expect((await queue.backlog())[p]).toBe(3);
    const [read] = await queue.read([{ partition: p, afterId: '0-0' }], 10, 0);
    await queue.trim(p, read!.entries.at(-1)!.id);
    expect(await queue.backlog()).toEqual([0, 0]);
    await queue.enqueue([event('a'), event('a'), event('a'), event('a'), event('a')], Date.now());
    await expect(queue.enqueue([event('a')], Date.now())).rejects.toBeInstanceOf(QueueFullError);
  });
});
