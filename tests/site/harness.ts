import { createKeySpace, createTestDatabase, type TestDatabase, VALKEY_URL } from '../helpers/services.ts';
import { type RunningProcess, startProcess, waitFor } from '../helpers/processes.ts';
import { ensureSiteBuilt } from '../../site/build.ts';

export const ADMIN_TOKEN = 'site-test-admin-token-0123456789';

export interface SiteServer {
  url: string;
  database: TestDatabase;
  process: RunningProcess;
  /** Admin API call, JSON in and out. */
  api(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any }>;
  stop(): Promise<void>;
}

/** API, aggregator and site in one real process on a fresh database and key space of its own. */
export async function startSiteServer(): Promise<SiteServer> {
  await ensureSiteBuilt();
  const database = await createTestDatabase();
  const keySpace = createKeySpace();
  const process = await startProcess('tests/site/combined-server.ts', {
    DATABASE_URL: database.url,
    VALKEY_URL,
    VALKEY_PREFIX: keySpace.prefix,
    ADMIN_TOKEN,
    LOG_LEVEL: 'warn',
  });
  const api = async (method: string, path: string, body?: unknown, token = ADMIN_TOKEN) => {
    const response = await fetch(`${process.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : undefined };
  };
  return {
    url: process.url,
    database,
    process,
    api,
    async stop() {
      await process.kill('SIGTERM');
      await keySpace.clear();
      await database.drop();
    },
  };
}

export interface SeedTenant {
  tenant: string;
  quota: number;
  /** [feature, tokens, hours ago] */
  events: [string, number, number][];
}

/** Sets quotas through the admin API, sends events through ingest, waits until the aggregator counted them. */
export async function seed(server: SiteServer, tenants: SeedTenant[]): Promise<void> {
  for (const { tenant, quota, events } of tenants) {
    const put = await server.api('PUT', `/api/tenants/${tenant}`, { monthlyQuota: quota });
    if (put.status >= 300) throw new Error(`PUT tenant ${tenant}: ${put.status} ${JSON.stringify(put.json)}`);
    const now = Date.now();
    // Events stay inside the current period even on the first hours of a month.
    const periodStart = Date.parse(put.json.usage.period.start);
    const body = events.map(([feature, tokens, hoursAgo]) => ({
      tenant,
      feature,
      tokens,
      timestamp: new Date(Math.max(periodStart + 1_000, now - hoursAgo * 3_600_000)).toISOString(),
    }));
    const sent = await server.api('POST', '/api/events', body);
    if (sent.status !== 202) throw new Error(`ingest ${tenant}: ${sent.status} ${JSON.stringify(sent.json)}`);
  }
  for (const { tenant, events } of tenants) {
    const expected = events.reduce((sum, [, tokens]) => sum + tokens, 0);
    await waitFor(async () => (await server.api('GET', `/api/usage/${tenant}`)).json?.tokens === expected, {
      what: `${tenant} usage ${expected}`,
    });
  }
}

/** A logged-in cookie jar for plain HTTP requests against the site (no browser). */
export async function loginCookie(url: string): Promise<string> {
  const page = await fetch(`${url}/login`);
  const loginCookie = page.headers
    .getSetCookie()
    .map((cookie) => cookie.split(';')[0])
    .join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())?.[1] ?? '';
  const response = await fetch(`${url}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: loginCookie, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: csrf, credential: ADMIN_TOKEN }),
  });
  const session = response.headers.getSetCookie().find((cookie) => cookie.startsWith('fm_session='));
  if (!session) throw new Error(`login failed: ${response.status}`);
  return session.split(';')[0]!;
}
