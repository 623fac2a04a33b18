import { alertsDue, createCrossingAlerts } from '../../shared/domain/alerts.ts';
import type { Db, Queryable } from '../../shared/platform/db.ts';
import { periodStartDay } from '../../shared/domain/periods.ts';
import { INT8_MAX } from '../../shared/domain/usage.ts';
import { changesPayload, nameHash, USAGE_CHANNEL } from '../../shared/domain/usage-changes.ts';
import type { QueueEntry } from '../../shared/platform/queue/types.ts';
import { type GroupColumns, groupByQuarterHour, groupColumns, nameArray, valueArray } from './rollup.ts';

/** The entries read from one partition, after `afterId`, by the owner holding `fence`. */
export interface PartitionBatch {
  partition: number;
  fence: string;
  /** The checkpoint the entries were read after: the commit applies them only if it still stands. */
  afterId: string;
  entries: QueueEntry[];
}

/** What the runner hands the handler: one read round over the partitions it owns. */
export interface AggregatorEvent {
  batches: PartitionBatch[];
}

export interface AggregatorResult {
  events: number;
  /** Last applied stream id per partition: safe to trim up to. */
  lastIds: Record<number, string>;
  /** Oldest receipt time in the batch (epoch ms), for the lag metric. */
  oldestReceivedAt: number;
  /** Thresholds of the alerts this batch created. */
  alertThresholds: number[];
}

export interface AggregatorDeps {
  db: Db;
  defaultQuota: bigint;
  /** Tenants earlier commits found in the tenants table: their rounds skip `createTenants`. */
  knownTenants?: KnownTenants;
  /** A commit renews its partitions' leases by this much, so lease upkeep need not wait for commits. */
  leaseMs?: number;
}

/** A commit by an owner whose fence is no longer current: another aggregator took the partition. */
export class StaleOwnerError extends Error {
  override name = 'StaleOwnerError';
  constructor(readonly partitions: number[]) {
    super(`lost ownership of partitions ${partitions.join(', ')}`);
  }
}

/**
 * The fence is still ours but the checkpoint is no longer the one the batch was read after: an
 * earlier commit went through although its answer never arrived. Nothing was applied; the runner
 * reloads its positions from the database and reads on from there.
 */
export class CheckpointMovedError extends Error {
  override name = 'CheckpointMovedError';
  constructor(readonly partitions: number[]) {
    super(`checkpoints of partitions ${partitions.join(', ')} moved past the batch (an earlier commit's answer was lost)`);
  }
}

const RECORDS = (columns: string) => `jsonb_to_recordset($1::jsonb) AS x(${columns})`;

async function advanceCheckpoints(tx: Queryable, batches: PartitionBatch[], leaseMs: number): Promise<void> {
  const rows = batches.map((batch) => ({
    partition: batch.partition,
    fence: batch.fence,
    after_id: batch.afterId,
    last_id: batch.entries.at(-1)!.id,
    events: batch.entries.reduce((sum, entry) => sum + entry.events.length, 0),
  }));
  // Compare-and-set on the fence and on the checkpoint the batch was read after: a batch whose
  // commit already went through (answer lost, round retried) finds the checkpoint moved and is not
  // applied again. Locks each checkpoint row: a concurrent takeover waits for this commit.
  const advanced = await tx.query<{ partition: number }>(
    `UPDATE partition_checkpoints c
     SET last_id = x.last_id, applied_events = c.applied_events + x.events, updated_at = now(),
         lease_until = CASE WHEN $2::int > 0 THEN now() + $2::int * interval '1 millisecond' ELSE c.lease_until END
     FROM ${RECORDS('partition int, fence bigint, after_id text, last_id text, events bigint')}
     WHERE c.partition = x.partition AND c.fence = x.fence AND c.last_id = x.after_id
     RETURNING c.partition`,
    [JSON.stringify(rows), leaseMs],
  );
  if (advanced.length === rows.length) return;
  const kept = new Set(advanced.map((row) => row.partition));
  const missed = rows.filter((row) => !kept.has(row.partition));
  const current = await tx.query<{ partition: number; fence: bigint }>(
    'SELECT partition, fence FROM partition_checkpoints WHERE partition = ANY (SELECT value::int FROM jsonb_array_elements_text($1::jsonb))',
    [JSON.stringify(missed.map((row) => row.partition))],
  );
  const fences = new Map(current.map((row) => [row.partition, row.fence.toString()]));
  const stale = missed.filter((row) => fences.get(row.partition) !== row.fence).map((row) => row.partition);
  // Either way the transaction rolls back whole: nothing of this batch is applied.
  if (stale.length > 0) throw new StaleOwnerError(stale);
  throw new CheckpointMovedError(missed.map((row) => row.partition));
}

