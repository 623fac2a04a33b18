/**
 * Which function serves which route, derived from the route specs beside each handler: the one table
 * the Traefik labels, the local router (`npm run stack:local`), the OpenAPI document and the route
 * tests are checked against.
 */
import { HEALTH_ROUTES } from './health/routes.ts';
import { INGEST_ROUTES } from './ingest/routes.ts';
import type { RouteSpec } from './route-spec.ts';
import { TENANTS_ROUTES } from './tenants/routes.ts';
import { USAGE_ROUTES } from './usage/routes.ts';

/** The functions that answer HTTP, each behind its own Traefik router. */
export type HttpFunction = 'ingest' | 'usage' | 'health' | 'tenants';
/** Every function the stack runs: the HTTP ones and the aggregator. */
export type FunctionName = HttpFunction | 'aggregator';
/** What Traefik routes to: the HTTP functions and the site. */
export type RoutedService = HttpFunction | 'site';

export const FUNCTION_ROUTES: Record<HttpFunction, readonly RouteSpec[]> = {
  ingest: INGEST_ROUTES,
  usage: USAGE_ROUTES,
  health: HEALTH_ROUTES,
  tenants: TENANTS_ROUTES,
};

/** Every route spec, in table order. */
export const ALL_ROUTES: readonly RouteSpec[] = Object.values(FUNCTION_ROUTES).flat();

const ROUTE_PATTERNS = ALL_ROUTES.map((route) => ({
  method: route.method,
  // One non-empty segment per parameter; a trailing slash ignored, as the router does.
  pattern: new RegExp(`^${route.path.replace(/:[^/]+/g, '[^/]+').replace(/\./g, '\\.')}/?$`),
}));

/**
 * The methods some function takes `path` with (HEAD wherever GET): what a 405 names in `Allow`.
 * Behind Traefik, API paths no function router takes reach the health function, which answers with it.
 */
export function allowedMethods(path: string): string[] {
  const methods = ROUTE_PATTERNS.filter((route) => route.pattern.test(path)).map((route) => route.method as string);
  if (methods.includes('GET')) methods.push('HEAD');
  return [...new Set(methods)];
}

/** Everything else (pages, assets) goes to the site. */
export const SITE_FUNCTION = 'site' satisfies RoutedService;
