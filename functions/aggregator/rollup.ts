import { localDay, localHourStart } from '../../shared/domain/periods.ts';
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

const QUARTER_HOUR_MS = 900_000;

/** The quarter hour an event is summed into, with its tenant and feature. */
export function quarterOf(timestamp: number): number {
  return Math.floor(timestamp / QUARTER_HOUR_MS);
}

export interface Group {
  tenant: string;
  feature: string;
  quarter: number;
  tokens: Sum;
  events: number;
  lastAt: number;
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
 * Groups are found through a map per tenant and feature, so no key string is built per event.
 */
export function groupByQuarterHour(entries: readonly QueueEntry[]): QuarterHourGroups {
  const byTenant = new Map<string, Map<string, Group[]>>();
  const groups: Group[] = [];
  let events = 0;
  for (const entry of entries) {
    for (const event of entry.events) {
      events++;
      const quarter = quarterOf(event.timestamp);
      let byFeature = byTenant.get(event.tenant);
      if (!byFeature) {
        byFeature = new Map();
        byTenant.set(event.tenant, byFeature);
      }
      let quarters = byFeature.get(event.feature);
      if (!quarters) {
        quarters = [];
        byFeature.set(event.feature, quarters);
      }
      // A feature's events in one batch span a few quarter hours at most: a short list beats a map.
      let group = quarters.find((candidate) => candidate.quarter === quarter);
      if (!group) {
        group = { tenant: event.tenant, feature: event.feature, quarter, tokens: 0, events: 0, lastAt: 0 };
        quarters.push(group);
        groups.push(group);
      }
      group.tokens = addExact(group.tokens, event.tokens);
      group.events++;
      if (event.timestamp > group.lastAt) group.lastAt = event.timestamp;
    }
  }
  return { groups, tenants: [...byTenant.keys()].sort(), events };
}

/**
 * A PostgreSQL array literal of tenant or feature names, each quoted (so that a name such as NULL
 * stays a name); their patterns admit no character that needs escaping inside quotes.
 */
export const nameArray = (names: readonly string[]): string => (names.length === 0 ? '{}' : `{"${names.join('","')}"}`);

/** A PostgreSQL array literal of numbers, bigints or dates ('YYYY-MM-DD'), which need no quotes. */
export const valueArray = (values: readonly (string | Sum)[]): string => `{${values.join(',')}}`;

/**
 * The groups as the columns of one `unnest`, each a PostgreSQL array literal: the commit sends each
 * group once, and the database sums them into hourly, daily and period rows. Seven strings instead
 * of three arrays of row objects and their JSON keep a round's memory and the driver's work small.
 */
export interface GroupColumns {
  tenant: string;
  feature: string;
  /** The start of the group's hour in its tenant's zone (`localHourStart`), in quarter hours since 1970: the hourly row's hour. */
  hour: string;
  /** The group's calendar day in its tenant's zone: the daily row's day, and its period's. */
  day: string;
  tokens: string;
  events: string;
  lastAt: string;
}

export function groupColumns(groups: readonly Group[], timeZoneOf: (tenant: string) => string): GroupColumns {
  const tenant: string[] = [];
  const feature: string[] = [];
  const hour: number[] = [];
  const day: string[] = [];
  const tokens: Sum[] = [];
  const events: number[] = [];
  const lastAt: number[] = [];
  const zones = new Map<string, Map<number, { hour: number; day: string }>>();
  for (const group of groups) {
    const zone = timeZoneOf(group.tenant);
    let quarters = zones.get(zone);
    if (!quarters) {
      quarters = new Map();
      zones.set(zone, quarters);
    }
    let local = quarters.get(group.quarter);
    if (local === undefined) {
      const start = group.quarter * QUARTER_HOUR_MS;
      local = { hour: localHourStart(zone, start) / QUARTER_HOUR_MS, day: localDay(zone, start) };
      quarters.set(group.quarter, local);
    }
    tenant.push(group.tenant);
    feature.push(group.feature);
    hour.push(local.hour);
    day.push(local.day);
    tokens.push(group.tokens);
    events.push(group.events);
    lastAt.push(group.lastAt);
  }
  return {
    tenant: nameArray(tenant),
    feature: nameArray(feature),
    hour: valueArray(hour),
    day: valueArray(day),
    tokens: valueArray(tokens),
    events: valueArray(events),
    lastAt: valueArray(lastAt),
  };
}
