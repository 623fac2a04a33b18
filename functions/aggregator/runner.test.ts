import { describe, expect, it } from 'vitest';
import type { PartitionBatch } from './apply.ts';
import { splitByKeys } from './runner.ts';

const t = Date.parse('2026-05-10T10:05:00Z');
const entry = (id: string, tenants: string[]) => ({
  id,
  receivedAt: 0,
  events: tenants.map((tenant) => ({ tenant, feature: 'f', tokens: 1, timestamp: t })),
});
const batch = (partition: number, afterId: string, entries: ReturnType<typeof entry>[]): PartitionBatch => ({
  partition,
  fence: '7',
  afterId,
  entries,
});

describe('splitByKeys', () => {
  it('keeps a read whose groups fit in one commit', () => {
    const batches = [batch(0, '0-0', [entry('1-0', ['a', 'b']), entry('2-0', ['a'])]), batch(1, '5-0', [entry('6-0', ['c'])])];
    expect(splitByKeys(batches, 3)).toEqual([{ batches }]);
  });

  it('cuts between entries at the group bound, each slice read after the one before it', () => {
    const events = splitByKeys(
      [batch(0, '0-0', [entry('1-0', ['a', 'b']), entry('2-0', ['c', 'd']), entry('3-0', ['a'])]), batch(1, '5-0', [entry('6-0', ['e'])])],
      3,
    );
    expect(events.map((event) => event.batches.map((b) => [b.partition, b.afterId, b.entries.map((e) => e.id)]))).toEqual([
      [[0, '0-0', ['1-0']]],
      // c, d and a again: three groups.
      [[0, '1-0', ['2-0', '3-0']]],
      [[1, '5-0', ['6-0']]],
    ]);
  });

  it('never splits an entry, even one with more groups than the bound', () => {
    const events = splitByKeys([batch(0, '0-0', [entry('1-0', ['a', 'b', 'c', 'd']), entry('2-0', ['e'])])], 2);
    expect(events.map((event) => event.batches[0]!.entries.map((e) => e.id))).toEqual([['1-0'], ['2-0']]);
    expect(events[1]!.batches[0]!.afterId).toBe('1-0');
  });
});
