import type { APIRoute } from 'astro';
import { seriesCsv } from '../../../../../../shared/domain/usage.ts';
import { siteDeps } from '../../../../lib/deps.ts';
import { loadTenantDays, tenantOfPath } from '../../../../lib/tenant-page.ts';

const text = (status: number, body: string): Response =>
  new Response(`${body}\n`, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });

/**
 * The tenant page's "Download CSV": its period and feature, one row per day, the same columns as
 * the series API's text/csv. Behind the dashboard login (the middleware guards /dashboard/), so the
 * browser's session cookie is all it takes.
 */
export const GET: APIRoute = async ({ params, url }) => {
  const { db } = await siteDeps();
  const name = tenantOfPath(params.tenant);
  const result = await loadTenantDays(db, name, url.searchParams);
  if (!result) return text(404, `unknown tenant "${name}"`);
  if ('field' in result) return text(400, `${result.field} ${result.message}`);
  const filename = `${name}-${result.month}${result.feature ? `-${result.feature.replace(/[^A-Za-z0-9._-]/g, '_')}` : ''}-daily.csv`;
  return new Response(seriesCsv(result.days), {
    headers: {
      'content-type': 'text/csv; charset=utf-8',
      'content-disposition': `attachment; filename="${filename}"`,
      'cache-control': 'private, no-store',
    },
  });
};
