import { EventEmitter, once } from 'node:events';
import {
  type EnqueueResult,
  type EventQueue,
  type PartitionEntries,
  type PartitionPosition,
  type QueueEntry,
  type QueuedEvent,
  QueueFullError,
  compareStreamIds,
  partitionOf,
} from './types.ts';

/**
 * The queue of `npm start` without VALKEY_URL: same contract as the Valkey one inside one process,
 * but nothing survives a restart of that process.
 */
export class MemoryQueue implements EventQueue {
  readonly kind = 'memory' as const;
  private readonly streams: QueueEntry[][];
  /** Events per partition not yet trimmed, kept with the streams instead of recounted per request. */
  private readonly waiting: number[];
  private readonly seen = new Map<string, number>();
  private readonly arrivals = new EventEmitter();
  private lastMs = 0;
  private lastSeq = 0;

  constructor(
    readonly partitions: number,
    private readonly dedupeWindowMs: number,
    private readonly maxBacklog: number,
  ) {
    this.streams = Array.from({ length: partitions }, () => []);
    this.waiting = Array.from({ length: partitions }, () => 0);
    this.arrivals.setMaxListeners(0);
  }

  /**
   * Makes every later entry id greater than `id`: the aggregator calls it with the checkpoints an
   * earlier run left in the database. Ids come from the clock, and after a restart with the clock
   * behind such a checkpoint (set back, or the earlier run's ahead) new entries would sort before it
   * and never be read: answered 202, counted zero times.
   */
  advancePast(id: string): void {
    const [ms = 0, seq = 0] = id.split('-').map(Number);
    if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return;
    if (ms > this.lastMs || (ms === this.lastMs && seq > this.lastSeq)) {
      this.lastMs = ms;
      this.lastSeq = seq;
    }
  }

  private nextId(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.lastSeq = 0;
    } else {
      this.lastSeq += 1;
    }
    return `${this.lastMs}-${this.lastSeq}`;
  }

  async enqueue(events: readonly QueuedEvent[], receivedAt: number): Promise<EnqueueResult> {
    if (this.waiting.reduce((sum, n) => sum + n, 0) >= this.maxBacklog) throw new QueueFullError('queue backlog is over its cap');
    const now = Date.now();
    const byPartition = new Map<number, QueueEntry['events']>();
    const duplicateFlags = events.map((event) => {
      if (event.id !== undefined) {
        const key = `${event.tenant.length}:${event.tenant}:${event.id}`;
        const expires = this.seen.get(key);
        if (expires !== undefined && expires > now) return true;
        this.seen.set(key, now + this.dedupeWindowMs);
      }
      const partition = partitionOf(event.tenant, this.partitions);
      const list = byPartition.get(partition) ?? [];
      list.push({ tenant: event.tenant, feature: event.feature, tokens: event.tokens, timestamp: event.timestamp });
      byPartition.set(partition, list);
      return false;
    });
    for (const [partition, list] of byPartition) {
      this.streams[partition]!.push({ id: this.nextId(), events: list, receivedAt });
      this.waiting[partition]! += list.length;
    }
    if (this.seen.size > 1_000_000) {
      for (const [key, expires] of this.seen) if (expires <= now) this.seen.delete(key);
    }
    if (byPartition.size > 0) this.arrivals.emit('entry');
    const duplicates = duplicateFlags.filter(Boolean).length;
    return { accepted: events.length - duplicates, duplicates, duplicateFlags };
  }

  async read(positions: readonly PartitionPosition[], count: number, blockMs: number): Promise<PartitionEntries[]> {
    const collect = (): PartitionEntries[] =>
      positions
        .map(({ partition, afterId }) => ({
          partition,
          entries: this.streams[partition]!.filter((entry) => compareStreamIds(entry.id, afterId) > 0).slice(0, count),
        }))
        .filter((found) => found.entries.length > 0);
    const found = collect();
    if (found.length > 0 || blockMs <= 0) return found;
    const signal = AbortSignal.timeout(blockMs);
    await once(this.arrivals, 'entry', { signal }).catch(() => undefined);
    return collect();
  }

  async trim(partition: number, lastAppliedId: string): Promise<boolean> {
    // Entries are in id order: drop the applied head.
    const stream = this.streams[partition]!;
    let applied = 0;
    while (applied < stream.length && compareStreamIds(stream[applied]!.id, lastAppliedId) <= 0) {
      this.waiting[partition]! -= stream[applied]!.events.length;
      applied++;
    }
    stream.splice(0, applied);
    return true;
  }

  async backlog(): Promise<number[]> {
    return [...this.waiting];
  }

  async ping(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {
    this.arrivals.emit('entry');
  }
}
