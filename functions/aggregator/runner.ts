import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../../shared/platform/config.ts';
import { type Db, retryUntilDone } from '../../shared/platform/db.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import type { EventQueue, PartitionEntries, QueueEntry } from '../../shared/platform/queue/types.ts';
import { type AggregatorEvent, type AggregatorResult, CheckpointMovedError, type PartitionBatch, StaleOwnerError } from './apply.ts';
import { quarterOf } from './rollup.ts';

export interface RunnerOptions {
  db: Db;
  queue: EventQueue;
  logger: Logger;
  /** The aggregator function (middy handler) the runner feeds. */
  apply: (event: AggregatorEvent) => Promise<AggregatorResult>;
  /** Stable name of this replica: a restart under the same name takes its partitions back at once. */
  ownerId: string;
  leaseMs: number;
  /** Stream entries read per partition per round. */
  batchSize: number;
  /** Concurrent apply loops over disjoint partition sets (default 1). */
  lanes?: number;
  /** Most distinct (tenant, feature, quarter hour) groups one commit holds (default ROUND_KEYS). */
  roundKeys?: number;
  /** Events one lane aims to read per round, whatever the entries' sizes (default ROUND_EVENTS). */
  roundEvents?: number;
  onApplied?: (result: AggregatorResult) => void;
}

interface Owned {
  fence: string;
  lastId: string;
  /** The stream epoch `lastId` belongs to; null until the partition's stream was first seen with one. */
  epoch: string | null;
  /** Older names of the stream being read: its entries are that stream's too. */
  aliases: string[];
  /** Streams left, each with all its names and the last id applied in it (newest last). */
  left: LeftStream[];
  trimmedId?: string;
}

const READ_BLOCK_MS = 250;
/**
 * A round's memory follows its distinct groups (each becomes an entry in the commit's array
 * columns, the driver's copy of them and rows in three rollups), not its event count: 10,000 groups per commit keep a lane to a few MB
 * at any tenant cardinality, and a low-cardinality round still applies everything it read at once.
 */
export const ROUND_KEYS = 10_000;
/** Decoded events a lane reads per round (about 150 bytes each). */
export const ROUND_EVENTS = 20_000;
/** Largest request ingest accepts: the size assumed of entries until a read shows otherwise. */
const MAX_EVENTS_PER_ENTRY = 1_000;
const MAX_BACKOFF_MS = 5_000;
const TRIM_INTERVAL_MS = 1_000;
/** How often a lane asks for the epochs of partitions its reads found empty. */
const EPOCH_CHECK_INTERVAL_MS = 1_000;
/** Streams left that a checkpoint remembers. */
const LEFT_STREAMS = 8;

interface LeftStream {
  names: string[];
  lastId: string;
}

/**
 * `earlier_epochs` holds the stream being read's older names as `{names, lastId: null}` and each
 * stream left as `{names, lastId}`, newest last.
 */
type EarlierEpochs = { names: string[]; lastId: string | null }[];

function readEarlier(stored: unknown): Pick<Owned, 'aliases' | 'left'> {
  // Rows written by the first cut of epochs hold [name, lastId | null] pairs: the same, one name each.
  const groups = (Array.isArray(stored) ? stored : []).flatMap((group): EarlierEpochs => {
    if (Array.isArray(group) && typeof group[0] === 'string')
      return [{ names: [group[0]], lastId: typeof group[1] === 'string' ? group[1] : null }];
    return typeof group === 'object' && group !== null && Array.isArray(group.names) ? [group as EarlierEpochs[number]] : [];
  });
  return {
    aliases: groups.filter((group) => group.lastId === null).flatMap((group) => group.names),
    left: groups.flatMap((group) => (group.lastId === null ? [] : [{ names: group.names, lastId: group.lastId }])),
  };
}

