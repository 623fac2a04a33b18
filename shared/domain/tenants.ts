import { alertsDue, reevaluateAlerts } from './alerts.ts';
import type { Queryable } from '../platform/db.ts';
import { periodOf } from './periods.ts';
import { percentOf } from './usage.ts';
import { changesPayload, nameHash, USAGE_CHANNEL } from './usage-changes.ts';

export interface TenantPatch {
  monthlyQuota?: bigint;
  slackWebhookUrl?: string | null;
  thresholds?: number[];
  timeZone?: string;
}

export type TenantStatus = 'ok' | 'warning' | 'over';

export interface TenantView {
  tenant: string;
  monthlyQuota: bigint;
  timeZone: string;
  thresholds: number[];
  slackWebhookUrl: string | null;
  usage: {
    period: { start: string; end: string };
    tokens: bigint;
    percent: number;
    remaining: bigint;
    status: TenantStatus;
    lastEventAt: string | null;
  };
  createdAt: string;
  updatedAt: string;
}

interface TenantRow {
  name: string;
  monthly_quota: bigint;
  time_zone: string;
  thresholds: number[];
  slack_webhook_url: string | null;
  created_at: Date;
  updated_at: Date;
  tokens: bigint | null;
  last_event_at: Date | null;
  /** The database clock: the one clock that says which period is current (docs/reliability.md). */
  now: Date;
}

