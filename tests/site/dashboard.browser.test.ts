import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { ADMIN_TOKEN, type SiteServer, seed, startSiteServer } from './harness.ts';

const SCREENSHOTS = join(ROOT, 'test-results', 'screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const TENANTS = [
  { tenant: 'acme', quota: 10_000, events: [['gpt-4o', 5_000, 1], ['gpt-4o', 2_000, 5], ['claude-3-haiku', 1_500, 30]] as [string, number, number][] },
  { tenant: 'globex', quota: 1_000_000, events: [['gpt-4o-mini', 1_234, 2]] as [string, number, number][] },
  { tenant: 'initech', quota: 5_000, events: [['openai/gpt-4o', 6_000, 3]] as [string, number, number][] },
];

const numberIn = (text: string | null): number => Number((text ?? '').replace(/[^\d.]/g, ''));

describe.skipIf(!servicesAvailable)('dashboard in real Chromium', () => {
  let server: SiteServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;

  const rowNames = () => page.locator('#tenant-rows tr[data-tenant]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-tenant')));
  const shoot = async (name: string, viewport: typeof DESKTOP) => {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(SCREENSHOTS, `${name}-${viewport === PHONE ? 'phone' : 'desktop'}.png`), fullPage: true });
  };

  beforeAll(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    [server, browser] = await Promise.all([
      startSiteServer(),
      chromium.launch({
        executablePath: '/usr/bin/chromium',
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
      }),
    ]);
    await seed(server, TENANTS);
    context = await browser.newContext({ viewport: DESKTOP });
    context.setDefaultTimeout(10_000);
    page = await context.newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('the landing page explains FlagMeter, draws the pipeline and links to the dashboard', async () => {
    await page.goto(`${server.url}/`);
    await expect(page.getByRole('heading', { level: 1 }).textContent()).resolves.toContain('Exactly once');
    await expect(page.getByRole('img', { name: 'The FlagMeter pipeline' }).count()).resolves.toBe(1);
    await expect(page.locator('#benchmarks tbody tr').count()).resolves.toBeGreaterThan(0);
    await expect(page.locator('pre').first().textContent()).resolves.toContain('npm start');
    await shoot('landing', DESKTOP);
    await shoot('landing', PHONE);
    await page.setViewportSize(DESKTOP);
  });

  test('an unauthenticated visit to any dashboard page redirects to the login', async () => {
    for (const path of ['/dashboard', '/dashboard/keys', '/dashboard/tenants/acme']) {
      await page.goto(`${server.url}${path}`);
      expect(new URL(page.url()).pathname).toBe('/login');
      expect(new URL(page.url()).searchParams.get('next')).toBe(path);
    }
  });

  test('a wrong token says invalid credentials and nothing more', async () => {
    await page.goto(`${server.url}/login`);
    await page.getByLabel('Admin token').fill('not-the-token-at-all');
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect(page.getByRole('alert').textContent()).resolves.toBe('Invalid credentials.');
    expect(new URL(page.url()).pathname).toBe('/login');
  });

  test('logging in shows every seeded tenant with the numbers the API reports, most used first', async () => {
    await page.clock.install();
    await page.goto(`${server.url}/dashboard`);
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${server.url}/dashboard`);
    expect(await rowNames()).toEqual(['initech', 'acme', 'globex']);
    for (const { tenant } of TENANTS) {
      const usage = (await server.api('GET', `/api/usage/${tenant}`)).json;
      const row = page.locator(`tr[data-tenant="${tenant}"]`);
      expect(numberIn(await row.locator('[data-field="tokens"]').textContent())).toBe(usage.tokens);
      expect(numberIn(await row.locator('[data-field="quota"]').textContent())).toBe(usage.quota);
      expect(numberIn(await row.locator('[data-field="percent"]').textContent())).toBe(usage.percent);
    }
    await expect(page.locator('tr[data-tenant="initech"] [data-field="status"]').textContent()).resolves.toBe('Over quota');
    await expect(page.locator('tr[data-tenant="acme"] [data-field="status"]').textContent()).resolves.toBe('Near quota');
    await expect(page.locator('tr[data-tenant="globex"] [data-field="status"]').textContent()).resolves.toBe('OK');
    await shoot('overview', DESKTOP);
    await shoot('overview', PHONE);
    await page.setViewportSize(DESKTOP);
  });

  test('the overview refreshes its rows in place without reloading or moving the table', async () => {
    await page.evaluate(() => Object.assign(globalThis, { beforeRefresh: true }));
    const tableBox = await page.locator('table.tenants').boundingBox();
    const sent = await server.api('POST', '/api/events', { tenant: 'globex', feature: 'gpt-4o-mini', tokens: 766 });
    expect(sent.status).toBe(202);
    await waitFor(async () => (await server.api('GET', '/api/usage/globex')).json.tokens === 2_000, { what: 'globex at 2,000' });
    await page.clock.runFor(15_000);
    const globexTokens = page.locator('tr[data-tenant="globex"] [data-field="tokens"]');
    await waitFor(async () => (await globexTokens.textContent()) === '2,000', { what: 'the refreshed globex row' });
    // Still the same document: the marker set before the refresh survived it.
    expect(await page.evaluate(() => (globalThis as { beforeRefresh?: boolean }).beforeRefresh)).toBe(true);
    expect(await page.locator('table.tenants').boundingBox()).toEqual(tableBox);
  });

  test('sorting by name and filtering by name happen on the server', async () => {
    await page.getByLabel('Sort by').selectOption('name');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/sort=name/);
    expect(await rowNames()).toEqual(['acme', 'globex', 'initech']);
    await page.getByLabel('Filter by name').fill('GLO');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForURL(/q=GLO/);
    expect(await rowNames()).toEqual(['globex']);
    await page.getByRole('link', { name: 'Used (tokens)' }).click();
    await page.waitForURL(/sort=usage/);
    expect(await rowNames()).toEqual(['globex']);
  });

  test('the tenant page draws 48 hourly bars and the period against its quota, with the alert history', async () => {
    await page.goto(`${server.url}/dashboard`);
    await page.getByRole('link', { name: 'acme', exact: true }).click();
    await page.waitForURL(`${server.url}/dashboard/tenants/acme`);
    const hourly = page.locator('#chart-hourly rect.bar');
    expect(await hourly.count()).toBe(48);
    const hourlyTokens = await hourly.evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    const series = (await server.api('GET', `/api/usage/acme/series?granularity=hour&from=${new Date(Date.now() - 47 * 3_600_000).toISOString()}`)).json;
    expect(hourlyTokens.reduce((a, b) => a + b, 0)).toBe(series.points.reduce((sum: number, point: { tokens: number }) => sum + point.tokens, 0));
    const daily = await page.locator('#chart-daily rect.bar').evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    expect(daily.at(-1)).toBe(8_500);
    await expect(page.locator('#chart-daily line.quota').getAttribute('data-quota')).resolves.toBe('10000');
    await expect(page.getByRole('img', { name: /Tokens per hour, last 48 hours/ }).count()).resolves.toBe(1);
    const alertRows = page.locator('#alerts tbody tr');
    await expect(alertRows.count()).resolves.toBe(1);
    await expect(alertRows.first().textContent()).resolves.toContain('80%');
    await expect(alertRows.first().locator('[data-field="delivery"]').textContent()).resolves.toMatch(/No webhook configured|Pending delivery|Delivered|Failed/);
    const features = await page.locator('#features tbody th').allTextContents();
    expect(features).toEqual(['gpt-4o', 'claude-3-haiku']);
    await shoot('tenant', DESKTOP);
    await shoot('tenant', PHONE);
    await page.setViewportSize(DESKTOP);
  });

  test('a bad quota and time zone are refused beside their fields; a good quota changes the percent', async () => {
    await page.getByLabel('Monthly quota (tokens)').fill('ten thousand');
    await page.getByLabel('Time zone').fill('Mars/Olympus');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await expect(page.locator('#monthlyQuota-error').textContent()).resolves.toContain('must be an integer');
    await expect(page.getByLabel('Monthly quota (tokens)').getAttribute('aria-invalid')).resolves.toBe('true');
    await expect(page.locator('#timeZone-error').textContent()).resolves.toContain('IANA time zone');
    expect((await server.api('GET', '/api/tenants/acme')).json.monthlyQuota).toBe(10_000);

    await page.getByLabel('Monthly quota (tokens)').fill('20,000');
    await page.getByLabel('Time zone').fill('UTC');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await page.waitForURL(/saved=1/);
    await expect(page.locator('#usage-summary [data-field="percent"]').textContent()).resolves.toBe('42.5%');
    await expect(page.locator('#usage-summary [data-field="status"]').textContent()).resolves.toBe('OK');
    // The usage function answers from a read at most USAGE_CACHE_TTL old: wait for the next read.
    const usage = await waitFor(async () => {
      const answer = (await server.api('GET', '/api/usage/acme')).json;
      return answer.quota === 20_000 ? answer : undefined;
    }, { timeoutMs: 5_000, what: 'the usage API to show the new quota' });
    expect([usage.quota, usage.percent]).toEqual([20_000, 42.5]);
  });

  test('a key is created with its secret shown once, works, and gets 401 from the API once revoked', async () => {
    await page.goto(`${server.url}/dashboard/keys`);
    await page.getByLabel('Name').fill('browser test key');
    await page.getByLabel('Tenant (optional)').fill('acme');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = await page.getByLabel('New API key secret').inputValue();
    expect(secret).toMatch(/^fm_/);
    await expect(page.getByRole('button', { name: 'Copy' }).isVisible()).resolves.toBe(true);
    expect((await server.api('GET', '/api/usage/acme', undefined, secret)).status).toBe(200);

    await page.goto(`${server.url}/dashboard/keys`);
    await expect(page.content()).resolves.not.toContain(secret);
    await page.getByRole('button', { name: /Revoke browser test key/ }).click();
    await expect(page.getByRole('status').first().textContent()).resolves.toContain('revoked');
    await waitFor(async () => (await server.api('GET', '/api/usage/acme', undefined, secret)).status === 401, { what: 'the revoked key to get 401' });
  });

  test('a form posted without its CSRF token is refused with 403 and changes nothing', async () => {
    const forged = await page.request.post(`${server.url}/dashboard/tenants/acme`, {
      form: { monthlyQuota: '1' },
      headers: { origin: server.url },
      maxRedirects: 0,
    });
    expect(forged.status()).toBe(403);
    const wrongToken = await page.request.post(`${server.url}/dashboard/keys`, {
      form: { intent: 'create', name: 'forged', _csrf: 'x'.repeat(43) },
      headers: { origin: server.url },
      maxRedirects: 0,
    });
    expect(wrongToken.status()).toBe(403);
    expect((await server.api('GET', '/api/tenants/acme')).json.monthlyQuota).toBe(20_000);
    expect((await server.api('GET', '/api/keys')).json.keys.map((key: { name: string }) => key.name)).not.toContain('forged');
  });

  test('logging out ends the session', async () => {
    await page.goto(`${server.url}/dashboard`);
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(`${server.url}/login`);
    await page.goto(`${server.url}/dashboard`);
    expect(new URL(page.url()).pathname).toBe('/login');
    expect((await context.cookies()).some((cookie) => cookie.name === 'fm_session')).toBe(false);
  });
});