function writeEarlier(aliases: readonly string[], left: readonly LeftStream[]): string {
  const groups: EarlierEpochs = [...(aliases.length > 0 ? [{ names: [...aliases], lastId: null }] : []), ...left];
  return JSON.stringify(groups);
}

/** Whether entries of `epoch` belong to the stream the partition is reading. */
function isCurrent(owned: Owned, epoch: string): boolean {
  return epoch === owned.epoch || owned.aliases.includes(epoch);
}

interface CheckpointRow {
  partition: number;
  fence: bigint;
  last_id: string;
  stream_epoch: string | null;
  earlier_epochs: unknown;
}

/**
 * Feeds the aggregator from the queue. It owns partitions through leases in PostgreSQL; each
 * acquisition bumps the partition's fence, and commits carry the fence, so two replicas never apply
 * the same partition and a replica that lost its lease cannot commit.
 */
export class AggregatorRunner {
  private readonly owned = new Map<number, Owned>();
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly lastTrimAt: number[] = [];
  private readonly lastEpochCheckAt: number[] = [];
  /** Per lane: the entry size the next read is sized for. */
  private readonly eventsPerEntry: number[] = [];

  constructor(private readonly options: RunnerOptions) {}

  get ownedPartitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  async start(): Promise<void> {
    const { db, queue, logger } = this.options;
    // Idempotent, so retried until the database answers: a flaky start delays the aggregator, never ends it.
    await retryUntilDone(
      'creating partition checkpoints',
      logger,
      () =>
        db.query('INSERT INTO partition_checkpoints (partition) SELECT generate_series(0, $1::int - 1) ON CONFLICT DO NOTHING', [
          queue.partitions,
        ]),
      { cancelled: () => this.stopping },
    );
    await this.refuseFewerPartitions();
    await this.maintainLeases().catch((error: Error) => this.options.logger.warn({ err: error.message }, 'lease maintenance failed'));
    const lanes = Array.from({ length: this.options.lanes ?? 1 }, (_, lane) => this.lane(lane));
    this.loop = Promise.all([this.leases(), ...lanes]).then(() => undefined);
  }

  /**
   * Checkpoints of partitions at or past QUEUE_PARTITIONS mean it was lowered: their Valkey streams
   * would never be read again (nor could they be leased: their rows are no stream here), so the
   * events in them would never count. Lowering needs the queue drained first (docs/deploy.md). The
   * in-process queue of `npm start` keeps nothing across a restart: its extra rows are dropped.
   */
  private async refuseFewerPartitions(): Promise<void> {
    const { db, queue } = this.options;
    if (queue.kind === 'memory') {
      const kept = await retryUntilDone(
        'dropping checkpoints of partitions no longer used',
        this.options.logger,
        async () => {
          await db.query('DELETE FROM partition_checkpoints WHERE partition >= $1', [queue.partitions]);
          return db.query<{ last_id: string }>('SELECT last_id FROM partition_checkpoints');
        },
        { cancelled: () => this.stopping },
      );
      // New entries must sort after what an earlier run checkpointed, whatever the clock says now.
      for (const row of kept) queue.advancePast?.(row.last_id);
      return;
    }
    const [row] = await retryUntilDone(
      'reading the partition checkpoints',
      this.options.logger,
      () => db.query<{ partitions: number | null }>('SELECT max(partition) + 1 AS partitions FROM partition_checkpoints'),
      { cancelled: () => this.stopping },
    );
    if (row?.partitions && row.partitions > queue.partitions) {
      throw new ConfigError(
        `QUEUE_PARTITIONS: ${queue.partitions}, but the database holds checkpoints of ${row.partitions} partitions; ` +
          `it can be raised, not lowered, while events may wait in the higher partitions (docs/deploy.md, "Scaling the aggregator")`,
      );
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
    await this.release([...this.owned.keys()]).catch(() => undefined);
    await this.options.db.query('DELETE FROM aggregator_members WHERE owner = $1', [this.options.ownerId]).catch(() => undefined);
  }

  private async leases(): Promise<void> {
    while (!this.stopping) {
      await sleep(this.options.leaseMs / 4);
      if (this.stopping) break;
      await this.maintainLeases().catch((error: Error) => this.options.logger.warn({ err: error.message }, 'lease maintenance failed'));
    }
  }

  /**
   * One lane applies the owned partitions `p` with `p % lanes === lane`. Lanes hold disjoint tenants,
   * so their transactions never wait on each other and PostgreSQL applies them on separate cores.
   */
  private async lane(lane: number): Promise<void> {
    const lanes = this.options.lanes ?? 1;
    let backoffMs = 0;
    // After an error the outcome of the last commit is unknown: positions come from the database.
    let reload = false;
    while (!this.stopping) {
      const partitions = this.ownedPartitions.filter((partition) => partition % lanes === lane);
      if (partitions.length === 0) {
        await sleep(Math.min(250, this.options.leaseMs / 4));
        continue;
      }
      try {
        if (reload) await this.reloadPositions(partitions);
        reload = false;
        await this.round(lane, partitions);
        backoffMs = 0;
      } catch (error) {
        reload = true;
        if (error instanceof StaleOwnerError) {
          for (const partition of error.partitions) this.owned.delete(partition);
          this.options.logger.warn({ partitions: error.partitions }, 'partitions taken over by another aggregator');
          continue;
        }
        if (error instanceof CheckpointMovedError) {
          this.options.logger.warn(
            { partitions: error.partitions },
            'an earlier commit went through although its answer was lost; reading on from the checkpoint',
          );
          continue;
        }
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(100, backoffMs * 2));
        this.options.logger.warn({ err: (error as Error).message, retryInMs: backoffMs, lane }, 'aggregator round failed; retrying');
        await sleep(backoffMs);
      }
    }
  }

