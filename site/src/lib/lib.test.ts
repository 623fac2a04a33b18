import { describe, expect, test } from 'vitest';
import { firstTable } from './benchmarks.ts';
import { barChart, cumulative, niceCeiling } from './chart.ts';
import { parseOverviewQuery } from './overview.ts';
import { forecastSentence, parseTenantPageQuery } from './tenant-page.ts';
import type { TenantUsage } from '../../../shared/domain/usage.ts';
import { clientKey, safeNext, UNTRUSTED_FORWARDED } from './client.ts';
import { loadSiteConfig } from './config.ts';
import { csrfToken, issueSession, validCredential, validCsrfToken, verifySession } from './session.ts';
import { FailureThrottle } from '../../../shared/domain/throttle.ts';
import { loadConfig } from '../../../shared/platform/config.ts';
import type { Db } from '../../../shared/platform/db.ts';
import { applyTenantForm } from './tenant-form.ts';

const KEY = Buffer.alloc(32, 7);

describe('session cookie', () => {
  test('a fresh cookie verifies until it expires and not a millisecond after', () => {
    const { session, value } = issueSession(KEY, 60_000, 1_000);
    expect(verifySession(KEY, value, 60_999)).toEqual(session);
    expect(verifySession(KEY, value, 61_000)).toBeUndefined();
  });

  test('a cookie with a changed expiry, id or signature, or signed with another key, is refused', () => {
    const { session, value } = issueSession(KEY, 60_000, 0);
    const [id, expires, signature] = value.split('.') as [string, string, string];
    expect(verifySession(KEY, `${id}.${Number(expires) + 1}.${signature}`, 0)).toBeUndefined();
    expect(verifySession(KEY, `${id.replace(/^./, id[0] === 'A' ? 'B' : 'A')}.${expires}.${signature}`, 0)).toBeUndefined();
    expect(verifySession(KEY, `${id}.${expires}.${'A'.repeat(43)}`, 0)).toBeUndefined();
    expect(verifySession(Buffer.alloc(32, 8), value, 0)).toBeUndefined();
    expect(verifySession(KEY, undefined, 0)).toBeUndefined();
    expect(session.id).toHaveLength(24);
  });

  test('a CSRF token is valid only for the session it was made for', () => {
    const token = csrfToken(KEY, 'session-a');
    expect(validCsrfToken(KEY, 'session-a', token)).toBe(true);
    expect(validCsrfToken(KEY, 'session-b', token)).toBe(false);
    expect(validCsrfToken(KEY, 'session-a', '')).toBe(false);
    expect(validCsrfToken(KEY, undefined, token)).toBe(false);
    expect(validCsrfToken(KEY, 'session-a', null)).toBe(false);
  });

  test('the credential check accepts the token or the password and ignores an unset one', () => {
    expect(validCredential('token-1234567890ab', ['token-1234567890ab', undefined])).toBe(true);
    expect(validCredential('password-123', ['token-1234567890ab', 'password-123'])).toBe(true);
    expect(validCredential('', [undefined, undefined])).toBe(false);
    expect(validCredential('token-1234567890a', ['token-1234567890ab', undefined])).toBe(false);
  });
});

describe('login throttle', () => {
  test('two failures are free, then each further one doubles the wait up to the cap; success clears it', () => {
    const throttle = new FailureThrottle();
    const delays = [];
    for (let attempt = 0; attempt < 8; attempt += 1) {
      delays.push(throttle.delayFor('1.2.3.4', 0));
      throttle.recordFailure('1.2.3.4', 0);
    }
    expect(delays).toEqual([0, 0, 0, 500, 1_000, 2_000, 4_000, 8_000]);
    expect(throttle.delayFor('5.6.7.8', 0)).toBe(0);
    throttle.recordSuccess('1.2.3.4');
    expect(throttle.delayFor('1.2.3.4', 0)).toBe(0);
  });

  test('failures older than the window are forgotten and the table stays bounded', () => {
    const throttle = new FailureThrottle({ freeFailures: 0, baseDelayMs: 100, maxDelayMs: 1_000, windowMs: 1_000, maxEntries: 2 });
    throttle.recordFailure('a', 0);
    expect(throttle.delayFor('a', 500)).toBe(100);
    expect(throttle.delayFor('a', 2_000)).toBe(0);
    throttle.recordFailure('b', 0);
    throttle.recordFailure('c', 0);
    expect(throttle.delayFor('a', 0)).toBe(0);
    expect(throttle.delayFor('c', 0)).toBe(100);
  });
});

