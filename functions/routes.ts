/**
 * Which function serves which route: the one table the Traefik labels, the local router
 * (`npm run stack:local`) and the route tests are checked against.
 */
export type FunctionName = 'ingest' | 'usage' | 'health' | 'tenants' | 'site';

export interface RouteSpec {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
}

export const FUNCTION_ROUTES: Record<Exclude<FunctionName, 'site'>, RouteSpec[]> = {
  ingest: [{ method: 'POST', path: '/api/events' }],
  usage: [
    { method: 'GET', path: '/api/usage/:tenant' },
    { method: 'GET', path: '/api/usage/:tenant/series' },
  ],
  health: [
    { method: 'GET', path: '/api/health' },
    { method: 'GET', path: '/api/openapi.json' },
  ],
  tenants: [
    { method: 'POST', path: '/api/keys' },
    { method: 'GET', path: '/api/keys' },
    { method: 'DELETE', path: '/api/keys/:id' },
    { method: 'GET', path: '/api/tenants' },
    { method: 'GET', path: '/api/tenants/:tenant' },
    { method: 'PUT', path: '/api/tenants/:tenant' },
    { method: 'GET', path: '/api/tenants/:tenant/alerts' },
  ],
};

/** Everything else (pages, assets) goes to the site. */
export const SITE_FUNCTION: FunctionName = 'site';