  /**
   * Takes each partition's position from its checkpoint row, the one record of what was applied.
   * A partition whose fence moved belongs to another replica now and is let go.
   */
  private async reloadPositions(partitions: number[]): Promise<void> {
    const rows = await this.options.db.query<CheckpointRow>(
      'SELECT partition, fence, last_id, stream_epoch, earlier_epochs FROM partition_checkpoints WHERE partition = ANY (SELECT value::int FROM jsonb_array_elements_text($1::jsonb))',
      [JSON.stringify(partitions)],
    );
    for (const row of rows) {
      const owned = this.owned.get(row.partition);
      if (!owned) continue;
      if (owned.fence !== row.fence.toString()) {
        this.owned.delete(row.partition);
        this.options.logger.warn({ partition: row.partition }, 'lease lost');
      } else {
        owned.lastId = row.last_id;
        owned.epoch = row.stream_epoch;
        Object.assign(owned, readEarlier(row.earlier_epochs));
      }
    }
  }

  /**
   * Reads after the last applied ids, applies in commits of at most `roundKeys` groups, then trims
   * what is committed (at most every TRIM_INTERVAL_MS).
   */
  private async round(lane: number, partitions: number[]): Promise<void> {
    const { queue, apply } = this.options;
    // Each position keeps the lease it was read under: lease upkeep may lose a partition and take it
    // back (a new fence, the checkpoint's position) while the read waits, and entries read after the
    // old position must not be committed as if they followed the new one — they would count twice.
    const positions = partitions.flatMap((partition) => {
      const owned = this.owned.get(partition);
      return owned ? [{ partition, afterId: owned.lastId, owned }] : [];
    });
    const readUnder = new Map(positions.map((position) => [position.partition, position]));
    const perEntry = this.eventsPerEntry[lane] ?? MAX_EVENTS_PER_ENTRY;
    const count = Math.max(
      1,
      Math.min(this.options.batchSize, Math.floor((this.options.roundEvents ?? ROUND_EVENTS) / (positions.length * perEntry))),
    );
    const read = await queue.read(
      positions.map(({ partition, afterId }) => ({ partition, afterId })),
      count,
      READ_BLOCK_MS,
      lane,
    );
    this.eventsPerEntry[lane] = nextEventsPerEntry(
      perEntry,
      read.flatMap((found) => found.entries),
    );
    const batches: PartitionBatch[] = [];
    const switches: { partition: number; owned: Owned; epoch: string }[] = [];
    for (const found of read) {
      const position = readUnder.get(found.partition);
      // Lost, or lost and taken again, during the read: the next round reads from the new position.
      if (!position || this.owned.get(found.partition) !== position.owned) continue;
      // Entries up to the first of another epoch are applied (those of before epochs carry none);
      // then the partition switches, and the next round reads from where the new epoch says.
      const cut = found.entries.findIndex((entry) => entry.epoch !== undefined && !isCurrent(position.owned, entry.epoch));
      if (cut >= 0) switches.push({ partition: found.partition, owned: position.owned, epoch: found.entries[cut]!.epoch! });
      const entries = cut >= 0 ? found.entries.slice(0, cut) : found.entries;
      if (entries.length > 0) batches.push({ partition: found.partition, fence: position.owned.fence, afterId: position.afterId, entries });
    }
    for (const event of splitByKeys(batches, this.options.roundKeys ?? ROUND_KEYS)) {
      const result = await apply(event);
      for (const [partition, lastId] of Object.entries(result.lastIds)) {
        const owned = this.owned.get(Number(partition));
        if (owned) owned.lastId = lastId;
      }
      this.options.onApplied?.(result);
    }
    for (const { partition, owned, epoch } of switches) {
      if (this.owned.get(partition) === owned) await this.switchEpoch(partition, owned, epoch);
    }
    await this.checkEpochs(lane, positions, read);
    await this.trimApplied(lane, partitions, batches.length === 0);
  }

