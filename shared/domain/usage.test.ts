import { describe, expect, it } from 'vitest';
import { periodOf } from './periods.ts';
import { forecast, forecastWindowStartDay } from './usage.ts';

const DAY = 86_400_000;

/** Forecast inputs for the period holding `now` in `timeZone`. */
function at(timeZone: string, nowIso: string, tokens: bigint, quota: bigint, windowTokens: bigint) {
  const now = Date.parse(nowIso);
  const period = periodOf(timeZone, now);
  const window = { startDay: forecastWindowStartDay(timeZone, period.startDay, now), tokens: windowTokens };
  return { input: { tokens, quota, timeZone, periodEnd: period.end, window, now }, window, period };
}

describe('forecast at the trailing 7-day rate', () => {
  it('takes the rate of today and the six days before it, mid-period in UTC', () => {
    const { input, window } = at('UTC', '2026-03-15T12:00:00Z', 20_000n, 30_000n, 6_500n);
    // 6.5 days since 2026-03-09 00:00 at 1,000 a day; 16.5 days left.
    expect(window.startDay).toBe('2026-03-09');
    expect(forecast(input)).toEqual({ tokensAtPeriodEnd: 36_500n, quotaReachedAt: '2026-03-25T12:00:00.000Z' });
  });

  it('uses the days since the period start early in a period, and says none when the pace stays under quota', () => {
    const { input, window } = at('UTC', '2026-03-02T12:00:00Z', 3_000n, 100_000n, 3_000n);
    expect(window.startDay).toBe('2026-03-01');
    // 2,000 a day for the 29.5 days left.
    expect(forecast(input)).toEqual({ tokensAtPeriodEnd: 62_000n, quotaReachedAt: null });
  });

  it('counts from local midnight in the tenant zone, across a DST change before the period end', () => {
    const { input, window, period } = at('America/New_York', '2026-03-03T05:00:00Z', 2_000n, 10_000n, 2_000n);
    expect(window.startDay).toBe('2026-03-01');
    expect(period.end.toISOString()).toBe('2026-04-01T04:00:00.000Z');
    const remaining = BigInt(Date.parse('2026-04-01T04:00:00Z') - Date.parse('2026-03-03T05:00:00Z'));
    const result = forecast(input);
    expect(result.tokensAtPeriodEnd).toBe(2_000n + (2_000n * remaining) / BigInt(2 * DAY));
    // 8,000 more at 1,000 per 24 hours: eight days later, the same UTC instant.
    expect(result.quotaReachedAt).toBe('2026-03-11T05:00:00.000Z');
  });

  it('starts the window on the local day of a half-hour zone, where the UTC date is still the previous month', () => {
    const now = Date.parse('2026-02-28T18:30:00Z');
    expect(periodOf('Asia/Kolkata', now).startDay).toBe('2026-03-01');
    expect(forecastWindowStartDay('Asia/Kolkata', '2026-03-01', now)).toBe('2026-03-01');
    // The first instant of the period: no time has passed, so no rate and no date yet.
    const { input } = at('Asia/Kolkata', '2026-02-28T18:30:00Z', 0n, 1_000n, 0n);
    expect(forecast(input)).toEqual({ tokensAtPeriodEnd: 0n, quotaReachedAt: null });
    expect(forecastWindowStartDay('Europe/Berlin', '2026-07-01', Date.parse('2026-07-20T22:30:00Z'))).toBe('2026-07-15');
  });

  it('gives the current time once the quota is reached, and the total unchanged without usage', () => {
    const over = at('UTC', '2026-03-10T00:00:00Z', 12_000n, 10_000n, 7_000n).input;
    expect(forecast(over).quotaReachedAt).toBe('2026-03-10T00:00:00.000Z');
    // At midnight today has not begun: the window is the six whole days from 2026-03-04.
    expect(forecast(over).tokensAtPeriodEnd).toBe(12_000n + (7_000n * BigInt(22 * DAY)) / BigInt(6 * DAY));
    const idle = at('UTC', '2026-03-10T00:00:00Z', 500n, 10_000n, 0n).input;
    expect(forecast(idle)).toEqual({ tokensAtPeriodEnd: 500n, quotaReachedAt: null });
  });

  it('caps the projection at the 64-bit limit every sum has, for a tenant already near it', () => {
    const max = 9_223_372_036_854_775_807n;
    const { input } = at('UTC', '2026-03-15T12:00:00Z', max, max, max);
    // Uncapped: 2^63 − 1 + (2^63 − 1) × 16.5 / 6.5, past what a 64-bit client can read.
    expect(forecast(input).tokensAtPeriodEnd).toBe(max);
  });

  it('says none when the quota would be reached only at the very end of the period', () => {
    // 6,000 over the six days from 2026-04-15 is 1,000 a day; 10 days left: exactly 10,000 at the end.
    const { input } = at('UTC', '2026-04-21T00:00:00Z', 0n, 10_000n, 6_000n);
    expect(forecast(input)).toEqual({ tokensAtPeriodEnd: 10_000n, quotaReachedAt: null });
    expect(forecast({ ...input, quota: 9_999n }).quotaReachedAt).toBe('2026-04-30T23:58:33.600Z');
  });
});