interface TenantSettings {
  timeZone: string;
  quota: bigint;
  thresholds: number[];
}

const CREATE_TENANTS = `INSERT INTO tenants (name, monthly_quota)
   SELECT value, $2::bigint FROM jsonb_array_elements_text($1::jsonb) ORDER BY value
   ON CONFLICT (name) DO NOTHING`;

/**
 * Creates unknown tenants with the default quota, in a short transaction of its own before the commit
 * (idempotent, so a lost answer or a failed round leaves nothing wrong behind). Inside the rollup
 * commit, a new tenant would hold its tenant-count shard row until that commit ends, and the other
 * lane's commit creating a tenant in the same shard would wait for it.
 */
export async function createTenants(db: Queryable, tenants: string[], defaultQuota: bigint): Promise<void> {
  if (tenants.length > 0) await db.query(CREATE_TENANTS, [JSON.stringify(tenants), defaultQuota.toString()]);
}

/**
 * The tenants this aggregator's commits have found in the tenants table, as 32-bit hashes of their
 * names (4 MB at the default 200,000; past that it starts over). A round creates only the others
 * before its commit: an existing tenant costs a conflicting insert, ~130 µs of a contended round
 * each. A stale entry (a tenant deleted since) or a hash shared with a new tenant is harmless: the
 * commit creates any tenant it does not find (`tenantSettings`).
 */
export class KnownTenants {
  private readonly hashes = new Set<number>();
  constructor(private readonly max = 200_000) {}

  /** The tenants no earlier commit found; `hashes[i]` is `tenants[i]`'s `nameHash`. */
  unknown(tenants: readonly string[], hashes: readonly number[]): string[] {
    return tenants.filter((_, index) => !this.hashes.has(hashes[index]!));
  }

  /** Remembers the tenants of these name hashes, found by a commit. */
  add(hashes: readonly number[]): void {
    if (this.hashes.size + hashes.length > this.max) this.hashes.clear();
    for (const hash of hashes) this.hashes.add(hash);
  }
}

/**
 * Returns the batch's tenants' settings, read FOR SHARE so that a concurrent quota change waits for
 * this commit (or this batch for it). A tenant deleted since `createTenants` is created again here.
 */
async function tenantSettings(tx: Queryable, tenants: string[], defaultQuota: bigint): Promise<Map<string, TenantSettings>> {
  const read = (names: string[]) =>
    tx.query<{ name: string; time_zone: string; monthly_quota: bigint; thresholds: number[] }>(
      `SELECT name, time_zone, monthly_quota, thresholds FROM tenants
       WHERE name IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) ORDER BY name FOR SHARE`,
      [JSON.stringify(names)],
    );
  const rows = await read(tenants);
  if (rows.length < tenants.length) {
    const found = new Set(rows.map((row) => row.name));
    const missing = tenants.filter((tenant) => !found.has(tenant));
    await tx.query(CREATE_TENANTS, [JSON.stringify(missing), defaultQuota.toString()]);
    rows.push(...(await read(missing)));
  }
  return new Map(rows.map((row) => [row.name, { timeZone: row.time_zone, quota: row.monthly_quota, thresholds: row.thresholds }]));
}