  /**
   * A stream whose ids start over below the checkpoint has nothing after it to read: its entries
   * would wait for ever, answered 202 and counted zero times. Every owned partition's stream is asked
   * for its epoch once a second (a busy one too: its entries may carry none, written by an ingest of
   * before epochs, while its key has one), and one whose ids were rolled back behind the checkpoint
   * (an AOF that lost its last second, a backup restored) has its next id moved past it.
   */
  private async checkEpochs(
    lane: number,
    positions: readonly { partition: number; owned: Owned }[],
    read: readonly PartitionEntries[],
  ): Promise<void> {
    const { queue } = this.options;
    const current = positions.filter((position) => this.owned.get(position.partition) === position.owned);
    if (!queue.streamHeads || current.length === 0) return;
    const now = Date.now();
    if (now - (this.lastEpochCheckAt[lane] ?? 0) < EPOCH_CHECK_INTERVAL_MS) return;
    this.lastEpochCheckAt[lane] = now;
    const busy = new Set(read.map((found) => found.partition));
    // A busy stream has entries after the checkpoint: its ids were not rolled back behind it, and its
    // entries are not copied out to find out.
    const heads = await queue.streamHeads(
      current.map(({ partition, owned }) => ({ partition, epoch: owned.epoch, afterId: owned.lastId, inspect: !busy.has(partition) })),
    );
    for (const [i, { partition, owned }] of current.entries()) {
      const head = heads[i]!;
      if (head.advanced) {
        this.options.logger.warn(
          { partition, epoch: owned.epoch, checkpoint: owned.lastId },
          'the partition stream was rolled back behind its checkpoint (Valkey restored older data); its next id now follows the checkpoint',
        );
      }
      if (head.epoch && head.epoch !== owned.epoch && this.owned.get(partition) === owned)
        await this.switchEpoch(partition, owned, head.epoch);
    }
  }

