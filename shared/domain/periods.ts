/**
 * Quota periods are calendar months in the tenant's time zone (UTC unless set); daily rollups are
 * calendar days in that zone; hourly rollups are that zone's hours (`localHourStart`): UTC hours
 * wherever the offset is a whole number of hours.
 */

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
const OFFSET_BUCKET_MS = 15 * 60_000;
const formatters = new Map<string, Intl.DateTimeFormat>();
const offsetCache = new Map<string, number>();

// A zone name starts with a letter: this refuses UTC offsets such as "+0530" or "+14:00", which Node
// reads as UTC+14 but PostgreSQL reads as a POSIX zone (UTC−14), so the two would disagree on periods.
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+\-]*(\/[A-Za-z0-9_+\-]+)*$/;

/** True when `timeZone` is a zone name (not an offset) that Node's zone database knows. */
export function isValidTimeZone(timeZone: string): boolean {
  if (timeZone.length > 64 || !ZONE_NAME.test(timeZone)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

function computeOffset(timeZone: string, instantMs: number): number {
  const parts: Record<string, number> = {};
  for (const part of formatterFor(timeZone).formatToParts(instantMs)) {
    if (part.type !== 'literal') parts[part.type] = Number(part.value);
  }
  const asUtc = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
  return asUtc - Math.floor(instantMs / 1000) * 1000;
}

/** Milliseconds to add to a UTC instant to get the wall-clock time in `timeZone`. */
export function zoneOffsetMs(timeZone: string, instantMs: number): number {
  if (timeZone === 'UTC') return 0;
  // Zone transitions fall on quarter hours, so the offset is constant within a 15-minute bucket.
  const key = `${timeZone}|${Math.floor(instantMs / OFFSET_BUCKET_MS)}`;
  let offset = offsetCache.get(key);
  if (offset === undefined) {
    if (offsetCache.size > 50_000) offsetCache.clear();
    // Read at the bucket's start, so the answer does not depend on which instant of it came first
    // (a few zones changed at :01 before 2012; none does in the data ingest accepts).
    offset = computeOffset(timeZone, Math.floor(instantMs / OFFSET_BUCKET_MS) * OFFSET_BUCKET_MS);
    offsetCache.set(key, offset);
  }
  return offset;
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** 'YYYY-MM-DD' of the calendar day the instant falls on in `timeZone`. */
export function localDay(timeZone: string, instantMs: number): string {
  const local = new Date(instantMs + zoneOffsetMs(timeZone, instantMs));
  return `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`;
}

/** 'YYYY-MM-01' of the quota period (calendar month in `timeZone`) the instant falls in. */
export function periodStartDay(timeZone: string, instantMs: number): string {
  return `${localDay(timeZone, instantMs).slice(0, 8)}01`;
}

/**
 * Start of the hour the instant falls in on `timeZone`'s clock: its local time cut to the full hour,
 * by the offset in force at the instant. The UTC hour where that offset is a whole number of hours;
 * at :30 UTC in India (+05:30), Iran, Adelaide or Newfoundland, at :15 in Nepal (+05:45), so that their days
 * and months begin on an hour's start and no hour holds the end of one period and the start of the
 * next. Where the offset changed by half an hour since that full hour (Australia/Lord_Howe's DST), the
 * hour starts at the change, a half hour long: the start of a start is itself. Offsets change on
 * quarter hours only, so every instant of a quarter hour has the same start.
 */
export function localHourStart(timeZone: string, instantMs: number): number {
  const offset = zoneOffsetMs(timeZone, instantMs);
  const local = instantMs + offset;
  let start = instantMs - (((local % HOUR_MS) + HOUR_MS) % HOUR_MS);
  while (start < instantMs && zoneOffsetMs(timeZone, start) !== offset) start += OFFSET_BUCKET_MS;
  return Math.min(start, instantMs);
}

/**
 * The starts of `timeZone`'s hours (`localHourStart`) from the one holding `fromMs` to the one holding
 * `toMs`, oldest first, and `end`, the start of the hour after. Wherever the offset holds for a day,
 * that day's hours follow each other an hour apart, so the zone's rules are read about once a day
 * (offsets change at most once a day) and hour by hour only around a change: a 400-day range reads
 * ~400 offsets, not ~9,600 (50–85 ms).
 */
export function localHourStarts(timeZone: string, fromMs: number, toMs: number): { starts: number[]; end: number } {
  const starts: number[] = [];
  const last = localHourStart(timeZone, toMs);
  let hour = localHourStart(timeZone, fromMs);
  while (hour <= last) {
    const offset = zoneOffsetMs(timeZone, hour);
    if ((hour + offset) % HOUR_MS === 0 && zoneOffsetMs(timeZone, hour + DAY_MS) === offset) {
      for (let n = 0; n < 24 && hour <= last; n++, hour += HOUR_MS) starts.push(hour);
    } else {
      // Around a change the next hour may start sooner (Pacific/Chatham's change comes at :45 of its
      // hour): the first quarter hour past this hour's own.
      starts.push(hour);
      let next = hour + OFFSET_BUCKET_MS;
      while (localHourStart(timeZone, next) === hour) next += OFFSET_BUCKET_MS;
      hour = localHourStart(timeZone, next);
    }
  }
  return { starts, end: hour };
}

/**
 * The UTC instant `day` ('YYYY-MM-DD') begins in `timeZone`: local midnight (the first, where clocks
 * set back at midnight make two), or, where a DST change skips midnight (America/Havana in March,
 * America/Santiago in September), the moment the clocks jump.
 */
export function localMidnight(timeZone: string, day: string): number {
  const [year, month, date] = day.split('-').map(Number) as [number, number, number];
  const wallClock = Date.UTC(year, month - 1, date);
  const offset = zoneOffsetMs(timeZone, wallClock);
  const guess = wallClock - offset;
  if (zoneOffsetMs(timeZone, guess) === offset) {
    // Clocks set back across midnight (Asia/Amman, 2021-10-29) make it twice: by the offset in force
    // a day before, the day may begin an hour earlier.
    const before = zoneOffsetMs(timeZone, wallClock - DAY_MS);
    if (before === offset) return guess;
    const earlier = wallClock - before;
    return earlier < guess && localDay(timeZone, earlier) === day ? earlier : guess;
  }
  // An offset change near midnight: of midnight by each offset in force around it, the earliest
  // instant that falls on `day` (by the offset before a skip, midnight is the jump itself).
  let start: number | undefined;
  for (const around of [wallClock - DAY_MS, guess, wallClock + DAY_MS]) {
    const instant = wallClock - zoneOffsetMs(timeZone, around);
    if (localDay(timeZone, instant) === day && (start === undefined || instant < start)) start = instant;
  }
  return start ?? wallClock - zoneOffsetMs(timeZone, guess);
}

/** 'YYYY-MM-DD' of the day after `day`, or the first of the next month with `months`. */
export function addCalendar(day: string, { days = 0, months = 0 }: { days?: number; months?: number }): string {
  const [year, month, date] = day.split('-').map(Number) as [number, number, number];
  const next = new Date(Date.UTC(year, month - 1 + months, date + days));
  return `${pad(next.getUTCFullYear(), 4)}-${pad(next.getUTCMonth() + 1)}-${pad(next.getUTCDate())}`;
}

export interface Period {
  /** 'YYYY-MM-01' in the tenant's zone: the key of the period in the rollups. */
  startDay: string;
  start: Date;
  end: Date;
}

/** The quota period containing `instantMs` for a tenant in `timeZone`. */
export function periodOf(timeZone: string, instantMs: number): Period {
  const startDay = periodStartDay(timeZone, instantMs);
  return {
    startDay,
    start: new Date(localMidnight(timeZone, startDay)),
    end: new Date(localMidnight(timeZone, addCalendar(startDay, { months: 1 }))),
  };
}
