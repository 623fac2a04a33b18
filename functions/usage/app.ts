import type { FastifyInstance } from 'fastify';
import { type Authenticator, authoriseTenant } from '../../shared/domain/auth.ts';
import type { Config } from '../../shared/platform/config.ts';
import type { Db } from '../../shared/platform/db.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import { ApiError } from '../../shared/platform/http/errors.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { type CachedUsage, type TenantUsage, UsageCache, forecast, percentOf, readSeries, seriesCsv } from '../../shared/domain/usage.ts';
import { stringifyWithBigints } from '../../shared/platform/http/json.ts';
import { USAGE_CHANNEL } from '../../shared/domain/usage-changes.ts';
import { registerRoute } from '../route-spec.ts';
import { getUsage, getUsageSeries } from './routes.ts';
import type { SeriesResponse, UsageResponse } from './schema.ts';

export interface UsageDeps {
  auth: Authenticator;
  db: Db;
  config: Pick<Config, 'USAGE_CACHE_TTL'>;
  /**
   * Listen for the commits' change notifications (default on). Off in AWS Lambda: a frozen instance
   * would stop reading its notifications, and PostgreSQL keeps every notification until all
   * listeners have read it. There, answers are up to 4 × USAGE_CACHE_TTL (at least 1 s) old: past
   * the TTL the cached answer is served while one read refreshes it (UsageCache).
   */
  followChanges?: boolean;
}

const MAX_RANGE_MS = 400 * 86_400_000;

function usageView(usage: TenantUsage, asOf: number): UsageResponse {
  return {
    tenant: usage.tenant,
    period: { start: usage.periodStart.toISOString(), end: usage.periodEnd.toISOString() },
    tokens: usage.tokens,
    quota: usage.quota,
    percent: percentOf(usage.tokens, usage.quota),
    remaining: usage.quota > usage.tokens ? usage.quota - usage.tokens : 0n,
    over: usage.tokens >= usage.quota,
    features: usage.features,
    forecast: forecast({
      tokens: usage.tokens,
      quota: usage.quota,
      timeZone: usage.timeZone,
      periodEnd: usage.periodEnd,
      window: usage.window,
      now: asOf,
    }),
    asOf: new Date(asOf).toISOString(),
  };
}

/** Whether the Accept header ranks text/csv above application/json (absent q counts as 1). */
export function prefersCsv(accept: string | undefined): boolean {
  const quality = (type: string): number => {
    let best = -1;
    for (const part of (accept ?? '').split(',')) {
      const [range = '', ...params] = part.trim().toLowerCase().split(';');
      if (range.trim() !== type) continue;
      const q = params.map((param) => /^\s*q=([\d.]+)\s*$/.exec(param)?.[1]).find((value) => value !== undefined);
      best = Math.max(best, q === undefined ? 1 : Number(q));
    }
    return best;
  };
  const csv = quality('text/csv');
  return csv > 0 && csv > quality('application/json');
}

/**
 * Ends cached answers as commits change them: the aggregator's commits NOTIFY which tenants they
 * counted. Until the subscription stands (or again after it was lost) answers are only as fresh as
 * the TTL; the subscription is retried with backoff and ended when the app closes.
 */
function followUsageChanges(app: FastifyInstance, db: Db, cache: UsageCache): void {
  let unlisten: (() => Promise<void>) | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const subscribe = (delayMs: number): void => {
    db.listen(
      USAGE_CHANNEL,
      (payload) => cache.changed(payload),
      () => cache.clear(),
    ).then(
      (end) => {
        if (closed) void end().catch(() => undefined);
        else unlisten = end;
      },
      (error: Error) => {
        if (closed) return;
        app.log.warn(
          { err: error.message, retryInMs: delayMs },
          'usage change notifications unavailable; answers may lag up to 4 × USAGE_CACHE_TTL (at least 1 s)',
        );
        retry = setTimeout(() => subscribe(Math.min(delayMs * 2, 30_000)), delayMs).unref();
      },
    );
  };
  subscribe(1_000);
  app.addHook('onClose', async () => {
    closed = true;
    clearTimeout(retry);
    await unlisten?.().catch(() => undefined);
  });
}

export function registerUsage(app: FastifyInstance, deps: UsageDeps): void {
  const cache = new UsageCache(deps.db, deps.config.USAGE_CACHE_TTL);
  if (deps.config.USAGE_CACHE_TTL > 0 && deps.followChanges !== false) followUsageChanges(app, deps.db, cache);
  const loadTenant = async (tenant: string): Promise<CachedUsage & { usage: TenantUsage }> => {
    const cached = await cache.read(tenant);
    if (!cached.usage) throw new ApiError('not_found', `unknown tenant "${tenant}"`);
    return cached as CachedUsage & { usage: TenantUsage };
  };

  registerRoute(app, getUsage, deps, async ({ params: { tenant } }, request, reply) => {
    authoriseTenant(request.principal, tenant);
    const cached = await loadTenant(tenant);
    // Serialised once per read and shared by every request that read answers.
    cached.body ??= stringifyWithBigints(usageView(cached.usage, cached.asOf));
    return reply.type('application/json; charset=utf-8').send(cached.body);
  });

  registerRoute(app, getUsageSeries, deps, async ({ params: { tenant }, query }, request, reply): Promise<SeriesResponse | string> => {
    authoriseTenant(request.principal, tenant);
    const { usage } = await loadTenant(tenant);
    const from = query.from === undefined ? usage.periodStart.getTime() : Date.parse(query.from);
    // The period comes from the database clock, now from this host's: where the host is behind, the
    // default range is the period's first bucket, not a 400 about a `from` the caller never sent.
    const to = query.to !== undefined ? Date.parse(query.to) : query.from === undefined ? Math.max(Date.now(), from) : Date.now();
    if (from > to) {
      // Named after what the caller sent: with `from` left out, it is `to` that comes too early.
      const detail =
        query.from === undefined
          ? { field: 'to', message: 'is before the start of the current period (the default from)' }
          : { field: 'from', message: 'is after to' };
      throw new ApiError('invalid_request', 'from must not be after to', [detail]);
    }
    if (to - from > MAX_RANGE_MS) {
      throw new ApiError('invalid_request', 'the range is over 400 days', [{ field: 'to', message: 'is more than 400 days after from' }]);
    }
    const points = await readSeries(deps.db, {
      tenant,
      timeZone: usage.timeZone,
      granularity: query.granularity,
      from,
      to,
      ...(query.feature ? { feature: query.feature } : {}),
    });
    reply.header('vary', 'accept');
    if (prefersCsv(request.headers.accept)) {
      reply.type('text/csv; charset=utf-8');
      return seriesCsv(points);
    }
    return {
      tenant,
      granularity: query.granularity,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
      feature: query.feature ?? null,
      points,
    };
  });
}

export function buildUsageApp(deps: UsageDeps & { logger: Logger }): FastifyInstance {
  const app = createHttpApp(deps.logger);
  registerUsage(app, deps);
  return app;
}