  /**
   * The partition's stream has another epoch than its checkpoint. Where reading goes on:
   * - an older name of the stream being read: where it was;
   * - a name of a stream left earlier (an older copy of Valkey's data came back): after the last id
   *   applied in that stream, and the stream's next id is moved past it (a restored stream numbers
   *   on from its own last id, which may sort before);
   * - a name never seen: where it was if the stream holds the checkpoint (has it, or deleted up to
   *   it: the stream renamed, or applied by an aggregator of before epochs), else from its start — a
   *   new stream, none of whose entries was applied, and whose ids are no guide.
   * The move is fenced and compare-and-set like a commit. A stream left is remembered with all its
   * names and the last id applied in it.
   */
  private async switchEpoch(partition: number, owned: Owned, epoch: string): Promise<void> {
    const { queue } = this.options;
    const returning = owned.left.find((stream) => stream.names.includes(epoch));
    let sameStream = owned.aliases.includes(epoch);
    const current = [...(owned.epoch === null ? [] : [owned.epoch]), ...owned.aliases];
    // An `n…` name is minted only for a stream that did not exist: never the one a known epoch names.
    if (!sameStream && !returning && !(owned.epoch !== null && epoch.startsWith('n'))) {
      const [head] = (await queue.streamHeads?.([{ partition, epoch: null, afterId: owned.lastId, inspect: true, names: current }])) ?? [];
      sameStream = head?.holds ?? false;
    }
    let aliases: string[];
    let left: LeftStream[];
    let resumeAfter: string;
    if (sameStream) {
      resumeAfter = owned.lastId;
      aliases = current.filter((name) => name !== epoch);
      left = owned.left;
    } else {
      resumeAfter = returning?.lastId ?? '0-0';
      aliases = returning ? returning.names.filter((name) => name !== epoch) : [];
      const others = owned.left.filter((stream) => stream !== returning);
      left = [...others, ...(current.length > 0 ? [{ names: current, lastId: owned.lastId }] : [])].slice(-LEFT_STREAMS);
    }
    const moved = await this.options.db.query<{ partition: number }>(
      `UPDATE partition_checkpoints SET last_id = $2, stream_epoch = $3, earlier_epochs = $4::jsonb, updated_at = now()
       WHERE partition = $1 AND fence = $5 AND last_id = $6 AND stream_epoch IS NOT DISTINCT FROM $7
       RETURNING partition`,
      [partition, resumeAfter, epoch, writeEarlier(aliases, left), owned.fence, owned.lastId, owned.epoch],
    );
    if (moved.length === 0) throw new Error(`partition ${partition}: its checkpoint moved while switching stream epochs`);
    const log = { partition, epoch, previousEpoch: owned.epoch, previousCheckpoint: owned.lastId, resumeAfter };
    if (sameStream) this.options.logger.info(log, 'partition stream epoch recorded');
    else
      this.options.logger.warn(
        log,
        'the partition stream is another than its checkpoint (Valkey lost its data, or was replaced or restored); reading it from where that stream was applied to',
      );
    owned.lastId = resumeAfter;
    owned.epoch = epoch;
    owned.aliases = aliases;
    owned.left = left;
    owned.trimmedId = undefined;
    if (returning) await queue.streamHeads?.([{ partition, epoch, afterId: resumeAfter, inspect: true }]);
  }

  /**
   * Trimming is housekeeping, batched to one call per partition per interval: entries up to the
   * checkpoint stay readable a little longer, and a restart skips them by the checkpoint alone
   * (which is what makes the checkpoint, not the trim, carry exactly-once).
   */
  private async trimApplied(lane: number, partitions: number[], idle: boolean): Promise<void> {
    const now = Date.now();
    if (!idle && now - (this.lastTrimAt[lane] ?? 0) < TRIM_INTERVAL_MS) return;
    this.lastTrimAt[lane] = now;
    for (const partition of partitions) {
      const owned = this.owned.get(partition);
      if (!owned || owned.trimmedId === owned.lastId) continue;
      // A trim refused (the stream has another epoch) is tried again: the next epoch check switches.
      await this.options.queue.trim(partition, owned.lastId, owned.epoch).then(
        (trimmed) => {
          if (trimmed) owned.trimmedId = owned.lastId;
        },
        (error: Error) => this.options.logger.warn({ err: error.message, partition }, 'stream trim failed'),
      );
    }
  }