describe('failure throttle admission', () => {
  test('one attempt per client at a time, a cap on pending attempts, and a global failure budget per minute', () => {
    const throttle = new FailureThrottle({ maxPending: 2, maxGlobalFailuresPerMinute: 3 });
    const first = throttle.admit('a', 0);
    expect(first.admitted).toBe(true);
    expect(throttle.admit('a', 0).admitted).toBe(false);
    expect(throttle.admit('b', 0).admitted).toBe(true);
    // Two pending: a third client waits too.
    expect(throttle.admit('c', 0)).toEqual({ admitted: false, retryAfterMs: 1_000 });
    if (first.admitted) first.release();
    expect(throttle.admit('a', 0).admitted).toBe(true);
    const spare = new FailureThrottle({ maxGlobalFailuresPerMinute: 3 });
    for (const client of ['x', 'y', 'z']) spare.recordFailure(client, 60_000);
    // Three failures from three addresses spend the minute's budget for everyone, until the minute ends.
    expect(spare.admit('fresh', 90_000)).toEqual({ admitted: false, retryAfterMs: 30_000 });
    expect(spare.retryAfterMs('fresh', 90_000)).toBe(30_000);
    expect(spare.admit('fresh', 120_000).admitted).toBe(true);
  });
});

describe('chart geometry', () => {
  test('axis tops are round numbers at or above the value', () => {
    expect([0n, 1n, 7n, 10n, 11n, 240n, 2_600n, 10_000n].map(niceCeiling)).toEqual([1n, 1n, 10n, 10n, 20n, 250n, 5_000n, 10_000n]);
  });

  test('the quota line and the tallest bar sit on the same scale, bars never leave the plot', () => {
    const chart = barChart(
      cumulative([
        { start: 'a', tokens: 2_000n },
        { start: 'b', tokens: 6_000n },
      ]),
      { quota: 10_000n, size: 'narrow' },
    );
    expect(chart.bars.map((bar) => bar.tokens)).toEqual([2_000n, 8_000n]);
    expect(chart.ticks.at(-1)!.value).toBe(10_000n);
    expect(chart.quotaY).toBe(chart.plot.top);
    for (const bar of chart.bars) expect(bar.y + bar.height).toBeCloseTo(chart.plot.bottom, 0);
    expect(chart.bars[1]!.height / chart.bars[0]!.height).toBeCloseTo(4, 1);
  });

  test('a period drawn so far leaves room for its remaining days and projects to their end, on the scale', () => {
    const chart = barChart(
      [
        { start: 'a', tokens: 1_000n },
        { start: 'b', tokens: 3_000n },
      ],
      { slots: 4, projectTo: 12_000n, quota: 10_000n },
    );
    const slot = (chart.plot.right - chart.plot.left) / 4;
    expect(chart.bars[1]!.x + chart.bars[1]!.width).toBeLessThanOrEqual(chart.plot.left + 2 * slot);
    expect(chart.projection).toMatchObject({ x1: chart.plot.left + 2 * slot, y1: chart.bars[1]!.y, x2: chart.plot.right, value: 12_000n });
    expect(chart.ticks.at(-1)!.value).toBeGreaterThanOrEqual(12_000n);
    expect(chart.projection!.y2).toBeGreaterThanOrEqual(chart.plot.top);
    expect(barChart([{ start: 'a', tokens: 1n }], { slots: 1, projectTo: 5n }).projection).toBeUndefined();
  });

  test('the narrow size labels fewer days so labels never overlap', () => {
    const days = Array.from({ length: 31 }, (_, index) => ({ start: `d${index}`, tokens: 1n }));
    const narrow = barChart(days, { size: 'narrow' });
    const wide = barChart(days, { size: 'wide' });
    const spacing = (chart: typeof narrow) => chart.xLabels[1]!.x - chart.xLabels[0]!.x;
    expect(spacing(narrow)).toBeGreaterThanOrEqual(narrow.fontSize * 4);
    expect(wide.xLabels.length).toBeGreaterThan(narrow.xLabels.length);
  });

  test('an empty series draws no bars and does not divide by zero', () => {
    const chart = barChart([]);
    expect(chart.bars).toEqual([]);
    expect(chart.ticks.every((tick) => Number.isFinite(tick.y))).toBe(true);
  });
});

