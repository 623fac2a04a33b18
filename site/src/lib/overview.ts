import { z } from 'zod';
import type { Queryable } from '../../../shared/platform/db.ts';
import { postgresText } from '../../../shared/domain/events.ts';
import { localDay } from '../../../shared/domain/periods.ts';
import { type TenantView, listTenants } from '../../../shared/domain/tenants.ts';
import { type Forecast, forecast, readForecastWindows } from '../../../shared/domain/usage.ts';

export const PAGE_SIZE = 50;
export const SORTS = ['percent', 'usage', 'name'] as const;
export type Sort = (typeof SORTS)[number];

// A bad query string falls back to the default view instead of an error page. The search goes to
// PostgreSQL, whose text cannot hold NUL: a search with one is dropped like an overlong one.
const overviewQuery = z.object({
  q: postgresText(z.string().trim().max(128)).catch(''),
  sort: z.enum(SORTS).catch('percent'),
  page: z.coerce.number().int().min(1).max(1_000_000).catch(1),
});
export type OverviewQuery = z.infer<typeof overviewQuery>;

export function parseOverviewQuery(params: URLSearchParams): OverviewQuery {
  return overviewQuery.parse({ q: params.get('q') ?? '', sort: params.get('sort') ?? 'percent', page: params.get('page') ?? '1' });
}

export type OverviewRow = TenantView & { forecast: Forecast };

export interface Overview {
  tenants: OverviewRow[];
  total: number;
  pages: number;
}

/**
 * One page of tenants, sorted and filtered in SQL from the maintained summary, each with its
 * forecast from one more query over the page's tenants: the page costs the same at 100,000 tenants.
 */
export async function loadOverview(db: Queryable, query: OverviewQuery, now = Date.now()): Promise<Overview> {
  const { tenants, total } = await listTenants(db, {
    sort: query.sort,
    limit: PAGE_SIZE,
    offset: (query.page - 1) * PAGE_SIZE,
    ...(query.q ? { search: query.q } : {}),
  });
  const periods = tenants.map((tenant) => ({
    tenant: tenant.tenant,
    timeZone: tenant.timeZone,
    periodStartDay: localDay(tenant.timeZone, Date.parse(tenant.usage.period.start)),
  }));
  const windows = await readForecastWindows(db, periods, now);
  const rows = tenants.map((tenant, index) => ({
    ...tenant,
    forecast: forecast({
      tokens: tenant.usage.tokens,
      quota: tenant.monthlyQuota,
      timeZone: tenant.timeZone,
      periodEnd: new Date(tenant.usage.period.end),
      window: windows.get(tenant.tenant) ?? { startDay: periods[index]!.periodStartDay, tokens: 0n },
      now,
    }),
  }));
  return { tenants: rows, total, pages: Math.max(1, Math.ceil(total / PAGE_SIZE)) };
}

/** The overview URL with some of its query changed; defaults are left out to keep links short. */
export function overviewHref(path: string, query: OverviewQuery, change: Partial<OverviewQuery> = {}): string {
  const next = { ...query, ...change };
  const params = new URLSearchParams();
  if (next.q) params.set('q', next.q);
  if (next.sort !== 'percent') params.set('sort', next.sort);
  if (next.page > 1) params.set('page', String(next.page));
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}