  private async maintainLeases(): Promise<void> {
    const { db, ownerId, leaseMs, queue } = this.options;
    if (this.owned.size > 0) {
      const held = JSON.stringify([...this.owned].map(([partition, owned]) => ({ partition, fence: owned.fence })));
      // Rows a commit holds are skipped, not waited for: that commit renews them itself. Waiting would
      // hold the rows already renewed, and with them the other lane's next commit, for a whole round.
      const renewed = await db.query<{ partition: number }>(
        `UPDATE partition_checkpoints c SET lease_until = now() + $2::int * interval '1 millisecond'
         WHERE c.partition IN (
           SELECT p.partition FROM partition_checkpoints p
           JOIN jsonb_to_recordset($1::jsonb) AS x(partition int, fence bigint) ON p.partition = x.partition AND p.fence = x.fence
           WHERE p.owner = $3 ORDER BY p.partition FOR UPDATE OF p SKIP LOCKED)
         RETURNING c.partition`,
        [held, leaseMs, ownerId],
      );
      const kept = new Set(renewed.map((row) => row.partition));
      if (kept.size < this.owned.size) {
        // Skipped rows are still ours while their last committed owner and fence are.
        const current = await db.query<{ partition: number }>(
          `SELECT p.partition FROM partition_checkpoints p
           JOIN jsonb_to_recordset($1::jsonb) AS x(partition int, fence bigint) ON p.partition = x.partition AND p.fence = x.fence
           WHERE p.owner = $2`,
          [held, ownerId],
        );
        for (const row of current) kept.add(row.partition);
      }
      for (const partition of this.owned.keys()) {
        if (!kept.has(partition)) {
          this.owned.delete(partition);
          this.options.logger.warn({ partition }, 'lease lost');
        }
      }
    }
    await db.query(
      `INSERT INTO aggregator_members (owner, seen_at) VALUES ($1, now())
       ON CONFLICT (owner) DO UPDATE SET seen_at = now()`,
      [ownerId],
    );
    const [others] = await db.query<{ count: number }>(
      `SELECT count(*)::int AS count FROM aggregator_members
       WHERE owner <> $1 AND seen_at > now() - $2::int * interval '1 millisecond'`,
      [ownerId, leaseMs],
    );
    const target = Math.ceil(queue.partitions / ((others?.count ?? 0) + 1));
    if (this.owned.size > target) {
      await this.release(this.ownedPartitions.slice(target));
    } else if (this.owned.size < target) {
      await this.acquire(target - this.owned.size);
    }
  }

  /** Takes free, expired, or this replica's previous incarnation's partitions; each take bumps the fence. */
  private async acquire(count: number): Promise<void> {
    const { db, ownerId, leaseMs, queue } = this.options;
    const free = `(owner IS NULL OR lease_until IS NULL OR lease_until < now()
                   OR (owner = $1 AND partition NOT IN (SELECT value::int FROM jsonb_array_elements_text($3::jsonb))))`;
    const taken = await db.query<CheckpointRow>(
      `UPDATE partition_checkpoints SET owner = $1, fence = fence + 1,
         lease_until = now() + $2::int * interval '1 millisecond', updated_at = now()
       WHERE partition IN (SELECT partition FROM partition_checkpoints WHERE ${free} AND partition < $5
                           ORDER BY partition LIMIT $4 FOR UPDATE SKIP LOCKED)
         AND ${free}
       RETURNING partition, fence, last_id, stream_epoch, earlier_epochs`,
      [ownerId, leaseMs, JSON.stringify(this.ownedPartitions), count, queue.partitions],
    );
    for (const row of taken) {
      this.owned.set(row.partition, {
        fence: row.fence.toString(),
        lastId: row.last_id,
        epoch: row.stream_epoch,
        ...readEarlier(row.earlier_epochs),
      });
      // A crash between commit and trim leaves applied entries behind; drop them now.
      await queue.trim(row.partition, row.last_id, row.stream_epoch).catch(() => undefined);
    }
    if (taken.length > 0) this.options.logger.info({ partitions: taken.map((row) => row.partition) }, 'partitions acquired');
  }

