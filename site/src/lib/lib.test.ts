import { describe, expect, test } from 'vitest';
import { firstTable } from './benchmarks.ts';
import { barChart, cumulative, niceCeiling } from './chart.ts';
import { safeNext } from './client.ts';
import { loadSiteConfig } from './config.ts';
import { csrfToken, issueSession, validCredential, validCsrfToken, verifySession } from './session.ts';
import { FailureThrottle } from '../../../shared/domain/throttle.ts';

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
    const chart = barChart(cumulative([{ start: 'a', tokens: 2_000n }, { start: 'b', tokens: 6_000n }]), { quota: 10_000n, width: 400, height: 200 });
    expect(chart.bars.map((bar) => bar.tokens)).toEqual([2_000n, 8_000n]);
    expect(chart.ticks.at(-1)!.value).toBe(10_000n);
    expect(chart.quotaY).toBe(chart.plot.top);
    for (const bar of chart.bars) expect(bar.y + bar.height).toBeCloseTo(chart.plot.bottom, 0);
    expect(chart.bars[1]!.height / chart.bars[0]!.height).toBeCloseTo(4, 1);
  });

  test('an empty series draws no bars and does not divide by zero', () => {
    const chart = barChart([]);
    expect(chart.bars).toEqual([]);
    expect(chart.ticks.every((tick) => Number.isFinite(tick.y))).toBe(true);
  });
});

describe('small helpers', () => {
  test('the benchmark table is the first pipe table, markup stripped', () => {
    const table = firstTable('# Bench\n\n| figure | value |\n|---|--:|\n| **ingest** | `51,000 req/s` |\n| read | 22,000 req/s |\n\ntext');
    expect(table).toEqual({ header: ['figure', 'value'], rows: [['ingest', '51,000 req/s'], ['read', '22,000 req/s']] });
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
