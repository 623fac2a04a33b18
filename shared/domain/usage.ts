import type { Queryable } from '../platform/db.ts';
import { addCalendar, localDay, localHourStarts, localMidnight } from './periods.ts';
import { changedBuckets, tenantBucket } from './usage-changes.ts';

/**
 * The largest token count a rollup holds (PostgreSQL bigint): the aggregator's sums stop there
 * rather than overflow (functions/aggregator/apply.ts), and reads summing several rollups cap their
 * sums at it too, so a saturated tenant still reads as 200, never as an out-of-range error.
 */
export const INT8_MAX = '9223372036854775807';
const INT8_MAX_BIGINT = BigInt(INT8_MAX);
/**
 * A SQL sum of bigint rollups (numeric) capped at INT8_MAX, as bigint; NULL over no rows, as sum()
 * is (LEAST ignores a NULL argument, so `least(sum(x), max)` read an empty sum as INT8_MAX).
 */
const cappedSum = (column: string): string => `(CASE WHEN sum(${column}) > ${INT8_MAX} THEN ${INT8_MAX} ELSE sum(${column}) END)::bigint`;

export interface TenantUsage {
  tenant: string;
  timeZone: string;
  quota: bigint;
  tokens: bigint;
  periodStartDay: string;
  periodStart: Date;
  periodEnd: Date;
  features: { feature: string; tokens: bigint }[];
  /** The forecast's trailing window: its first local day and the tokens counted from it. */
  window: ForecastWindow;
}

export interface ForecastWindow {
  startDay: string;
  tokens: bigint;
}

export interface Forecast {
  /** The period's total if the trailing rate holds to its end. */
  tokensAtPeriodEnd: bigint;
  /** When the running total reaches the quota at that rate; `now` if it already has; null if not this period. */
  quotaReachedAt: string | null;
}

/** Days in the trailing window the forecast takes its rate from. */
export const FORECAST_DAYS = 7;

/** The forecast window's first day: today and the six before it in the tenant's zone, never before the period start. */
export function forecastWindowStartDay(timeZone: string, periodStartDay: string, now: number): string {
  const weekAgo = addCalendar(localDay(timeZone, now), { days: -(FORECAST_DAYS - 1) });
  return weekAgo > periodStartDay ? weekAgo : periodStartDay;
}

export interface ForecastInput {
  tokens: bigint;
  quota: bigint;
  timeZone: string;
  periodEnd: Date;
  window: ForecastWindow;
  now: number;
}

/**
 * At the current pace: the tokens counted since the window's first local midnight, divided by the
 * time since then, carried on to the period's end. Early in a period the window is shorter (it
 * starts at the period start), so the rate is the period's own from its first day. Exact integers.
 */
export function forecast(input: ForecastInput): Forecast {
  const { tokens, quota, window } = input;
  const windowStart = localMidnight(input.timeZone, window.startDay);
  const end = input.periodEnd.getTime();
  const now = Math.min(input.now, end);
  const elapsed = BigInt(Math.max(0, now - windowStart));
  const remaining = BigInt(end - now);
  // Capped like every sum: a 64-bit integer, whatever the pace.
  const projected = elapsed > 0n ? tokens + (window.tokens * remaining) / elapsed : tokens;
  const tokensAtPeriodEnd = projected > INT8_MAX_BIGINT ? INT8_MAX_BIGINT : projected;
  if (tokens >= quota) return { tokensAtPeriodEnd, quotaReachedAt: new Date(now).toISOString() };
  if (window.tokens <= 0n || elapsed === 0n) return { tokensAtPeriodEnd, quotaReachedAt: null };
  // Ceiling division: the first millisecond at which the projected total is at least the quota.
  const needed = ((quota - tokens) * elapsed + window.tokens - 1n) / window.tokens;
  const reachedAt = now + Number(needed);
  return { tokensAtPeriodEnd, quotaReachedAt: reachedAt < end ? new Date(reachedAt).toISOString() : null };
}

/** Percent of quota with two decimals, computed on exact integers. */
export function percentOf(tokens: bigint, quota: bigint): number {
  if (quota <= 0n) return 0;
  return Number((tokens * 10_000n) / quota) / 100;
}

/**
 * The tenant's current period (or the one starting on `periodStartDay`) in one round trip; the
 * current period is taken from the database clock in the tenant's zone, the same clock the
 * aggregator's period rows are keyed against.
 */
