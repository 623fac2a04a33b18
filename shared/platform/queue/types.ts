/** One validated usage event as it travels through the queue. */
export interface QueuedEvent {
  tenant: string;
  feature: string;
  tokens: number;
  /** Event time, epoch milliseconds. */
  timestamp: number;
  /** Client idempotency key; events without one are never deduplicated. */
  id?: string;
}

export interface EnqueueResult {
  accepted: number;
  duplicates: number;
  /** Per event in request order: true where its `(tenant, id)` was already seen in the window. */
  duplicateFlags: boolean[];
}

/** A stream entry: the events of one request that fell in one partition. */
export interface QueueEntry {
  id: string;
  events: Omit<QueuedEvent, 'id'>[];
  receivedAt: number;
  /**
   * The id space of the stream the entry was appended to (Valkey only). `n…`: a stream made anew (its
   * server's data lost, or the server replaced), whose ids say nothing about an older checkpoint.
   * `c…`: a new name for a stream that already existed (written before epochs), whose ids go on.
   */
  epoch?: string;
}

export interface PartitionPosition {
  partition: number;
  /** Read strictly after this stream id. */
  afterId: string;
}

export interface StreamPosition {
  partition: number;
  /** The epoch the checkpoint belongs to. */
  epoch: string | null;
  afterId: string;
  /** Read the stream's ids (XINFO): for `holds` and `advanced`; a busy stream needs neither. */
  inspect: boolean;
  /** The names of the checkpoint's stream: its entry at `afterId` counts for `holds` only under one of them (any, where none). */
  names?: readonly string[];
}

export interface StreamHead {
  epoch: string | null;
  /** Inspected: the stream's next id was moved past the checkpoint. */
  advanced: boolean;
  /** Inspected: the stream has the checkpoint's entry or deleted up to it (it is the checkpoint's stream). */
  holds: boolean;
}

export interface PartitionEntries {
  partition: number;
  entries: QueueEntry[];
}

export class QueueUnavailableError extends Error {
  override name = 'QueueUnavailableError';
}

export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

export interface EventQueue {
  readonly kind: 'valkey' | 'memory';
  readonly partitions: number;
  /** Dedupes and appends atomically: all events (less duplicates) are durable, or none is and it throws. */
  enqueue(events: readonly QueuedEvent[], receivedAt: number): Promise<EnqueueResult>;
  /** Entries after each position, waiting up to `blockMs` when there are none; each `lane` blocks on its own connection. */
  read(positions: readonly PartitionPosition[], count: number, blockMs: number, lane?: number): Promise<PartitionEntries[]>;
  /**
   * Drops entries up to and including `lastAppliedId` (they are committed to the database), unless
   * the stream has an epoch other than `epoch`: then false, and nothing is dropped.
   */
  trim(partition: number, lastAppliedId: string, epoch?: string | null): Promise<boolean>;
  /**
   * Valkey only: each partition's stream epoch now (null where the stream has never been written;
   * an existing stream without one is named). Inspected, also whether the stream holds `afterId`
   * (has it, or deleted up to it), and, where it is `epoch` and its next id would not sort after
   * `afterId` (its ids rolled back: an AOF that lost its last second, a backup restored), the next
   * id is moved past `afterId`.
   */
  streamHeads?(positions: readonly StreamPosition[]): Promise<StreamHead[]>;
  /** Events waiting per partition. */
  backlog(): Promise<number[]>;
  /** Round-trip time in ms; throws when unreachable. */
  ping(): Promise<number>;
  close(): Promise<void>;
  /** The in-process queue only: later entry ids sort after `id` (a checkpoint an earlier run left). */
  advancePast?(id: string): void;
}

/** FNV-1a: a stable tenant → partition map, the same in every process. */
export function partitionOf(tenant: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < tenant.length; i++) {
    hash ^= tenant.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % partitions;
}

/** Events in an entry are lines of `tenant \t feature \t tokens \t timestamp`; names never hold tabs. */
export function encodeEvents(events: readonly Omit<QueuedEvent, 'id'>[]): string {
  let text = '';
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    text += `${i === 0 ? '' : '\n'}${event.tenant}\t${event.feature}\t${event.tokens}\t${event.timestamp}`;
  }
  return text;
}

export function decodeEvents(text: string): Omit<QueuedEvent, 'id'>[] {
  const events: Omit<QueuedEvent, 'id'>[] = [];
  for (const line of text.split('\n')) {
    const [tenant, feature, tokens, timestamp] = line.split('\t') as [string, string, string, string];
    events.push({ tenant, feature, tokens: Number(tokens), timestamp: Number(timestamp) });
  }
  return events;
}

/** Compares stream ids `ms-seq` numerically. */
export function compareStreamIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bMs, bSeq] = b.split('-').map(BigInt) as [bigint, bigint];
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  if (aSeq !== bSeq) return aSeq < bSeq ? -1 : 1;
  return 0;
}