describe('tenant page query and forecast sentence', () => {
  test('a period is a month no later than the next one; a feature must be a feature name', () => {
    const params = (query: string) => new URLSearchParams(query);
    expect(parseTenantPageQuery(params(''), '2026-11-01')).toEqual({ startDay: '2026-11-01', feature: undefined });
    expect(parseTenantPageQuery(params('period=2026-10&feature=gpt-4o'), '2026-11-01')).toEqual({
      startDay: '2026-10-01',
      feature: 'gpt-4o',
    });
    expect(parseTenantPageQuery(params('period=2026-13'), '2026-11-01')).toMatchObject({ field: 'period' });
    // The next period may already hold events (timestamps a few minutes ahead) and their alerts.
    expect(parseTenantPageQuery(params('period=2026-12'), '2026-11-01')).toEqual({ startDay: '2026-12-01', feature: undefined });
    expect(parseTenantPageQuery(params('period=2027-01'), '2026-11-01')).toEqual({
      field: 'period',
      message: 'must not be after the next period (2026-12)',
    });
    expect(parseTenantPageQuery(params('period=2027-01'), '2026-12-01')).toEqual({ startDay: '2027-01-01', feature: undefined });
    expect(parseTenantPageQuery(params('feature=no%20spaces'), '2026-11-01')).toMatchObject({ field: 'feature' });
    // Year 0 is out of PostgreSQL's date range (it answered 500), and Date.UTC reads 0001 as 1901.
    for (const period of ['0000-01', '0001-01', '1999-12']) {
      expect(parseTenantPageQuery(params(`period=${period}`), '2026-11-01'), period).toEqual({
        field: 'period',
        message: 'must not be before 2000-01',
      });
    }
    expect(parseTenantPageQuery(params('period=2000-01'), '2026-11-01')).toEqual({ startDay: '2000-01-01', feature: undefined });
  });

  test('the overview drops a search PostgreSQL text cannot hold (NUL), as it drops an overlong one', () => {
    const params = (query: string) => new URLSearchParams(query);
    expect(parseOverviewQuery(params('q=a%00b&sort=name&page=2'))).toEqual({ q: '', sort: 'name', page: 2 });
    expect(parseOverviewQuery(params(`q=${'x'.repeat(129)}`)).q).toBe('');
    expect(parseOverviewQuery(params('q=%20acme%20')).q).toBe('acme');
  });

  test('the sentence says where the pace leads, in the tenant zone', () => {
    const usage = (tokens: bigint, startDay: string): TenantUsage => ({
      tenant: 'acme',
      timeZone: 'Europe/Berlin',
      quota: 10_000n,
      tokens,
      periodStartDay: '2026-11-01',
      periodStart: new Date('2026-10-31T23:00:00Z'),
      periodEnd: new Date('2026-11-30T23:00:00Z'),
      features: [],
      window: { startDay, tokens: 0n },
    });
    const format = (value: bigint) => value.toLocaleString('en-US');
    expect(
      forecastSentence({ usage: usage(2_000n, '2026-11-01'), forecast: { tokensAtPeriodEnd: 9_000n, quotaReachedAt: null } }, format),
    ).toBe(
      "At the pace since the period began, acme will use about 9,000 tokens by the period's last day (2026-11-30), within its quota of 10,000.",
    );
    // 23:30 UTC on the 24th is already the 25th in Berlin.
    expect(
      forecastSentence(
        { usage: usage(8_000n, '2026-11-18'), forecast: { tokensAtPeriodEnd: 12_000n, quotaReachedAt: '2026-11-24T23:30:00.000Z' } },
        format,
      ),
    ).toBe(
      "At the pace of the last 7 days, acme will reach its quota of 10,000 on 2026-11-25 and use about 12,000 tokens by the period's last day (2026-11-30).",
    );
    expect(
      forecastSentence(
        { usage: usage(10_000n, '2026-11-18'), forecast: { tokensAtPeriodEnd: 14_000n, quotaReachedAt: '2026-11-24T10:00:00.000Z' } },
        format,
      ),
    ).toBe(
      "acme has already reached its quota of 10,000; at the pace of the last 7 days it will use about 14,000 tokens by the period's last day (2026-11-30).",
    );
  });
});

