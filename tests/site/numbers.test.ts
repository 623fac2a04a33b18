import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { servicesAvailable } from '../helpers/services.ts';
import { ADMIN_TOKEN, type SiteServer, loginCookie, seed, startSiteServer } from './harness.ts';

/** The number in the element carrying data-field="<field>" (separators dropped). */
function fieldNumber(html: string, field: string): number {
  const match = new RegExp(`data-field="${field}"[^>]*>([^<]*)<`).exec(html);
  if (!match) throw new Error(`no data-field="${field}" in the page`);
  return Number(match[1]!.replace(/[^\d.]/g, ''));
}

const rowOf = (html: string, tenant: string): string => {
  const start = html.indexOf(`data-tenant="${tenant}"`);
  if (start < 0) throw new Error(`no row for ${tenant}`);
  return html.slice(start, html.indexOf('</tr>', start));
};

describe.skipIf(!servicesAvailable)('numbers the dashboard shows', () => {
  let server: SiteServer;
  let cookie: string;
  const page = async (path: string) => {
    const started = performance.now();
    const response = await fetch(`${server.url}${path}`, { headers: { cookie }, redirect: 'manual' });
    const html = await response.text();
    return { status: response.status, html, ms: performance.now() - started };
  };

  beforeAll(async () => {
    server = await startSiteServer();
    await seed(server, [
      {
        tenant: 'exact',
        quota: 3_000_000_000_000,
        events: [
          ['gpt-4o', 999_999_999_999, 1],
          ['gpt-4o', 999_999_999_999, 2],
          ['o1', 123_456_789, 3],
        ],
      },
      { tenant: 'thirds', quota: 3, events: [['gpt-4o', 1, 1]] },
      { tenant: 'ops:team@acme.example', quota: 1000, events: [['gpt-4o', 42, 1]] },
    ]);
    cookie = await loginCookie(server.url);
  });

  afterAll(async () => {
    await server?.stop();
  });

  test('the tenant page shows exactly what GET /api/usage returns, beyond 2^53', async () => {
    for (const tenant of ['exact', 'thirds']) {
      const { status, html } = await page(`/dashboard/tenants/${tenant}`);
      expect(status).toBe(200);
      const usageResponse = await fetch(`${server.url}/api/usage/${tenant}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      // Read the API's numbers as digit strings: JSON.parse would round them past 2^53.
      const usage = (await usageResponse.text()).replace(/"(tokens|quota|remaining)":(\d+)/g, '"$1":"$2"');
      const api = JSON.parse(usage) as { tokens: string; quota: string; remaining: string; percent: number };
      const digits = (field: string) => new RegExp(`data-field="${field}"[^>]*>([^<]*)<`).exec(html)![1]!.replace(/,/g, '');
      expect(digits('tokens')).toBe(api.tokens);
      expect(digits('quota')).toBe(api.quota);
      expect(digits('remaining')).toBe(api.remaining);
      expect(fieldNumber(html, 'percent')).toBe(api.percent);
    }
  });

  test('a tenant named like an e-mail address (: and @) opens from the overview link, and its CSV too', async () => {
    const { html } = await page('/dashboard?q=ops');
    const href = /href="(\/dashboard\/tenants\/ops[^"]*)"/.exec(rowOf(html, 'ops:team@acme.example'))![1]!;
    expect(href).toBe('/dashboard/tenants/ops%3Ateam%40acme.example');
    const tenant = await page(href);
    expect(tenant.status).toBe(200);
    expect(fieldNumber(tenant.html, 'tokens')).toBe(42);
    const csvHref = /href="(\/dashboard\/tenants\/[^"]*usage\.csv[^"]*)"/.exec(tenant.html)![1]!.replace(/&amp;/g, '&');
    const csv = await page(csvHref);
    expect(csv.status).toBe(200);
    expect(csv.html.trimEnd().split('\n').at(-1)).toMatch(/,42\r?$/);
  });

  test('the overview row and its refresh fragment agree with GET /api/usage', async () => {
    const { html } = await page('/dashboard?sort=usage');
    const { html: fragment } = await page('/dashboard/rows?sort=usage');
    const usage = (await server.api('GET', '/api/usage/thirds')).json as { tokens: number; quota: number; percent: number };
    for (const source of [html, fragment]) {
      const row = rowOf(source, 'thirds');
      expect(fieldNumber(row, 'tokens')).toBe(usage.tokens);
      expect(fieldNumber(row, 'quota')).toBe(usage.quota);
      expect(fieldNumber(row, 'percent')).toBe(usage.percent);
    }
    expect(fragment).not.toContain('<html');
  });

  test('the overview stays one page of 50 with 1,000 tenants; its weight and render time are reported', async () => {
    await server.database.db.query(
      `INSERT INTO tenants (name, monthly_quota) SELECT 'bulk-' || lpad(i::text, 4, '0'), 100000 FROM generate_series(1, 1000) i`,
    );
    await server.database.db.query(
      `INSERT INTO usage_periods (tenant, period_start, tokens, events, last_event_at)
       SELECT 'bulk-' || lpad(i::text, 4, '0'), date_trunc('month', now() AT TIME ZONE 'UTC')::date, i * 97, i, now()
       FROM generate_series(1, 1000) i`,
    );
    await page('/dashboard');
    const timings: number[] = [];
    let html = '';
    for (let run = 0; run < 20; run += 1) {
      const result = await page('/dashboard');
      timings.push(result.ms);
      html = result.html;
    }
    expect(html).toContain('1,003 tenants');
    expect(html.match(/data-tenant="/g)).toHaveLength(50);
    // bulk-1000 uses 97,000 of 100,000: the most used by percent after the two seeded tenants.
    expect(rowOf(html, 'bulk-1000')).toContain('97%');

    const assets = [...html.matchAll(/(?:src|href)="(\/_astro\/[^"]+)"/g)].map((match) => match[1]!);
    let js = 0;
    let css = 0;
    for (const asset of assets) {
      const bytes = (await (await fetch(`${server.url}${asset}`)).arrayBuffer()).byteLength;
      if (asset.endsWith('.js')) js += bytes;
      else if (asset.endsWith('.css')) css += bytes;
    }
    expect(js).toBeGreaterThan(0);
    expect(js).toBeLessThanOrEqual(50 * 1024);
    timings.sort((a, b) => a - b);
    const median = timings[Math.floor(timings.length / 2)]!;
    process.stdout.write(
      `overview with 1,002 tenants: HTML ${html.length} B, JS ${js} B, CSS ${css} B (total ${html.length + js + css} B); ` +
        `server render median ${median.toFixed(1)} ms, max ${timings.at(-1)!.toFixed(1)} ms over ${timings.length} requests\n`,
    );
  });
});