/** Webhook URLs carry a secret path; views show only the host and the last characters. */
export function maskWebhookUrl(url: string | null): string | null {
  if (!url) return null;
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}/…${url.slice(-4)}`;
  } catch {
    return '…';
  }
}

export function statusOf(percent: number): TenantStatus {
  return percent >= 100 ? 'over' : percent >= 80 ? 'warning' : 'ok';
}

function toView(row: TenantRow): TenantView {
  const period = periodOf(row.time_zone, new Date(row.now).getTime());
  const tokens = row.tokens ?? 0n;
  const percent = percentOf(tokens, row.monthly_quota);
  return {
    tenant: row.name,
    monthlyQuota: row.monthly_quota,
    timeZone: row.time_zone,
    thresholds: row.thresholds,
    slackWebhookUrl: maskWebhookUrl(row.slack_webhook_url),
    usage: {
      period: { start: period.start.toISOString(), end: period.end.toISOString() },
      tokens,
      percent,
      remaining: row.monthly_quota > tokens ? row.monthly_quota - tokens : 0n,
      status: statusOf(percent),
      lastEventAt: row.last_event_at ? new Date(row.last_event_at).toISOString() : null,
    },
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

// The current period of each tenant, in its own zone, by the database clock.
const TENANT_WITH_USAGE = `
  SELECT t.name, t.monthly_quota, t.time_zone, t.thresholds, t.slack_webhook_url, t.created_at, t.updated_at,
         p.tokens, p.last_event_at, now() AS now
  FROM tenants t
  LEFT JOIN usage_periods p ON p.tenant = t.name
   AND p.period_start = date_trunc('month', now() AT TIME ZONE t.time_zone)::date`;

export async function getTenant(db: Queryable, tenant: string): Promise<TenantView | undefined> {
  const [row] = await db.query<TenantRow>(`${TENANT_WITH_USAGE} WHERE t.name = $1`, [tenant]);
  return row ? toView(row) : undefined;
}

export interface TenantListQuery {
  search?: string;
  sort?: 'name' | 'usage' | 'percent';
  limit?: number;
  offset?: number;
  /** Keyset paging in name order: the tenants after this name (no tenant skipped or repeated as tenants come and go). */
  after?: string;
}

// Each order matches an index of tenant_usage_summary, so a page reads LIMIT + OFFSET index entries.
const SUMMARY_ORDER = {
  name: 's.tenant ASC',
  usage: 's.tokens DESC NULLS LAST, s.tenant ASC',
  percent: '(s.tokens::numeric / nullif(s.monthly_quota, 0)) DESC NULLS LAST, s.tenant ASC',
} as const;

/**
 * Moves summary rows whose period has ended into the tenant's current period (the triggers move a
 * row only when usage arrives). Rows another transaction holds are skipped: that writer moves them.
 * Between month ends the period_end index finds nothing, so this costs one index probe.
 */
export async function rollOverUsageSummary(db: Queryable): Promise<number> {
  const rows = await db.query(
    `WITH due AS (
       SELECT tenant, time_zone, date_trunc('month', now() AT TIME ZONE time_zone)::date AS start_day
       FROM tenant_usage_summary WHERE period_end <= now() ORDER BY tenant FOR UPDATE SKIP LOCKED)
     UPDATE tenant_usage_summary s SET
       period_start = due.start_day,
       period_end = (due.start_day + interval '1 month')::timestamp AT TIME ZONE due.time_zone,
       tokens = coalesce(p.tokens, 0),
       last_event_at = p.last_event_at
     FROM due LEFT JOIN usage_periods p ON p.tenant = due.tenant AND p.period_start = due.start_day
     WHERE s.tenant = due.tenant
     RETURNING s.tenant`,
  );
  return rows.length;
}

/** The statements a page of the tenant list runs, exposed so a test can check their plans. */
export function tenantPageQueries(query: TenantListQuery = {}): {
  page: { text: string; params: unknown[] };
  count: { text: string; params: unknown[] };
} {
  const order = SUMMARY_ORDER[query.sort ?? 'name'];
  const search = query.search ? [`%${query.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`] : [];
  const filter = (param: number): string => (search.length > 0 ? `WHERE s.tenant ILIKE $${param}` : '');
  const after = query.after === undefined ? [] : [query.after];
  const pageFilter = [search.length > 0 ? 's.tenant ILIKE $3' : '', after.length > 0 ? `s.tenant > $${3 + search.length}` : '']
    .filter(Boolean)
    .join(' AND ');
  return {
    page: {
      text: `SELECT t.name, t.monthly_quota, t.time_zone, t.thresholds, t.slack_webhook_url, t.created_at, t.updated_at,
                    s.tokens, s.last_event_at, now() AS now
             FROM (SELECT * FROM tenant_usage_summary s ${pageFilter ? `WHERE ${pageFilter}` : ''} ORDER BY ${order} LIMIT $1 OFFSET $2) s
             JOIN tenants t ON t.name = s.tenant
             ORDER BY ${order}`,
      params: [query.limit ?? 100, query.offset ?? 0, ...search, ...after],
    },
    // Unfiltered, the total is the maintained per-shard count; a name filter has to look at the names.
    count:
      search.length > 0
        ? { text: `SELECT count(*) AS total FROM tenant_usage_summary s ${filter(1)}`, params: search }
        : { text: 'SELECT coalesce(sum(tenants), 0)::bigint AS total FROM tenant_counts', params: [] },
  };
}

/**
 * A page of tenants with current usage, read from the maintained summary: the page costs its own
 * rows, not every tenant's usage, at any sort (tests/tenant-list-scale.test.ts seeds 100,000).
 */
export async function listTenants(
  db: Queryable,
  query: TenantListQuery = {},
): Promise<{ tenants: TenantView[]; total: number; next: string | null }> {
  await rollOverUsageSummary(db);
  const { page, count } = tenantPageQueries(query);
  // One after the other: run together, the two would take a second pool connection, and opening one
  // (a server process, the driver's type lookup) costs a fresh function ~20 ms against ~0.2 ms saved.
  const rows = await db.query<TenantRow>(page.text, page.params);
  const [counted] = await db.query<{ total: bigint }>(count.text, count.params);
  const tenants = rows.map(toView);
  // In name order a full page names where the next one starts; other orders move as usage does.
  const next = (query.sort ?? 'name') === 'name' && tenants.length === (query.limit ?? 100) ? tenants.at(-1)!.tenant : null;
  return { tenants, total: Number(counted?.total ?? 0), next };
}

/**
 * Creates or updates a tenant (fields left out keep their value, or their default on create), then
 * re-evaluates its alerts for the current period in the same transaction.
 */
export async function upsertTenant(
  db: { transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> },
  tenant: string,
  patch: TenantPatch,
  defaultQuota: bigint,
): Promise<{ created: boolean; rearmed: number; alertsCreated: number }> {
  const thresholds = patch.thresholds ? JSON.stringify([...new Set(patch.thresholds)].sort((a, b) => a - b)) : null;
  return db.transaction(async (tx) => {
    // The upsert holds the tenant row lock until commit; the aggregator reads quotas FOR SHARE, so
    // a quota change and a rollup never judge a crossing against each other's stale state.
    const [row] = await tx.query<{ created: boolean; monthly_quota: bigint; time_zone: string; thresholds: number[]; now: Date }>(
      `INSERT INTO tenants AS t (name, monthly_quota, time_zone, slack_webhook_url, thresholds)
       VALUES ($1, coalesce($2::bigint, $6::bigint), coalesce($3::text, 'UTC'), $4::text,
               coalesce((SELECT array_agg(value::int) FROM jsonb_array_elements_text($5::jsonb)), '{80,100}'::int[]))
       ON CONFLICT (name) DO UPDATE SET
         monthly_quota = coalesce($2::bigint, t.monthly_quota),
         time_zone = coalesce($3::text, t.time_zone),
         slack_webhook_url = CASE WHEN $7::boolean THEN $4::text ELSE t.slack_webhook_url END,
         thresholds = coalesce((SELECT array_agg(value::int) FROM jsonb_array_elements_text($5::jsonb)), t.thresholds),
         updated_at = now()
       RETURNING (xmax = 0) AS created, monthly_quota, time_zone, thresholds, now() AS now`,
      [
        tenant,
        patch.monthlyQuota?.toString() ?? null,
        patch.timeZone ?? null,
        patch.slackWebhookUrl ?? null,
        thresholds,
        defaultQuota.toString(),
        patch.slackWebhookUrl !== undefined,
      ],
    );
    // The usage functions' cached answers of this tenant carry its quota, zone and thresholds: like a
    // commit's, this change ends them when it commits.
    await tx.query('SELECT pg_notify($1, $2)', [USAGE_CHANNEL, changesPayload([nameHash(tenant)])]);
    const { startDay } = periodOf(row!.time_zone, new Date(row!.now).getTime());
    // The current period, and the next one when events up to 5 minutes ahead have begun it: its
    // alerts are judged now too, due when it begins (createCrossingAlerts).
    const periods = await tx.query<{ period_start: string; tokens: bigint }>(
      'SELECT period_start, tokens FROM usage_periods WHERE tenant = $1 AND period_start >= $2::date ORDER BY period_start',
      [tenant, startDay],
    );
    if (periods[0]?.period_start !== startDay) periods.unshift({ period_start: startDay, tokens: 0n });
    let rearmed = 0;
    let created = 0;
    for (const period of periods) {
      const outcome = await reevaluateAlerts(tx, {
        tenant,
        periodStart: period.period_start,
        used: period.tokens,
        quota: row!.monthly_quota,
        thresholds: row!.thresholds,
        ...alertsDue(row!.time_zone, period.period_start, startDay),
      });
      rearmed += outcome.rearmed;
      created += outcome.created;
    }
    return { created: row!.created, rearmed, alertsCreated: created };
  });
}