/**
 * A rollup's tokens plus a commit's, held at the bigint maximum instead of overflowing: ingest takes
 * up to 10^12 tokens an event, so ~9.2 million such events reach 2^63 − 1 in one period, and an
 * overflow would fail the lane's commit at every retry, leaving every tenant on its partitions
 * uncounted. Integer arithmetic only: the right side cannot overflow as a commit adds ≥ 0.
 */
const SATURATING_SUM = `CASE WHEN u.tokens > ${INT8_MAX} - excluded.tokens THEN ${INT8_MAX} ELSE u.tokens + excluded.tokens END`;

/**
 * Upserts the rollups from the round's quarter-hour groups, summed here into the tenants' hours, their
 * local days and their periods; each insert in key order, so that row locks are taken in one order
 * across transactions. Returns, with its total before this commit, each touched period that may have
 * crossed a threshold here: it reached its tenant's lowest one (`floors.lowest`, the fewest tokens
 * that reach one) and had not reached the highest before (`floors.highest`).
 */
async function upsertRollups(
  tx: Queryable,
  columns: GroupColumns,
  floors: { tenants: string; lowest: string; highest: string },
): Promise<{ tenant: string; period_start: string; tokens: bigint; before: bigint; now: Date }[]> {
  return tx.query(
    `WITH g AS MATERIALIZED (
       SELECT * FROM unnest($1::text::text[], $2::text::text[], $3::text::int[], $4::text::date[], $5::text::int8[],
                            $6::text::int8[], $7::text::int8[])
         AS g(tenant, feature, hour, day, tokens, events, last_ms)
     ), hourly AS (
       INSERT INTO usage_hourly AS u (tenant, feature, hour, tokens, events)
       SELECT tenant, feature, to_timestamp(hour * 900.0), sum(tokens), sum(events)
       FROM g GROUP BY tenant, hour, feature ORDER BY tenant, hour, feature
       ON CONFLICT (tenant, hour, feature) DO UPDATE SET tokens = ${SATURATING_SUM}, events = u.events + excluded.events
     ), daily AS (
       INSERT INTO usage_daily AS u (tenant, feature, day, tokens, events)
       SELECT tenant, feature, day, sum(tokens), sum(events)
       FROM g GROUP BY tenant, day, feature ORDER BY tenant, day, feature
       ON CONFLICT (tenant, day, feature) DO UPDATE SET tokens = ${SATURATING_SUM}, events = u.events + excluded.events
     ), added AS MATERIALIZED (
       SELECT tenant, day - extract(day FROM day)::int + 1 AS period_start, sum(tokens) AS tokens, sum(events) AS events,
              max(last_ms) AS last_ms
       FROM g GROUP BY tenant, 2
     ), periods AS (
       INSERT INTO usage_periods AS u (tenant, period_start, tokens, events, last_event_at)
       SELECT tenant, period_start, tokens, events, to_timestamp(last_ms / 1000.0) FROM added ORDER BY tenant, period_start
       ON CONFLICT (tenant, period_start) DO UPDATE SET tokens = ${SATURATING_SUM}, events = u.events + excluded.events,
         last_event_at = greatest(u.last_event_at, excluded.last_event_at)
       RETURNING u.tenant, u.period_start, u.tokens
     )
     SELECT p.tenant, p.period_start, p.tokens, (p.tokens - a.tokens)::int8 AS before, now() AS now
     FROM periods p
     JOIN added a ON a.tenant = p.tenant AND a.period_start = p.period_start
     JOIN unnest($8::text::text[], $9::text::int8[], $10::text::int8[]) AS f(tenant, lowest, highest) ON f.tenant = p.tenant
     WHERE p.tokens >= f.lowest AND p.tokens - a.tokens < f.highest`,
    [
      columns.tenant,
      columns.feature,
      columns.hour,
      columns.day,
      columns.tokens,
      columns.events,
      columns.lastAt,
      floors.tenants,
      floors.lowest,
      floors.highest,
    ],
  );
}

/**
 * Per tenant with thresholds, the fewest tokens that reach its lowest and its highest threshold
 * (`crossedThresholds`: used × 100 ≥ threshold × quota), as array literals for the rollup statement.
 */