  private async release(partitions: number[]): Promise<void> {
    if (partitions.length === 0) return;
    const held = JSON.stringify(partitions.map((partition) => ({ partition, fence: this.owned.get(partition)!.fence })));
    for (const partition of partitions) this.owned.delete(partition);
    await this.options.db.query(
      `UPDATE partition_checkpoints c SET owner = NULL, lease_until = NULL, updated_at = now()
       FROM jsonb_to_recordset($1::jsonb) AS x(partition int, fence bigint)
       WHERE c.partition = x.partition AND c.fence = x.fence`,
      [held],
    );
    this.options.logger.info({ partitions }, 'partitions released');
  }
}

/**
 * The entry size to plan the next read for: the largest entry just read, or half the previous
 * estimate when entries got smaller (one large request does not slow reads down for long).
 */
function nextEventsPerEntry(previous: number, entries: readonly QueueEntry[]): number {
  if (entries.length === 0) return previous;
  const largest = entries.reduce((most, entry) => Math.max(most, entry.events.length), 1);
  return Math.max(largest, Math.floor(previous / 2));
}

/**
 * Counts a commit's groups without building a key per event: tenant → feature → the quarter hour
 * last seen. A pair seen again in another quarter counts again, so the count may run over the true
 * number of groups, never under it — the bound holds.
 */
class GroupCount {
  private readonly seen = new Map<string, Map<string, number>>();
  size = 0;

  private has(event: QueueEntry['events'][number]): boolean {
    return this.seen.get(event.tenant)?.get(event.feature) === quarterOf(event.timestamp);
  }

  add(events: QueueEntry['events']): void {
    for (const event of events) {
      if (this.has(event)) continue;
      let features = this.seen.get(event.tenant);
      if (!features) this.seen.set(event.tenant, (features = new Map()));
      features.set(event.feature, quarterOf(event.timestamp));
      this.size++;
    }
  }

  /** Groups `events` would add. */
  added(events: QueueEntry['events']): number {
    const fresh = new GroupCount();
    for (const event of events) if (!this.has(event)) fresh.add([event]);
    return fresh.size;
  }
}

/**
 * Cuts one read into consecutive commits of at most `maxKeys` distinct (tenant, feature, quarter
 * hour) groups — the unit the rollups hold — never splitting an entry. Each slice of a partition
 * is read after the slice before it, so every commit compare-and-sets on its own predecessor.
 */
export function splitByKeys(batches: readonly PartitionBatch[], maxKeys: number): AggregatorEvent[] {
  const events: AggregatorEvent[] = [];
  let current = new Map<number, PartitionBatch>();
  let groups = new GroupCount();
  const close = () => {
    if (current.size > 0) events.push({ batches: [...current.values()] });
    current = new Map();
    groups = new GroupCount();
  };
  for (const batch of batches) {
    let afterId = batch.afterId;
    for (const entry of batch.entries) {
      // An entry adds at most one group per event: only near the bound is it worth counting exactly.
      if (groups.size > 0 && groups.size + entry.events.length > maxKeys && groups.size + groups.added(entry.events) > maxKeys) close();
      groups.add(entry.events);
      let slice = current.get(batch.partition);
      if (!slice) {
        slice = { partition: batch.partition, fence: batch.fence, afterId, entries: [] };
        current.set(batch.partition, slice);
      }
      slice.entries.push(entry);
      afterId = entry.id;
    }
  }
  close();
  return events;
}
