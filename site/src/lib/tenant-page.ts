import { type AlertView, listAlerts } from '../../../shared/domain/alerts.ts';
import { featureName, tenantName } from '../../../shared/domain/events.ts';
import { addCalendar, localDay, localMidnight } from '../../../shared/domain/periods.ts';
import { type TenantView, getTenant } from '../../../shared/domain/tenants.ts';
import { type Forecast, type TenantUsage, forecast, percentOf, readSeries, readTenantUsage } from '../../../shared/domain/usage.ts';
import type { Queryable } from '../../../shared/platform/db.ts';
import { type Chart, type ChartPoint, type ChartSize, barChart, cumulative } from './chart.ts';

/** What the page was asked for: `?period=YYYY-MM` (the tenant's calendar month) and `?feature=`. */
export interface TenantPageQuery {
  period?: string;
  feature?: string;
}

export type TenantPageError = { field: 'period' | 'feature'; message: string };

export interface TenantPage {
  tenant: TenantView;
  /** The chosen period's usage, the same read /api/usage/:tenant answers from. */
  usage: TenantUsage;
  /** 'YYYY-MM' of the chosen period, and of the ones before and after it (none after the current one or beyond). */
  period: { month: string; current: boolean; previous: string | undefined; next: string | undefined };
  feature: string | undefined;
  /** The range the charts and the CSV cover: the period from its start to its end or now. */
  range: { from: number; to: number };
  percent: number;
  remaining: bigint;
  /** Only for the current period and all features: the period is still running. */
  forecast: Forecast | undefined;
  hourly: Record<ChartSize, Chart>;
  daily: Record<ChartSize, Chart>;
  /** The numbers the charts draw, for their tables and the CSV. */
  hours: ChartPoint[];
  days: ChartPoint[];
  alerts: AlertView[];
}

const HOURS_SHOWN = 48;
const MONTH = /^(\d{4})-(0[1-9]|1[0-2])$/;
/** The earliest month a page shows: what the usage API's ranges allow (years 2000 to 2100). */
const FIRST_MONTH = '2000-01';

/** Checks the query against the tenant's current period; the error names the field. */
export function parseTenantPageQuery(
  params: URLSearchParams,
  currentStartDay: string,
): { startDay: string; feature: string | undefined } | TenantPageError {
  const period = params.get('period');
  let startDay = currentStartDay;
  if (period !== null && period !== '') {
    if (!MONTH.test(period)) return { field: 'period', message: 'must be a month written YYYY-MM, e.g. 2026-03' };
    if (period < FIRST_MONTH) return { field: 'period', message: `must not be before ${FIRST_MONTH}` };
    startDay = `${period}-01`;
    // The next period may already hold events (timestamps up to FUTURE_WINDOW_MS ahead, near a
    // month's end) and so alerts, which link here; none after it can.
    const nextStartDay = addCalendar(currentStartDay, { months: 1 });
    if (startDay > nextStartDay) return { field: 'period', message: `must not be after the next period (${nextStartDay.slice(0, 7)})` };
  }
  const feature = params.get('feature') || undefined;
  if (feature !== undefined && !featureName.safeParse(feature).success)
    return { field: 'feature', message: 'must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -' };
  return { startDay, feature };
}

const both = (points: readonly ChartPoint[], options: Parameters<typeof barChart>[1]): Record<ChartSize, Chart> => ({
  wide: barChart(points, { ...options, size: 'wide' }),
  narrow: barChart(points, { ...options, size: 'narrow' }),
});

/**
 * Everything the tenant page shows, undefined for an unknown (or impossible) tenant name, or the
 * error of a bad query.
 */