export async function readTenantUsage(db: Queryable, tenant: string, periodStartDay?: string): Promise<TenantUsage | undefined> {
  const [row] = await db.query<{
    monthly_quota: bigint;
    time_zone: string;
    period_start: string;
    tokens: bigint | null;
    window_start: string;
    window_tokens: bigint;
    features: { feature: string; tokens: string }[];
  }>(
    `WITH t AS (
       SELECT name, monthly_quota, time_zone,
              coalesce($2::text, to_char(date_trunc('month', now() AT TIME ZONE time_zone), 'YYYY-MM-DD')) AS period_start,
              to_char(greatest(date_trunc('month', now() AT TIME ZONE time_zone)::date,
                               (now() AT TIME ZONE time_zone)::date - ${FORECAST_DAYS - 1}), 'YYYY-MM-DD') AS window_start,
              (date_trunc('month', now() AT TIME ZONE time_zone) + interval '1 month')::date AS window_end
       FROM tenants WHERE name = $1)
     SELECT t.monthly_quota, t.time_zone, t.period_start, p.tokens, t.window_start,
            coalesce((SELECT ${cappedSum('d.tokens')} FROM usage_daily d
                      WHERE d.tenant = t.name AND d.day >= t.window_start::date AND d.day < t.window_end), 0) AS window_tokens,
            coalesce((SELECT json_agg(json_build_object('feature', f.feature, 'tokens', f.tokens::text)
                                      ORDER BY f.tokens DESC, f.feature)
                      FROM (SELECT d.feature, ${cappedSum('d.tokens')} AS tokens FROM usage_daily d
                            WHERE d.tenant = t.name AND d.day >= t.period_start::date
                              AND d.day < (t.period_start::date + interval '1 month')::date
                            GROUP BY d.feature) f), '[]'::json) AS features
     FROM t LEFT JOIN usage_periods p ON p.tenant = t.name AND p.period_start = t.period_start::date`,
    [tenant, periodStartDay ?? null],
  );
  if (!row) return undefined;
  const features = typeof row.features === 'string' ? (JSON.parse(row.features) as typeof row.features) : row.features;
  return {
    tenant,
    timeZone: row.time_zone,
    quota: row.monthly_quota,
    tokens: row.tokens ?? 0n,
    periodStartDay: row.period_start,
    periodStart: new Date(localMidnight(row.time_zone, row.period_start)),
    periodEnd: new Date(localMidnight(row.time_zone, addCalendar(row.period_start, { months: 1 }))),
    features: features.map((f) => ({ feature: f.feature, tokens: BigInt(f.tokens) })),
    window: { startDay: row.window_start, tokens: row.window_tokens },
  };
}

/** The forecast windows of several tenants' periods in one query (the overview's page). */
export async function readForecastWindows(
  db: Queryable,
  tenants: readonly { tenant: string; timeZone: string; periodStartDay: string }[],
  now: number,
): Promise<Map<string, ForecastWindow>> {
  if (tenants.length === 0) return new Map();
  const starts = tenants.map((t) => forecastWindowStartDay(t.timeZone, t.periodStartDay, now));
  const rows = await db.query<{ tenant: string; tokens: bigint }>(
    `SELECT x.tenant, ${cappedSum('d.tokens')} AS tokens
     FROM jsonb_to_recordset($1::jsonb) AS x(tenant text, day date, until date)
     JOIN usage_daily d ON d.tenant = x.tenant AND d.day >= x.day AND d.day < x.until
     GROUP BY x.tenant`,
    [
      JSON.stringify(
        tenants.map((t, index) => ({ tenant: t.tenant, day: starts[index], until: addCalendar(t.periodStartDay, { months: 1 }) })),
      ),
    ],
  );
  const tokens = new Map(rows.map((row) => [row.tenant, row.tokens]));
  return new Map(tenants.map((t, index) => [t.tenant, { startDay: starts[index]!, tokens: tokens.get(t.tenant) ?? 0n }]));
}

export interface SeriesRequest {
  tenant: string;
  timeZone: string;
  granularity: 'hour' | 'day';
  from: number;
  to: number;
  feature?: string;
}

/** Buckets from `from` to `to` (inclusive of the bucket holding `to`), empty ones filled with 0. */
export async function readSeries(db: Queryable, request: SeriesRequest): Promise<{ start: string; tokens: bigint }[]> {
  const featureFilter = request.feature === undefined ? '' : ' AND feature = $4';
  const points: { start: string; tokens: bigint }[] = [];
  if (request.granularity === 'hour') {
    const { starts, end } = localHourStarts(request.timeZone, request.from, request.to);
    if (starts.length === 0) return points;
    const sums = starts.map(() => 0n);
    // An hourly row written before the tenant's zone last changed may start off its current hours
    // (18:00 UTC for a tenant now in India, whose hours start at :30): it counts in the hour it starts
    // in, the latest start at or before it; one at or after the next hour's start is not in the range.
    const params: unknown[] = [request.tenant, new Date(starts[0]!).toISOString(), new Date(end).toISOString()];
    if (request.feature !== undefined) params.push(request.feature);
    const rows = await db.query<{ hour: Date; tokens: bigint }>(
      `SELECT hour, ${cappedSum('tokens')} AS tokens FROM usage_hourly
       WHERE tenant = $1 AND hour >= $2::timestamptz AND hour < $3::timestamptz${featureFilter} GROUP BY hour ORDER BY hour`,
      params,
    );
    let bucket = 0;
    for (const row of rows) {
      const hour = new Date(row.hour).getTime();
      while (bucket + 1 < starts.length && starts[bucket + 1]! <= hour) bucket++;
      const total = sums[bucket]! + row.tokens;
      sums[bucket] = total > INT8_MAX_BIGINT ? INT8_MAX_BIGINT : total;
    }
    return starts.map((hour, index) => ({ start: new Date(hour).toISOString(), tokens: sums[index]! }));
  }
  const firstDay = localDay(request.timeZone, request.from);
  const lastDay = localDay(request.timeZone, request.to);
  const params: unknown[] = [request.tenant, firstDay, lastDay];
  if (request.feature !== undefined) params.push(request.feature);
  const rows = await db.query<{ day: string; tokens: bigint }>(
    `SELECT day, ${cappedSum('tokens')} AS tokens FROM usage_daily
     WHERE tenant = $1 AND day >= $2::date AND day <= $3::date${featureFilter} GROUP BY day`,
    params,
  );
  const byDay = new Map(rows.map((row) => [row.day, row.tokens]));
  for (let day = firstDay; day <= lastDay; day = addCalendar(day, { days: 1 })) {
    points.push({ start: new Date(localMidnight(request.timeZone, day)).toISOString(), tokens: byDay.get(day) ?? 0n });
  }
  return points;
}

