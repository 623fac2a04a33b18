import { hourStart, localDay } from '../../shared/domain/periods.ts';
import type { QueueEntry } from '../../shared/platform/queue/types.ts';

/** Exact integer sum that stays a number while it is safe and becomes a bigint past 2^53. */
export type Sum = number | bigint;

export function addExact(sum: Sum, tokens: Sum): Sum {
  if (typeof sum === 'number' && typeof tokens === 'number') {
    const next = sum + tokens;
    if (Number.isSafeInteger(next)) return next;
  }
  return BigInt(sum) + BigInt(tokens);
}

export interface HourlyRow {
  tenant: string;
  feature: string;
  hour: string;
  tokens: Sum;
  events: number;
}
export interface DailyRow {
  tenant: string;
  feature: string;
  day: string;
  tokens: Sum;
  events: number;
}
export interface PeriodRow {
  tenant: string;
  period_start: string;
  tokens: Sum;
  events: number;
  last_event_at: string;
}

export interface Rollups {
  hourly: HourlyRow[];
  daily: DailyRow[];
  periods: PeriodRow[];
  events: number;
}

const QUARTER_HOUR_MS = 900_000;

/** The quarter hour an event is summed into, with its tenant and feature. */
export function quarterOf(timestamp: number): number {
  return Math.floor(timestamp / QUARTER_HOUR_MS);
}

interface Group {
  tenant: string;
  feature: string;
  quarter: number;
  tokens: Sum;
  events: number;
  lastAt: number;
}

function upsert<T extends { tokens: Sum; events: number }>(
  map: Map<string, T>,
  key: string,
  make: () => T,
  tokens: Sum,
  events: number,
): T {
  let row = map.get(key);
  if (!row) {
    row = make();
    map.set(key, row);
  }
  row.tokens = addExact(row.tokens, tokens);
  row.events += events;
  return row;
}

/** A batch's events summed per tenant, feature and quarter hour, and the tenants it touches. */
export interface QuarterHourGroups {
  groups: Group[];
  tenants: string[];
  events: number;
}

/**
 * The one pass over a batch's events. Zone offsets only change on quarter hours, so each group has
 * one local day and one period whatever its tenant's zone — the zone is needed only afterwards.
 */
export function groupByQuarterHour(entries: readonly QueueEntry[]): QuarterHourGroups {
  const groups = new Map<string, Group>();
  const tenants = new Set<string>();
  let events = 0;
  for (const entry of entries) {
    for (const event of entry.events) {
      events++;
      const quarter = quarterOf(event.timestamp);
      const key = `${event.tenant}\t${event.feature}\t${quarter}`;
      let group = groups.get(key);
      if (!group) {
        group = { tenant: event.tenant, feature: event.feature, quarter, tokens: 0, events: 0, lastAt: 0 };
        groups.set(key, group);
        tenants.add(event.tenant);
      }
      group.tokens = addExact(group.tokens, event.tokens);
      group.events++;
      if (event.timestamp > group.lastAt) group.lastAt = event.timestamp;
    }
  }
  return { groups: [...groups.values()], tenants: [...tenants].sort(), events };
}

/** Turns quarter-hour groups into hourly, daily and period rows. */
export function rollUp({ groups, events }: QuarterHourGroups, timeZoneOf: (tenant: string) => string): Rollups {
  const hourly = new Map<string, HourlyRow>();
  const daily = new Map<string, DailyRow>();
  const periods = new Map<string, PeriodRow>();
  for (const group of groups) {
    const { tenant, feature, tokens, events: count } = group;
    const instant = group.quarter * QUARTER_HOUR_MS;
    const hour = new Date(hourStart(instant)).toISOString();
    const day = localDay(timeZoneOf(tenant), instant);
    const periodStart = `${day.slice(0, 8)}01`;
    upsert(hourly, `${tenant}\t${hour}\t${feature}`, () => ({ tenant, feature, hour, tokens: 0, events: 0 }), tokens, count);
    upsert(daily, `${tenant}\t${day}\t${feature}`, () => ({ tenant, feature, day, tokens: 0, events: 0 }), tokens, count);
    const period = upsert(
      periods,
      `${tenant}\t${periodStart}`,
      () => ({ tenant, period_start: periodStart, tokens: 0, events: 0, last_event_at: '' }),
      tokens,
      count,
    );
    const lastAt = new Date(group.lastAt).toISOString();
    if (lastAt > period.last_event_at) period.last_event_at = lastAt;
  }
  // A stable order (the tables' key order) keeps lock acquisition in one order across transactions.
  const sorted = <T>(map: Map<string, T>): T[] => [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row);
  return { hourly: sorted(hourly), daily: sorted(daily), periods: sorted(periods), events };
}