export async function loadTenantPage(
  db: Queryable,
  name: string,
  params: URLSearchParams = new URLSearchParams(),
  now = Date.now(),
): Promise<TenantPage | TenantPageError | undefined> {
  if (!tenantName.safeParse(name).success) return undefined;
  const [tenant, current, alerts] = await Promise.all([
    getTenant(db, name),
    readTenantUsage(db, name),
    listAlerts(db, name, { limit: 50 }),
  ]);
  if (!tenant || !current) return undefined;
  const query = parseTenantPageQuery(params, current.periodStartDay);
  if ('field' in query) return query;
  const isCurrent = query.startDay === current.periodStartDay;
  const usage = isCurrent ? current : (await readTenantUsage(db, name, query.startDay))!;
  const from = usage.periodStart.getTime();
  // Up to now, within the period (the next period, not begun yet, shows its first hour and day).
  const to = Math.max(from, Math.min(now, usage.periodEnd.getTime() - 1));
  const feature = query.feature;
  const [hours, days] = await Promise.all([
    readSeries(db, {
      tenant: name,
      timeZone: usage.timeZone,
      granularity: 'hour',
      from: Math.max(from, to - (HOURS_SHOWN - 1) * 3_600_000),
      to,
      ...(feature ? { feature } : {}),
    }),
    readSeries(db, { tenant: name, timeZone: usage.timeZone, granularity: 'day', from, to, ...(feature ? { feature } : {}) }),
  ]);
  const projected =
    isCurrent && !feature
      ? forecast({
          tokens: usage.tokens,
          quota: usage.quota,
          timeZone: usage.timeZone,
          periodEnd: usage.periodEnd,
          window: usage.window,
          now,
        })
      : undefined;
  const daysInPeriod = Math.round((usage.periodEnd.getTime() - from) / 86_400_000);
  const month = query.startDay.slice(0, 7);
  return {
    tenant,
    usage,
    period: {
      month,
      current: isCurrent,
      previous: query.startDay > `${FIRST_MONTH}-01` ? addCalendar(query.startDay, { months: -1 }).slice(0, 7) : undefined,
      next: query.startDay < current.periodStartDay ? addCalendar(query.startDay, { months: 1 }).slice(0, 7) : undefined,
    },
    feature,
    range: { from, to },
    percent: percentOf(usage.tokens, usage.quota),
    remaining: usage.quota > usage.tokens ? usage.quota - usage.tokens : 0n,
    forecast: projected,
    hours,
    days,
    hourly: both(hours, { labelEvery: { wide: 6, narrow: 12 } }),
    daily: both(cumulative(days), {
      slots: daysInPeriod,
      ...(feature ? {} : { quota: usage.quota }),
      ...(projected ? { projectTo: projected.tokensAtPeriodEnd } : {}),
    }),
    alerts,
  };
}

/**
 * The tenant name of a `/dashboard/tenants/:tenant` path. Links write names with encodeURIComponent,
 * and Astro decodes the path with decodeURI, which leaves `%3A` and `%40` as they are: a tenant named
 * `a:b@c.d` (an e-mail-like name) was looked up as `a%3Ab%40c.d` and answered 404. Tenant names hold
 * no `%`, so decoding what is left is safe; a malformed escape stays as it is (and matches no tenant).
 */
export function tenantOfPath(param: string | undefined): string {
  if (!param) return '';
  try {
    return decodeURIComponent(param);
  } catch {
    return param;
  }
}

/** The tenant page URL for a period and feature; the current period and all features are left out. */
export function tenantHref(name: string, change: { period?: string | undefined; feature?: string | undefined }, suffix = ''): string {
  const params = new URLSearchParams();
  if (change.period) params.set('period', change.period);
  if (change.feature) params.set('feature', change.feature);
  const search = params.toString();
  return `/dashboard/tenants/${encodeURIComponent(name)}${suffix}${search ? `?${search}` : ''}`;
}

/** The per-day series of the period and feature the page shows: what its "Download CSV" link serves. */
export async function loadTenantDays(
  db: Queryable,
  name: string,
  params: URLSearchParams,
  now = Date.now(),
): Promise<{ days: ChartPoint[]; month: string; feature: string | undefined } | TenantPageError | undefined> {
  if (!tenantName.safeParse(name).success) return undefined;
  const current = await readTenantUsage(db, name);
  if (!current) return undefined;
  const query = parseTenantPageQuery(params, current.periodStartDay);
  if ('field' in query) return query;
  const from = localMidnight(current.timeZone, query.startDay);
  const to = Math.max(from, Math.min(now, localMidnight(current.timeZone, addCalendar(query.startDay, { months: 1 })) - 1));
  const days = await readSeries(db, {
    tenant: name,
    timeZone: current.timeZone,
    granularity: 'day',
    from,
    to,
    ...(query.feature ? { feature: query.feature } : {}),
  });
  return { days, month: query.startDay.slice(0, 7), feature: query.feature };
}

/** The forecast in one sentence, dates in the tenant's zone. */
export function forecastSentence(page: Pick<TenantPage, 'usage' | 'forecast'>, format: (tokens: bigint) => string): string {
  const { usage, forecast: projected } = page;
  if (!projected) return '';
  const zone = usage.timeZone;
  const lastDay = addCalendar(localDay(zone, usage.periodEnd.getTime()), { days: -1 });
  const pace = usage.window.startDay === usage.periodStartDay ? 'At the pace since the period began' : 'At the pace of the last 7 days';
  const total = `about ${format(projected.tokensAtPeriodEnd)} tokens by the period's last day (${lastDay})`;
  if (projected.quotaReachedAt === null) return `${pace}, ${usage.tenant} will use ${total}, within its quota of ${format(usage.quota)}.`;
  if (usage.tokens >= usage.quota)
    return `${usage.tenant} has already reached its quota of ${format(usage.quota)}; ${pace.toLowerCase()} it will use ${total}.`;
  return `${pace}, ${usage.tenant} will reach its quota of ${format(usage.quota)} on ${localDay(zone, Date.parse(projected.quotaReachedAt))} and use ${total}.`;
}
