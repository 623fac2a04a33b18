import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../../shared/platform/db.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import type { EventQueue } from '../../shared/platform/queue/types.ts';
import { type AggregatorEvent, type AggregatorResult, StaleOwnerError } from './handler.ts';

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
  onApplied?: (result: AggregatorResult) => void;
}

interface Owned {
  fence: string;
  lastId: string;
  trimmedId?: string;
}

const READ_BLOCK_MS = 250;
const MAX_BACKOFF_MS = 5_000;
const TRIM_INTERVAL_MS = 1_000;

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

  constructor(private readonly options: RunnerOptions) {}

  get ownedPartitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  async start(): Promise<void> {
    const { db, queue } = this.options;
    await db.query(
      'INSERT INTO partition_checkpoints (partition) SELECT generate_series(0, $1::int - 1) ON CONFLICT DO NOTHING',
      [queue.partitions],
    );
    await this.maintainLeases().catch((error: Error) => this.options.logger.warn({ err: error.message }, 'lease maintenance failed'));
    const lanes = Array.from({ length: this.options.lanes ?? 1 }, (_, lane) => this.lane(lane));
    this.loop = Promise.all([this.leases(), ...lanes]).then(() => undefined);
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
    while (!this.stopping) {
      const partitions = this.ownedPartitions.filter((partition) => partition % lanes === lane);
      if (partitions.length === 0) {
        await sleep(Math.min(250, this.options.leaseMs / 4));
        continue;
      }
      try {
        await this.round(lane, partitions);
        backoffMs = 0;
      } catch (error) {
        if (error instanceof StaleOwnerError) {
          for (const partition of error.partitions) this.owned.delete(partition);
          this.options.logger.warn({ partitions: error.partitions }, 'partitions taken over by another aggregator');
          continue;
        }
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(100, backoffMs * 2));
        this.options.logger.warn({ err: (error as Error).message, retryInMs: backoffMs, lane }, 'aggregator round failed; retrying');
        await sleep(backoffMs);
      }
    }
  }

  /** Reads after the last applied ids, applies, then trims what is committed (at most every TRIM_INTERVAL_MS). */
  private async round(lane: number, partitions: number[]): Promise<void> {
    const { queue, apply } = this.options;
    const positions = partitions.flatMap((partition) => {
      const owned = this.owned.get(partition);
      return owned ? [{ partition, afterId: owned.lastId }] : [];
    });
    const read = await queue.read(positions, this.options.batchSize, READ_BLOCK_MS, lane);
    const batches = read
      .filter((found) => this.owned.has(found.partition))
      .map((found) => ({ partition: found.partition, fence: this.owned.get(found.partition)!.fence, entries: found.entries }));
    if (batches.length > 0) {
      const result = await apply({ batches });
      for (const [partition, lastId] of Object.entries(result.lastIds)) {
        const owned = this.owned.get(Number(partition));
        if (owned) owned.lastId = lastId;
      }
      this.options.onApplied?.(result);
    }
    await this.trimApplied(lane, partitions, batches.length === 0);
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
      await this.options.queue.trim(partition, owned.lastId).then(
        () => (owned.trimmedId = owned.lastId),
        (error: Error) => this.options.logger.warn({ err: error.message, partition }, 'stream trim failed'),
      );
    }
  }

  private async maintainLeases(): Promise<void> {
    const { db, ownerId, leaseMs, queue } = this.options;
    if (this.owned.size > 0) {
      const held = JSON.stringify([...this.owned].map(([partition, owned]) => ({ partition, fence: owned.fence })));
      const renewed = await db.query<{ partition: number }>(
        `UPDATE partition_checkpoints c SET lease_until = now() + $2::int * interval '1 millisecond'
         FROM jsonb_to_recordset($1::jsonb) AS x(partition int, fence bigint)
         WHERE c.partition = x.partition AND c.fence = x.fence AND c.owner = $3
         RETURNING c.partition`,
        [held, leaseMs, ownerId],
      );
      const kept = new Set(renewed.map((row) => row.partition));
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
    const taken = await db.query<{ partition: number; fence: bigint; last_id: string }>(
      `UPDATE partition_checkpoints SET owner = $1, fence = fence + 1,
         lease_until = now() + $2::int * interval '1 millisecond', updated_at = now()
       WHERE partition IN (SELECT partition FROM partition_checkpoints WHERE ${free}
                           ORDER BY partition LIMIT $4 FOR UPDATE SKIP LOCKED)
         AND ${free}
       RETURNING partition, fence, last_id`,
      [ownerId, leaseMs, JSON.stringify(this.ownedPartitions), count],
    );
    for (const row of taken) {
      this.owned.set(row.partition, { fence: row.fence.toString(), lastId: row.last_id });
      // A crash between commit and trim leaves applied entries behind; drop them now.
      await queue.trim(row.partition, row.last_id).catch(() => undefined);
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
