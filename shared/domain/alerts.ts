import { and, desc, eq, lt, ne } from 'drizzle-orm';
import type { Queryable } from '../platform/db.ts';
import { orm } from '../platform/orm.ts';
import { alerts } from '../schema.ts';
import { localMidnight } from './periods.ts';
import { percentOf } from './usage.ts';

/** Thresholds (percent of quota) that `used` has reached; exact integer comparison. */
export function crossedThresholds(used: bigint, quota: bigint, thresholds: readonly number[]): number[] {
  return thresholds.filter((threshold) => used * 100n >= BigInt(threshold) * quota);
}

/**
 * When alerts of the period starting `periodStartDay` may be delivered, given the current period's
 * start: at once (nothing) for the current one, at its start for one not begun yet.
 */
export function alertsDue(timeZone: string, periodStartDay: string, currentStartDay: string): Pick<PeriodUsage, 'dueAt'> {
  return periodStartDay > currentStartDay ? { dueAt: new Date(localMidnight(timeZone, periodStartDay)) } : {};
}

export interface PeriodUsage {
  tenant: string;
  periodStart: string;
  used: bigint;
  quota: bigint;
  thresholds: readonly number[];
  /**
   * The period's total before this commit: thresholds it had reached already are not crossed here.
   * Each has a live alert (the commit that crossed it created one, and a quota or threshold change
   * that leaves usage over one fires it in its own transaction), so there is nothing to create.
   */
  before?: bigint;
  /**
   * When the alerts may be delivered, for a period that has not begun by the database clock: events
   * up to 5 minutes ahead (a client's timestamp, or an ingest host whose clock runs ahead) count into
   * the next period, and a crossing they make is judged when they are counted — later commits see
   * it as reached already — and sent when that period begins. Unset: at once.
   */
  dueAt?: Date;
}

/**
 * Creates one alert per threshold reached in the period, unless a live alert for it exists (the
 * partial unique index makes that atomic across aggregators). Returns the thresholds of those created.
 */
export async function createCrossingAlerts(tx: Queryable, usages: readonly PeriodUsage[]): Promise<number[]> {
  const rows = usages.flatMap((usage) => {
    const reached = usage.before === undefined ? [] : crossedThresholds(usage.before, usage.quota, usage.thresholds);
    return crossedThresholds(usage.used, usage.quota, usage.thresholds)
      .filter((threshold) => !reached.includes(threshold))
      .map((threshold) => ({
        tenant: usage.tenant,
        period_start: usage.periodStart,
        threshold,
        used_tokens: usage.used.toString(),
        quota: usage.quota.toString(),
        due_at: usage.dueAt?.toISOString() ?? null,
      }));
  });
  if (rows.length === 0) return [];
  const created = await tx.query<{ threshold: number }>(
    `INSERT INTO alerts (tenant, period_start, threshold, used_tokens, quota, next_attempt_at)
     SELECT tenant, period_start, threshold, used_tokens, quota, coalesce(due_at, now())
     FROM jsonb_to_recordset($1::jsonb)
       AS x(tenant text, period_start date, threshold int, used_tokens bigint, quota bigint, due_at timestamptz)
     ORDER BY tenant, threshold
     ON CONFLICT (tenant, period_start, threshold) WHERE rearmed_at IS NULL DO NOTHING
     RETURNING threshold`,
    [JSON.stringify(rows)],
  );
  return created.map((row) => row.threshold);
}

/**
 * After a quota or threshold change: re-arms the live alerts whose threshold usage is now under
 * (configured or not: one taken off the list and put back later must alert on its next crossing),
 * and fires configured thresholds usage is now over. Taking a threshold off the list alone re-arms
 * nothing, so putting it back does not alert again while usage never fell under it (SPEC: only a
 * quota change that takes usage back under a threshold re-arms it). Runs in the transaction that
 * changed the tenant, which holds the tenant row lock the aggregator also takes.
 */
export async function reevaluateAlerts(tx: Queryable, usage: PeriodUsage): Promise<{ rearmed: number; created: number }> {
  // One not yet delivered (a retry pending, or a period not begun) is not sent any more: usage is no
  // longer over its threshold. It is marked failed, saying why.
  const rearmed = await tx.query(
    `UPDATE alerts SET rearmed_at = now(),
       status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,
       last_error = CASE WHEN status = 'pending' THEN 'not sent: re-armed before delivery (usage fell back under the threshold)'
                         ELSE last_error END
     WHERE tenant = $1 AND period_start = $2::date AND rearmed_at IS NULL
       AND $3::numeric * 100 < $4::numeric * threshold
     RETURNING id`,
    [usage.tenant, usage.periodStart, usage.used.toString(), usage.quota.toString()],
  );
  const created = await createCrossingAlerts(tx, [usage]);
  return { rearmed: rearmed.length, created: created.length };
}

export interface AlertView {
  id: string;
  threshold: number;
  period: string;
  usedTokens: bigint;
  quota: bigint;
  percent: number;
  status: string;
  createdAt: string;
  deliveredAt: string | null;
  attempts: number;
  lastError: string | null;
  rearmedAt: string | null;
}

type AlertRow = typeof alerts.$inferSelect;

function alertView(row: AlertRow): AlertView {
  return {
    id: row.id.toString(),
    threshold: row.threshold,
    period: row.periodStart.slice(0, 7),
    usedTokens: row.usedTokens,
    quota: row.quota,
    percent: percentOf(row.usedTokens, row.quota),
    status: row.status,
    createdAt: row.createdAt.toISOString(),
    deliveredAt: row.deliveredAt?.toISOString() ?? null,
    attempts: row.attempts,
    lastError: row.lastError,
    rearmedAt: row.rearmedAt?.toISOString() ?? null,
  };
}

/**
 * A tenant's alerts, newest first (ids grow with creation), `limit` at a time; `before` (an alert id,
 * the previous page's last) pages further back at the same cost however deep.
 */
export async function listAlerts(db: Queryable, tenant: string, options: { limit?: number; before?: bigint } = {}): Promise<AlertView[]> {
  const rows = await orm(db)
    .select()
    .from(alerts)
    .where(options.before === undefined ? eq(alerts.tenant, tenant) : and(eq(alerts.tenant, tenant), lt(alerts.id, options.before)))
    .orderBy(desc(alerts.id))
    .limit(options.limit ?? 100);
  return rows.map(alertView);
}

export interface AlertLogQuery {
  /** Only alerts not (yet) delivered: pending, failed or with no webhook. */
  undelivered?: boolean;
  /** Alerts older than this id (the next page's cursor). */
  before?: bigint;
  limit?: number;
}

/**
 * Every tenant's alerts, newest first, a page at a time. Ids grow with creation, so the primary key
 * is the order and a cursor `before` keeps every page the same cost however deep.
 */
export async function listAlertLog(
  db: Queryable,
  query: AlertLogQuery = {},
): Promise<{ alerts: (AlertView & { tenant: string })[]; next: bigint | undefined }> {
  const limit = query.limit ?? 50;
  const rows = await orm(db)
    .select()
    .from(alerts)
    .where(
      and(
        query.before === undefined ? undefined : lt(alerts.id, query.before),
        query.undelivered ? ne(alerts.status, 'delivered') : undefined,
      ),
    )
    .orderBy(desc(alerts.id))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  return {
    alerts: page.map((row) => ({ ...alertView(row), tenant: row.tenant })),
    next: rows.length > limit ? page.at(-1)!.id : undefined,
  };
}