describe('login throttle key', () => {
  test('behind a trusted proxy, the entry the proxy appended; without one, never an address the client wrote', () => {
    const request = (forwardedFor?: string) =>
      new Request('http://flagmeter.example/login', { headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor } });
    expect(clientKey(request('1.1.1.1, 10.0.0.7'), '10.0.0.2', { trustProxy: true })).toBe('10.0.0.7');
    expect(clientKey(request(), '10.0.0.2', { trustProxy: true })).toBe('10.0.0.2');
    // Astro hands over the first X-Forwarded-For entry as the client address when the Host matches
    // PUBLIC_URL: a new one each guess escaped the throttle.
    for (const spoofed of ['10.0.0.1', '10.0.0.2', '203.0.113.9']) {
      expect(clientKey(request(spoofed), spoofed, { trustProxy: false })).toBe(UNTRUSTED_FORWARDED);
    }
    expect(clientKey(request(), '192.0.2.4', { trustProxy: false })).toBe('192.0.2.4');
  });
});

describe('small helpers', () => {
  test('the benchmark table is the first pipe table, markup stripped', () => {
    const table = firstTable('# Bench\n\n| figure | value |\n|---|--:|\n| **ingest** | `51,000 req/s` |\n| read | 22,000 req/s |\n\ntext');
    expect(table).toEqual({
      header: ['figure', 'value'],
      rows: [
        ['ingest', '51,000 req/s'],
        ['read', '22,000 req/s'],
      ],
    });
    expect(firstTable('no table here')).toBeUndefined();
  });

  test('after login only dashboard paths are followed, never another origin', () => {
    expect(safeNext('/dashboard/tenants/acme')).toBe('/dashboard/tenants/acme');
    expect(safeNext('/dashboard?sort=usage')).toBe('/dashboard?sort=usage');
    for (const bad of ['https://evil.example', '//evil.example', '/dashboard//evil.example', '/dashboardevil', '/\\evil', null]) {
      expect(safeNext(bad)).toBe('/dashboard');
    }
  });

  test('site config names a bad variable and needs a credential to log in with', () => {
    expect(() => loadSiteConfig({ ADMIN_TOKEN: undefined }, {})).toThrow(/ADMIN_TOKEN/);
    expect(() => loadSiteConfig({ ADMIN_TOKEN: 'x'.repeat(16) }, { SESSION_SECRET: 'short' })).toThrow(/SESSION_SECRET/);
    expect(() => loadSiteConfig({ ADMIN_TOKEN: undefined }, { ADMIN_PASSWORD: 'short' })).toThrow(/ADMIN_PASSWORD/);
    const fromPassword = loadSiteConfig({ ADMIN_TOKEN: undefined }, { ADMIN_PASSWORD: 'long-enough-password' });
    expect(fromPassword.adminPassword).toBe('long-enough-password');
    const a = loadSiteConfig({ ADMIN_TOKEN: 'a'.repeat(16) }, {});
    const b = loadSiteConfig({ ADMIN_TOKEN: 'b'.repeat(16) }, {});
    expect(a.sessionKey.equals(b.sessionKey)).toBe(false);
  });
});

describe('tenant settings form', () => {
  test('a webhook host whose DNS lookup failed for now is shown beside its field, keeping what was typed (not a 500 page)', async () => {
    const form = new FormData();
    form.set('monthlyQuota', '1000');
    form.set('thresholds', '80, 100');
    form.set('slackWebhookUrl', 'https://hooks.slack.com/services/T/B/x');
    const config = loadConfig({ WEBHOOK_ALLOWED_HOSTS: 'hooks.slack.com' });
    // The form touches no database before the lookup fails.
    const db = {} as Db;
    const lookup = () => Promise.reject(Object.assign(new Error('getaddrinfo EAI_AGAIN hooks.slack.com'), { code: 'EAI_AGAIN' }));
    const result = await applyTenantForm({ db, config, lookup }, 'acme', form);
    expect(result).toEqual({
      ok: false,
      errors: { slackWebhookUrl: 'could not be looked up just now; retry shortly' },
      values: { monthlyQuota: '1000', thresholds: '80, 100', timeZone: '', slackWebhookUrl: 'https://hooks.slack.com/services/T/B/x' },
    });
  });
});
