import { type AlertView, listAlerts } from '../../../shared/domain/alerts.ts';
import { tenantName } from '../../../shared/domain/events.ts';
import type { Queryable } from '../../../shared/platform/db.ts';
import { type TenantView, getTenant } from '../../../shared/domain/tenants.ts';
import { type TenantUsage, percentOf, readSeries, readTenantUsage } from '../../../shared/domain/usage.ts';
import { type Chart, barChart, cumulative } from './chart.ts';

export interface TenantPage {
  tenant: TenantView;
  /** The same read /api/usage/:tenant answers from, so the page and the API agree. */
  usage: TenantUsage;
  percent: number;
  remaining: bigint;
  hourly: Chart;
  daily: Chart;
  alerts: AlertView[];
}

const HOURS_SHOWN = 48;

/** Everything the tenant page shows, or undefined for an unknown (or impossible) tenant name. */
export async function loadTenantPage(db: Queryable, name: string, now = Date.now()): Promise<TenantPage | undefined> {
  if (!tenantName.safeParse(name).success) return undefined;
  const [tenant, usage, alerts] = await Promise.all([getTenant(db, name), readTenantUsage(db, name), listAlerts(db, name, 50)]);
  if (!tenant || !usage) return undefined;
  const [hours, days] = await Promise.all([
    readSeries(db, { tenant: name, timeZone: usage.timeZone, granularity: 'hour', from: now - (HOURS_SHOWN - 1) * 3_600_000, to: now }),
    readSeries(db, { tenant: name, timeZone: usage.timeZone, granularity: 'day', from: usage.periodStart.getTime(), to: now }),
  ]);
  return {
    tenant,
    usage,
    percent: percentOf(usage.tokens, usage.quota),
    remaining: usage.quota > usage.tokens ? usage.quota - usage.tokens : 0n,
    hourly: barChart(hours, { labelEvery: 6 }),
    daily: barChart(cumulative(days), { quota: usage.quota }),
    alerts,
  };
}