function alertFloors(settings: Map<string, TenantSettings>): { tenants: string; lowest: string; highest: string } {
  const tenants: string[] = [];
  const lowest: bigint[] = [];
  const highest: bigint[] = [];
  const floor = (threshold: number, quota: bigint): bigint => {
    const tokens = BigInt(threshold) * quota;
    return tokens <= 0n ? 0n : (tokens + 99n) / 100n;
  };
  for (const [tenant, { quota, thresholds }] of settings) {
    if (thresholds.length === 0) continue;
    tenants.push(tenant);
    lowest.push(floor(Math.min(...thresholds), quota));
    highest.push(floor(Math.max(...thresholds), quota));
  }
  return { tenants: nameArray(tenants), lowest: valueArray(lowest), highest: valueArray(highest) };
}

/**
 * Applies one read round: rollups and checkpoints in one transaction, fenced so that a stale owner's
 * commit is rolled back whole. A batch is applied exactly once or not at all.
 */
export async function applyBatch(deps: AggregatorDeps, event: AggregatorEvent): Promise<AggregatorResult> {
  const batches = event.batches.filter((batch) => batch.entries.length > 0);
  const entries = batches.flatMap((batch) => batch.entries);
  const lastIds: Record<number, string> = {};
  for (const batch of batches) lastIds[batch.partition] = batch.entries.at(-1)!.id;
  const oldestReceivedAt = entries.reduce((oldest, entry) => Math.min(oldest, entry.receivedAt), Number.POSITIVE_INFINITY);
  if (entries.length === 0) return { events: 0, lastIds, oldestReceivedAt: Date.now(), alertThresholds: [] };
  const grouped = groupByQuarterHour(entries);
  // Each name hashed once a round, for the known tenants and the change notification alike; the
  // notification's payload is made here, not while the transaction holds its locks.
  const hashes = grouped.tenants.map(nameHash);
  const changes = changesPayload(hashes);
  await createTenants(deps.db, deps.knownTenants?.unknown(grouped.tenants, hashes) ?? grouped.tenants, deps.defaultQuota);
  const { events, alertThresholds } = await deps.db.transaction(async (tx) => {
    // The stream is trimmed after this commit, so the commit must be on disk even where the server
    // runs synchronous_commit=off for throughput.
    await tx.query('SET LOCAL synchronous_commit = on');
    await advanceCheckpoints(tx, batches, deps.leaseMs ?? 0);
    const settings = await tenantSettings(tx, grouped.tenants, deps.defaultQuota);
    const columns = groupColumns(grouped.groups, (tenant) => settings.get(tenant)?.timeZone ?? 'UTC');
    const totals = await upsertRollups(tx, columns, alertFloors(settings));
    // Delivered when this commit is: the usage functions read these tenants afresh (usage-changes.ts).
    await tx.query('SELECT pg_notify($1, $2)', [USAGE_CHANNEL, changes]);
    // Late events counted into a past period never alert. "Current" by the database clock, the one
    // the usage and tenants reads use too. Only thresholds this commit took the total across are
    // alerted: the ones it had reached before have their alerts already. So a crossing in a period
    // that has not begun yet (events up to 5 minutes ahead) is alerted now, due when it begins.
    const current = totals.flatMap((total) => {
      const tenant = settings.get(total.tenant);
      if (!tenant) return [];
      const currentStart = periodStartDay(tenant.timeZone, new Date(total.now).getTime());
      if (total.period_start < currentStart) return [];
      return [
        {
          tenant: total.tenant,
          periodStart: total.period_start,
          used: total.tokens,
          before: total.before,
          quota: tenant.quota,
          thresholds: tenant.thresholds,
          ...alertsDue(tenant.timeZone, total.period_start, currentStart),
        },
      ];
    });
    return { events: grouped.events, alertThresholds: await createCrossingAlerts(tx, current) };
  });
  deps.knownTenants?.add(hashes);
  return { events, lastIds, oldestReceivedAt, alertThresholds };
}
