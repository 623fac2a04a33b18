import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSiteBuilt, SITE_ENTRY } from '../site/build.ts';
import { ROOT, type RunningProcess, startProcess } from './helpers/processes.ts';
import { createKeySpace, servicesAvailable, VALKEY_URL } from './helpers/services.ts';
import { ADMIN_TOKEN, loginCookie, type SiteServer, startSiteServer } from './site/harness.ts';

const STATIC_PATHS = ['/', '/docs/api', '/favicon.svg'];

/** A login form's cookie and CSRF token, as a browser would hold them. */
async function loginForm(url: string): Promise<{ cookie: string; csrf: string }> {
  const page = await fetch(`${url}/login`);
  const cookie = page.headers
    .getSetCookie()
    .map((value) => value.split(';')[0])
    .join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())?.[1] ?? '';
  return { cookie, csrf };
}

function expectSecurityHeaders(response: Response, what: string): void {
  expect(response.status, what).toBe(200);
  expect(response.headers.get('content-security-policy'), what).toContain("frame-ancestors 'none'");
  expect(response.headers.get('x-content-type-options'), what).toBe('nosniff');
  expect(response.headers.get('referrer-policy'), what).toBe('same-origin');
}

describe.skipIf(!servicesAvailable)('site: sessions, login throttle and headers', () => {
  let server: SiteServer;
  let standalone: RunningProcess | undefined;

  beforeAll(async () => {
    server = await startSiteServer();
  });
  afterAll(async () => {
    await standalone?.kill('SIGKILL');
    await server?.stop();
  });

  it('answers 429 to parallel wrong logins from one client instead of checking them all', async () => {
    const { cookie, csrf } = await loginForm(server.url);
    const attempt = () =>
      fetch(`${server.url}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, origin: server.url, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ _csrf: csrf, credential: 'wrong-guess-0123456789' }),
      });
    const started = Date.now();
    const statuses = (await Promise.all(Array.from({ length: 40 }, attempt))).map((response) => response.status);
    const checked = statuses.filter((status) => status === 401).length;
    console.info(
      `40 parallel wrong logins: ${checked} checked (401), ${statuses.length - checked} refused (429) in ${Date.now() - started} ms`,
    );
    expect(statuses.every((status) => status === 401 || status === 429)).toBe(true);
    expect(checked).toBeLessThanOrEqual(8);
    const refused = await attempt();
    if (refused.status === 429) expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('throttles refused admin tokens on the API: 429 with Retry-After once the free failures are spent', async () => {
    const statuses: number[] = [];
    for (let guess = 0; guess < 4; guess++)
      statuses.push((await server.api('GET', '/api/tenants', undefined, `wrong-admin-token-${guess}-0123456789`)).status);
    expect(statuses).toEqual([401, 401, 401, 429]);
    const throttled = await fetch(`${server.url}/api/tenants`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    // While the wait runs even the right token is not checked: a guess learns nothing.
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await throttled.json()) as { error: { code: string } }).error.code).toBe('too_many_requests');
  });

  it('ends the session on the server at logout: the old cookie opens nothing afterwards, on any site process', async () => {
    const session = await loginCookie(server.url);
    const keys = await fetch(`${server.url}/dashboard/keys`, { headers: { cookie: session }, redirect: 'manual' });
    expect(keys.status).toBe(200);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await keys.text())?.[1] ?? '';
    const logout = await fetch(`${server.url}/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: session, origin: server.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf }),
    });
    expect(logout.status).toBe(303);
    // The copied cookie, replayed after logout.
    const replay = await fetch(`${server.url}/dashboard/keys`, { headers: { cookie: session }, redirect: 'manual' });
    expect(replay.status).toBe(303);
    expect(replay.headers.get('location')).toMatch(/^\/login\?next=/);

    // Another site process on the same database (a second replica, or this one restarted): the
    // logged-out cookie still opens nothing there, while a live session from the first one does.
    const keySpace = createKeySpace();
    const other = await startProcess('tests/site/combined-server.ts', {
      DATABASE_URL: server.database.url,
      VALKEY_URL,
      VALKEY_PREFIX: keySpace.prefix,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
    });
    try {
      const live = await loginCookie(server.url);
      expect((await fetch(`${other.url}/dashboard/keys`, { headers: { cookie: live }, redirect: 'manual' })).status).toBe(200);
      const elsewhere = await fetch(`${other.url}/dashboard/keys`, { headers: { cookie: session }, redirect: 'manual' });
      expect(elsewhere.status).toBe(303);
      expect(elsewhere.headers.get('location')).toMatch(/^\/login\?next=/);
    } finally {
      await other.kill('SIGTERM');
      await keySpace.clear();
    }
  });

  it('answers a state-changing request that is no readable form with 415 or 400, never 500, and changes nothing', async () => {
    const csrfOf = async (path: string, cookie: string) =>
      /name="_csrf" value="([^"]+)"/.exec(await (await fetch(`${server.url}${path}`, { headers: { cookie } })).text())?.[1] ?? '';
    const login = await loginForm(server.url);
    const session = await loginCookie(server.url);
    const keysCsrf = await csrfOf('/dashboard/keys', session);
    const keysBefore = await (await fetch(`${server.url}/dashboard/keys`, { headers: { cookie: session } })).text();
    const cases: [string, string, string, string, string | Uint8Array, number][] = [
      // The token in the header passes the CSRF check; the page then read the body as a form and threw.
      ['/login', login.cookie, login.csrf, 'application/json', '{"credential":"x"}', 415],
      ['/login', login.cookie, login.csrf, 'multipart/form-data; boundary=x', 'not multipart at all', 400],
      ['/login', login.cookie, login.csrf, 'application/x-www-form-urlencoded', `credential=${'x'.repeat(70_000)}`, 400],
      ['/dashboard/keys', session, keysCsrf, 'application/json', '{"name":"json-key"}', 415],
      ['/dashboard/keys', session, keysCsrf, 'text/plain', 'name=plain-key', 415],
    ];
    for (const [path, cookie, csrf, type, body, status] of cases) {
      const response = await fetch(`${server.url}${path}`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, origin: server.url, 'x-csrf-token': csrf, 'content-type': type },
        body,
      });
      expect(response.status, `${path} ${type}`).toBe(status);
    }
    // A browser's form carries its token in the body: one over 64 KB is a 400 saying so, not a 403 about the token.
    const oversized = await fetch(`${server.url}/dashboard/keys`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: session, origin: server.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: keysCsrf, intent: 'create', name: 'n'.repeat(70_000), tenant: '' }),
    });
    expect(oversized.status).toBe(400);
    expect(await oversized.text()).toContain('over 64 KB');
    expect(await (await fetch(`${server.url}/dashboard/keys`, { headers: { cookie: session } })).text()).not.toContain('json-key');
    expect(keysBefore).not.toContain('json-key');
    // The forms themselves still work with the token in the body.
    const made = await fetch(`${server.url}/dashboard/keys`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: session, origin: server.url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: keysCsrf, intent: 'create', name: 'form-key', tenant: '' }),
    });
    expect(made.status).toBe(200);
    expect(await made.text()).toContain('form-key');
  });

  it('never answers 500 to a next= holding CR, LF or U+2028, and sends the user to a same-site path', async () => {
    const session = await loginCookie(server.url);
    for (const next of [
      '/dashboard?%0d%0aSet-Cookie:%20x',
      '/dashboard?%E2%80%A8x',
      '/dashboard/%0akeys',
      '/dashboard?a%20b',
      'https://evil.example/dashboard',
    ]) {
      const response = await fetch(`${server.url}/login?next=${next}`, { headers: { cookie: session }, redirect: 'manual' });
      expect(response.status, next).toBe(303);
      expect(response.headers.get('location'), next).toBe('/dashboard');
      expect(response.headers.get('set-cookie') ?? '', next).not.toContain('x=');
    }
    const fine = await fetch(`${server.url}/login?next=${encodeURIComponent('/dashboard/keys')}`, {
      headers: { cookie: session },
      redirect: 'manual',
    });
    expect(fine.headers.get('location')).toBe('/dashboard/keys');
  });

  it('sends CSP with frame-ancestors, nosniff and a referrer policy on static pages and assets under npm start', async () => {
    await ensureSiteBuilt();
    const asset = readdirSync(join(SITE_ENTRY, '..', '..', 'client', '_astro')).find((name) => name.endsWith('.css'));
    for (const path of [...STATIC_PATHS, `/_astro/${asset}`]) expectSecurityHeaders(await fetch(`${server.url}${path}`), path);
  });

  it('sends the same headers on static pages from the site’s own server', async () => {
    await ensureSiteBuilt();
    standalone = await startProcess('site/dist/server/entry.mjs', {
      DATABASE_URL: server.database.url,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
    });
    for (const path of ['/', '/docs/api']) expectSecurityHeaders(await fetch(`${standalone.url}${path}`), `standalone ${path}`);
  });
  it("fails the site container's health check (stacks/app.yml) while its config is bad, and passes it once good", async () => {
    await ensureSiteBuilt();
    const stack = parse(readFileSync(join(ROOT, 'stacks/app.yml'), 'utf8')) as { services: { site: { healthcheck: { test: string[] } } } };
    const [, command, flag, code] = stack.services.site.healthcheck.test;
    const check = (url: string) =>
      promisify(execFile)(command!, [flag!, code!.replace('http://127.0.0.1:3000', url)]).then(
        () => 'healthy',
        () => 'unhealthy',
      );
    // A session lifetime that is not a number: the site stops at its first on-demand page, naming it.
    const broken = await startProcess(
      'site/dist/server/entry.mjs',
      {
        DATABASE_URL: server.database.url,
        ADMIN_TOKEN,
        SESSION_TTL_HOURS: 'forever',
        LOG_LEVEL: 'warn',
      },
      { ready: async (_output, url) => (await fetch(`${url}/favicon.svg`).catch(() => undefined))?.status === 200 },
    );
    try {
      expect(await check(broken.url)).toBe('unhealthy');
      expect(await broken.exited).toBe(78);
      expect(broken.output()).toContain('SESSION_TTL_HOURS');
    } finally {
      await broken.kill('SIGKILL');
    }
    standalone ??= await startProcess('site/dist/server/entry.mjs', { DATABASE_URL: server.database.url, ADMIN_TOKEN, LOG_LEVEL: 'warn' });
    expect(await check(standalone.url)).toBe('healthy');
  });
});
