import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { addCalendar } from '../../shared/domain/periods.ts';
import { ADMIN_TOKEN, type SiteServer, seed, startSiteServer } from './harness.ts';

const SCREENSHOTS = join(ROOT, 'test-results', 'screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const TENANTS = [
  {
    tenant: 'acme',
    quota: 10_000,
    events: [
      ['gpt-4o', 5_000, 1],
      ['gpt-4o', 2_000, 5],
      ['claude-3-haiku', 1_500, 30],
    ] as [string, number, number][],
  },
  { tenant: 'globex', quota: 1_000_000, events: [['gpt-4o-mini', 1_234, 2]] as [string, number, number][] },
  { tenant: 'initech', quota: 5_000, events: [['openai/gpt-4o', 6_000, 3]] as [string, number, number][] },
];

const numberIn = (text: string | null): number => Number((text ?? '').replace(/[^\d.]/g, ''));
const near = (actual: number, expected: number): boolean => Math.abs(actual - expected) <= Math.max(2, expected * 0.01);

describe.skipIf(!servicesAvailable)('dashboard in real Chromium', () => {
  let server: SiteServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;

  const rowNames = () =>
    page.locator('#tenant-rows tr[data-tenant]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-tenant')));
  const shoot = async (name: string, viewport: typeof DESKTOP) => {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: join(SCREENSHOTS, `${name}-${viewport === PHONE ? 'phone' : 'desktop'}.png`), fullPage: true });
  };
  // These run in the page, so they are given as source: the test compiles without the DOM types.
  /** How far the page is wider than the viewport (0 when it fits). */
  const overflow = async (): Promise<number> => Number(await page.evaluate('document.documentElement.scrollWidth - window.innerWidth'));
  /** The smallest rendered size, in CSS px, of any visible text in a drawing (SVG text scales with its viewBox). */
  const smallestDrawnText = async (): Promise<number> =>
    Number(
      await page.evaluate(`Math.min(Infinity, ...[...document.querySelectorAll('svg text')]
        .filter((text) => text.getClientRects().length > 0)
        .map((text) => parseFloat(getComputedStyle(text).fontSize) * (text.getScreenCTM()?.a ?? 1)))`),
    );
  /** Every control sits inside the viewport horizontally, so no action is off-screen. */
  const offscreenActions = async (): Promise<string[]> =>
    (await page.evaluate(`[...document.querySelectorAll('a[href], button, input:not([type=hidden]), select')]
      .filter((element) => element.getClientRects().length > 0 && !element.closest('details:not([open])') && !element.classList.contains('skip'))
      .filter((element) => {
        const box = element.getBoundingClientRect();
        return box.left < -1 || box.right > window.innerWidth + 1;
      })
      .map((element) => element.outerHTML.slice(0, 80))`)) as string[];

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
    for (const viewport of [PHONE, DESKTOP]) {
      await shoot('login', viewport);
      expect(await overflow()).toBeLessThanOrEqual(0);
      expect(await offscreenActions()).toEqual([]);
    }
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
    const hourly = page.locator('#chart-hourly svg.size-wide rect.bar');
    expect(await hourly.count()).toBe(48);
    const hourlyTokens = await hourly.evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    const series = (
      await server.api('GET', `/api/usage/acme/series?granularity=hour&from=${new Date(Date.now() - 47 * 3_600_000).toISOString()}`)
    ).json;
    expect(hourlyTokens.reduce((a, b) => a + b, 0)).toBe(
      series.points.reduce((sum: number, point: { tokens: number }) => sum + point.tokens, 0),
    );
    const daily = await page
      .locator('#chart-daily svg.size-wide rect.bar')
      .evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    expect(daily.at(-1)).toBe(8_500);
    await expect(page.locator('#chart-daily svg.size-wide line.quota').getAttribute('data-quota')).resolves.toBe('10000');
    await expect(page.getByRole('img', { name: /Tokens per hour, last 48 hours/ }).count()).resolves.toBe(1);
    const alertRows = page.locator('#alerts tbody tr');
    await expect(alertRows.count()).resolves.toBe(1);
    await expect(alertRows.first().textContent()).resolves.toContain('80%');
    await expect(alertRows.first().locator('[data-field="delivery"]').textContent()).resolves.toMatch(
      /No webhook configured|Pending delivery|Delivered|Failed/,
    );
    const features = await page.locator('#features tbody th').allTextContents();
    expect(features).toEqual(['gpt-4o', 'claude-3-haiku']);
    await shoot('tenant', DESKTOP);
    await shoot('tenant', PHONE);
    await page.setViewportSize(DESKTOP);
  });

  test('the forecast: one sentence and a dotted projection on the tenant page, a column on the overview, all as the API says', async () => {
    const api = (await server.api('GET', '/api/usage/acme')).json;
    await page.goto(`${server.url}/dashboard/tenants/acme`);
    const sentence = await page.locator('#forecast').textContent();
    expect(sentence).toMatch(/^At the pace (of the last 7 days|since the period began), acme will (use about|reach its quota of)/);
    expect(near(numberIn(/about ([\d,]+) tokens/.exec(sentence ?? '')?.[1] ?? ''), api.forecast.tokensAtPeriodEnd)).toBe(true);
    const projection = page.locator('#chart-daily svg.size-wide line.projection');
    const lastDay = new Date(Date.parse(api.period.end) - 1).toISOString().slice(0, 10);
    if (new Date().toISOString().slice(0, 10) < lastDay) {
      expect(near(Number(await projection.getAttribute('data-tokens')), api.forecast.tokensAtPeriodEnd)).toBe(true);
    }
    await page.goto(`${server.url}/dashboard`);
    const cell = page.locator('tr[data-tenant="acme"] [data-field="forecast"]');
    expect(near(Number(await cell.getAttribute('data-tokens')), api.forecast.tokensAtPeriodEnd)).toBe(true);
    await expect(page.locator('tr[data-tenant="initech"] [data-field="quota-reached"]').textContent()).resolves.toBe('quota reached');
  });

  test('past periods: previous and next links walk the months, and the charts cover the chosen one', async () => {
    const api = (await server.api('GET', '/api/usage/acme')).json;
    const currentDay = api.period.start.slice(0, 10);
    const previousDay = addCalendar(currentDay, { days: 0, months: -1 });
    const previous = previousDay.slice(0, 7);
    // Last month's usage, written as the aggregator writes rollups: 4,321 tokens on its tenth day.
    const tenth = addCalendar(previousDay, { days: 9 });
    const db = server.database.db;
    await db.query(
      "INSERT INTO usage_hourly (tenant, feature, hour, tokens, events) VALUES ('acme', 'gpt-4o', $1::date + time '12:00', 4321, 1)",
      [tenth],
    );
    await db.query("INSERT INTO usage_daily (tenant, feature, day, tokens, events) VALUES ('acme', 'gpt-4o', $1::date, 4321, 1)", [tenth]);
    await db.query("INSERT INTO usage_periods (tenant, period_start, tokens, events) VALUES ('acme', $1::date, 4321, 1)", [previousDay]);

    await page.goto(`${server.url}/dashboard/tenants/acme`);
    await expect(page.locator('#period-next').count()).resolves.toBe(0);
    await page.locator('#period-prev').click();
    await page.waitForURL(new RegExp(`period=${previous}$`));
    await expect(page.locator('#period-current').textContent()).resolves.toContain(previous);
    expect(numberIn(await page.locator('#usage-summary [data-field="tokens"]').textContent())).toBe(4_321);
    const days = await page
      .locator('#chart-daily svg.size-wide rect.bar')
      .evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    expect(days).toHaveLength(Number(addCalendar(previousDay, { months: 1, days: -1 }).slice(8)));
    expect(days[8]).toBe(0);
    expect(days.at(-1)).toBe(4_321);
    await expect(page.locator('#forecast').count()).resolves.toBe(0);
    await expect(page.locator('#chart-daily line.projection').count()).resolves.toBe(0);
    await shoot('tenant-past', PHONE);
    await page.setViewportSize(DESKTOP);

    await page.locator('#period-next').click();
    await page.waitForURL(/period=/);
    expect(numberIn(await page.locator('#usage-summary [data-field="tokens"]').textContent())).toBe(api.tokens);
    // The first month a page shows has no link further back (it led to a 400).
    await page.goto(`${server.url}/dashboard/tenants/acme?period=2000-01`);
    await expect(page.locator('#period-current').textContent()).resolves.toContain('2000-01');
    await expect(page.locator('#period-prev').count()).resolves.toBe(0);
    await page.goto(`${server.url}/dashboard/tenants/acme?period=2999-01`);
    await expect(page.getByRole('alert').textContent()).resolves.toContain('period must not be after the next period');

    // The next period, not begun yet, already holding an event stamped minutes ahead (and so possibly
    // an alert, whose link leads here): its page shows it, with no link further on.
    const nextDay = addCalendar(currentDay, { months: 1 });
    await db.query(
      "INSERT INTO usage_hourly (tenant, feature, hour, tokens, events) VALUES ('acme', 'gpt-4o', $1::date + time '00:00', 77, 1)",
      [nextDay],
    );
    await db.query("INSERT INTO usage_daily (tenant, feature, day, tokens, events) VALUES ('acme', 'gpt-4o', $1::date, 77, 1)", [nextDay]);
    await db.query("INSERT INTO usage_periods (tenant, period_start, tokens, events) VALUES ('acme', $1::date, 77, 1)", [nextDay]);
    try {
      const answer = await page.goto(`${server.url}/dashboard/tenants/acme?period=${nextDay.slice(0, 7)}`);
      expect(answer?.status()).toBe(200);
      await expect(page.locator('#period-current').textContent()).resolves.toContain(nextDay.slice(0, 7));
      expect(numberIn(await page.locator('#usage-summary [data-field="tokens"]').textContent())).toBe(77);
      await expect(page.locator('#period-next').count()).resolves.toBe(0);
      await expect(page.locator('#period-now').count()).resolves.toBe(1);
    } finally {
      await db.query("DELETE FROM usage_hourly WHERE tenant = 'acme' AND hour >= $1::date", [nextDay]);
      await db.query("DELETE FROM usage_daily WHERE tenant = 'acme' AND day >= $1::date", [nextDay]);
      await db.query("DELETE FROM usage_periods WHERE tenant = 'acme' AND period_start >= $1::date", [nextDay]);
    }
  });

  test('the feature filter narrows both charts and the CSV link downloads what the page shows', async () => {
    await page.goto(`${server.url}/dashboard/tenants/acme`);
    await page.getByLabel('Feature').selectOption('claude-3-haiku');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.waitForURL(/feature=claude-3-haiku/);
    const daily = await page
      .locator('#chart-daily svg.size-wide rect.bar')
      .evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    expect(daily.at(-1)).toBe(1_500);
    const hourly = await page
      .locator('#chart-hourly svg.size-wide rect.bar')
      .evaluateAll((bars) => bars.map((bar) => Number(bar.getAttribute('data-tokens'))));
    expect(hourly.reduce((a, b) => a + b, 0)).toBe(1_500);
    await expect(page.locator('#chart-daily line.quota').count()).resolves.toBe(0);
    await expect(page.getByRole('img', { name: /feature claude-3-haiku only/ }).count()).resolves.toBe(2);

    const link = page.getByRole('link', { name: 'Download CSV' });
    const href = await link.getAttribute('href');
    expect(href).toBe('/dashboard/tenants/acme/usage.csv?feature=claude-3-haiku');
    // The browser's session is all the link needs.
    const download = await page.request.get(`${server.url}${href}`);
    expect(download.status()).toBe(200);
    expect(download.headers()['content-type']).toBe('text/csv; charset=utf-8');
    const rows = (await download.text()).trimEnd().split('\r\n');
    const series = (await server.api('GET', '/api/usage/acme/series?granularity=day&feature=claude-3-haiku')).json;
    expect(rows[0]).toBe('start,tokens');
    expect(rows.slice(1)).toEqual(series.points.map((point: { start: string; tokens: number }) => `${point.start},${point.tokens}`));
    const loggedOut = await fetch(`${server.url}${href}`, { redirect: 'manual' });
    expect(loggedOut.status).toBe(303);
    expect(loggedOut.headers.get('location')).toContain('/login?next=');
  });

  test("the alert log lists every tenant's alerts newest first and filters to the undelivered", async () => {
    const db = server.database.db;
    const [delivered] = await db.query<{ id: string }>(
      "UPDATE alerts SET status = 'delivered', delivered_at = now(), attempts = 1 WHERE id = (SELECT min(id) FROM alerts WHERE tenant = 'initech') RETURNING id::text AS id",
    );
    await page.goto(`${server.url}/dashboard`);
    await page.getByRole('link', { name: 'Alerts', exact: true }).click();
    await page.waitForURL(`${server.url}/dashboard/alerts`);
    const rows = page.locator('#alert-log tbody tr');
    const ids = await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute('data-alert'))));
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    expect(new Set(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-tenant'))))).toEqual(new Set(['acme', 'initech']));
    await expect(page.locator(`tr[data-alert="${delivered!.id}"] [data-field="delivery"]`).textContent()).resolves.toMatch(/^\s*Yes/);
    await expect(page.locator('#alert-log thead').textContent()).resolves.toMatch(
      /Tenant.*Threshold.*Period.*Used at crossing.*Created.*Delivered.*Attempts.*Last error/s,
    );

    await page.getByRole('link', { name: 'Undelivered only' }).click();
    await page.waitForURL(/undelivered=1/);
    const statuses = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-status')));
    expect(statuses.length).toBe(ids.length - 1);
    expect(statuses).not.toContain('delivered');
    await expect(page.locator(`tr[data-alert="${delivered!.id}"]`).count()).resolves.toBe(0);
  });

  test('every page fits a 390 px phone and a 1280 px desktop: no sideways scroll, drawn text ≥ 11 px, every action on screen', async () => {
    // Names as long as the API allows (128 characters, no spaces) must wrap, not widen the page.
    const longName = `procurement.analytics@globex-${'x'.repeat(99)}`;
    expect((await server.api('PUT', `/api/tenants/${longName}`, { monthlyQuota: 1000 })).status).toBe(201);
    const pages: [string, string][] = [
      ['tenant-long-name', `/dashboard/tenants/${encodeURIComponent(longName)}`],
      ['unknown-long-name', `/dashboard/tenants/${'y'.repeat(128)}`],
      ['overview-long-search', `/dashboard?q=${'z'.repeat(128)}`],
      ['landing', '/'],
      ['overview', '/dashboard'],
      ['tenant', '/dashboard/tenants/acme'],
      ['tenant-feature', '/dashboard/tenants/acme?feature=gpt-4o'],
      ['alerts', '/dashboard/alerts'],
      ['keys', '/dashboard/keys'],
      ['api-reference', '/docs/api'],
    ];
    const found: string[] = [];
    for (const viewport of [PHONE, DESKTOP, { width: 320, height: 640 }, { width: 800, height: 900 }]) {
      await page.setViewportSize(viewport);
      for (const [name, path] of pages) {
        await page.goto(`${server.url}${path}`);
        const tooWide = await overflow();
        const text = await smallestDrawnText();
        const offscreen = await offscreenActions();
        if (tooWide > 0) found.push(`${path} at ${viewport.width}: ${tooWide} px too wide`);
        if (text < 11) found.push(`${path} at ${viewport.width}: drawn text ${text.toFixed(1)} px`);
        if (offscreen.length > 0) found.push(`${path} at ${viewport.width}: off-screen ${offscreen.join(', ')}`);
        if (viewport === PHONE || viewport === DESKTOP) await shoot(`all-${name}`, viewport);
      }
    }
    expect(found).toEqual([]);
    await page.setViewportSize(DESKTOP);
  });

  test('the tenant page: its weight and server time', async () => {
    const responses: Promise<number>[] = [];
    const onResponse = (response: { body(): Promise<Buffer> }) => {
      responses.push(
        response.body().then(
          (body) => body.length,
          () => 0,
        ),
      );
    };
    page.on('response', onResponse);
    await page.goto(`${server.url}/dashboard/tenants/acme`, { waitUntil: 'networkidle' });
    page.off('response', onResponse);
    const sizes = await Promise.all(responses);
    const bytes = sizes.reduce((a, b) => a + b, 0);
    const cookie = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const times: number[] = [];
    let html = '';
    let serverTiming = '';
    for (let run = 0; run < 5; run += 1) {
      const started = performance.now();
      const response = await fetch(`${server.url}/dashboard/tenants/acme`, { headers: { cookie } });
      html = await response.text();
      times.push(performance.now() - started);
      serverTiming = response.headers.get('server-timing') ?? '';
    }
    times.sort((a, b) => a - b);
    process.stdout.write(
      `tenant page: ${bytes} bytes uncompressed in ${sizes.length} responses (HTML ${Buffer.byteLength(html)}); ` +
        `render median ${times[2]!.toFixed(1)} ms (min ${times[0]!.toFixed(1)}), reads ${serverTiming}\n`,
    );
    expect(bytes).toBeGreaterThan(0);
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
    const usage = await waitFor(
      async () => {
        const answer = (await server.api('GET', '/api/usage/acme')).json;
        return answer.quota === 20_000 ? answer : undefined;
      },
      { timeoutMs: 5_000, what: 'the usage API to show the new quota' },
    );
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
    // On a phone the keys table is a card per key, its Revoke button on screen.
    await shoot('keys-with-key', PHONE);
    expect(await overflow()).toBeLessThanOrEqual(0);
    expect(await offscreenActions()).toEqual([]);
    await expect(page.getByRole('button', { name: /Revoke browser test key/ }).isVisible()).resolves.toBe(true);
    await page.setViewportSize(DESKTOP);
    await page.getByRole('button', { name: /Revoke browser test key/ }).click();
    await expect(page.getByRole('status').first().textContent()).resolves.toContain('revoked');
    await waitFor(async () => (await server.api('GET', '/api/usage/acme', undefined, secret)).status === 401, {
      what: 'the revoked key to get 401',
    });
  });

  test('the keys page lists fifty keys a page, newest first, and pages back through the rest without a repeat', async () => {
    for (let i = 0; i < 55; i++) expect((await server.api('POST', '/api/keys', { name: `paged key ${i}` })).status).toBe(201);
    const all = ((await server.api('GET', '/api/keys?limit=1000')).json as { keys: { id: string }[] }).keys.map((key) => key.id);
    const shown = () => page.locator('#keys tr[data-key]').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-key')));
    await page.goto(`${server.url}/dashboard/keys`);
    const pages = [await shown()];
    while (await page.getByRole('link', { name: 'Older keys' }).count()) {
      await page.getByRole('link', { name: 'Older keys' }).click();
      await page.waitForURL(/before=/);
      pages.push(await shown());
      await expect(page.getByRole('link', { name: 'Newest' }).count()).resolves.toBe(1);
    }
    expect(pages.length).toBe(Math.ceil(all.length / 50));
    expect(pages.slice(0, -1).every((keys) => keys.length === 50)).toBe(true);
    expect(pages.flat()).toEqual(all);

    const unknown = await page.goto(`${server.url}/dashboard/keys?before=key_doesnotexist`);
    expect(unknown?.status()).toBe(400);
    await expect(page.getByRole('alert').textContent()).resolves.toContain('key_doesnotexist');
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