/** The CSV form of a series: a header row, then one row per bucket, oldest first. */
export const SERIES_CSV_HEADER = 'start,tokens';

export function seriesCsv(points: readonly { start: string; tokens: bigint }[]): string {
  return `${SERIES_CSV_HEADER}\r\n${points.map((point) => `${point.start},${point.tokens}\r\n`).join('')}`;
}

export interface CachedUsage {
  usage: TenantUsage | undefined;
  /** When the read this answer comes from started (epoch ms). */
  asOf: number;
  /** The serialised answer, made once per read by whoever needs it first. */
  body?: string;
}

interface Entry {
  readAt: number;
  current: Promise<CachedUsage>;
  refreshing: boolean;
}

/**
 * A tenant's current usage, shared across requests: within `ttlMs` of a read every request gets that
 * read; up to `staleMs` the last answer is served while one background read refreshes it; older than
 * that a request waits for a fresh read. So a hot tenant costs one query per `ttlMs` whatever the
 * request rate, requests never queue behind the database, and `asOf` says how fresh the answer is.
 * A commit that changed a tenant's usage ends its cached answer at once (`changed`), so the next
 * request reads the commit, however long the TTL.
 */
export class UsageCache {
  private readonly entries = new Map<string, Entry>();
  /** The cached tenants of each bucket a change notification can name. */
  private readonly buckets = new Map<number, Set<string>>();

  constructor(
    private readonly db: Queryable,
    private readonly ttlMs: number,
    private readonly staleMs = Math.max(ttlMs * 4, 1_000),
    private readonly maxEntries = 50_000,
  ) {}

  private load(tenant: string): Promise<CachedUsage> {
    const asOf = Date.now();
    return readTenantUsage(this.db, tenant).then((usage) => ({ usage, asOf }));
  }

  private store(tenant: string, entry: Entry): void {
    if (!this.entries.has(tenant)) {
      const bucket = tenantBucket(tenant);
      let tenants = this.buckets.get(bucket);
      if (!tenants) this.buckets.set(bucket, (tenants = new Set()));
      tenants.add(tenant);
    }
    this.entries.set(tenant, entry);
  }

  private drop(tenant: string): void {
    if (!this.entries.delete(tenant)) return;
    const bucket = tenantBucket(tenant);
    const tenants = this.buckets.get(bucket);
    tenants?.delete(tenant);
    if (tenants?.size === 0) this.buckets.delete(bucket);
  }

  /** Forgets every answer (the change notifications were interrupted, so any may be stale). */
  clear(): void {
    this.entries.clear();
    this.buckets.clear();
  }

  /** Forgets the answers of the tenants in the buckets a change notification names. */
  changed(payload: string): void {
    for (const bucket of changedBuckets(payload)) {
      const tenants = this.buckets.get(bucket);
      if (!tenants) continue;
      this.buckets.delete(bucket);
      for (const tenant of tenants) this.entries.delete(tenant);
    }
  }

  read(tenant: string): Promise<CachedUsage> {
    if (this.ttlMs <= 0) return this.load(tenant);
    const now = Date.now();
    const entry = this.entries.get(tenant);
    if (entry && now - entry.readAt < this.ttlMs) return entry.current;
    if (entry && now - entry.readAt < this.staleMs) {
      if (!entry.refreshing) {
        entry.refreshing = true;
        const next = this.load(tenant);
        next.then(
          // Not if a change ended the entry meanwhile: this read may have started before that commit.
          () => this.entries.get(tenant) === entry && this.store(tenant, { readAt: now, current: next, refreshing: false }),
          () => (entry.refreshing = false),
        );
      }
      return entry.current;
    }
    if (this.entries.size >= this.maxEntries) this.clear();
    const current = this.load(tenant);
    this.store(tenant, { readAt: now, current, refreshing: false });
    // A failed read must not be served to the next caller.
    current.catch(() => this.entries.get(tenant)?.current === current && this.drop(tenant));
    return current;
  }
}
