import { describe, expect, it } from 'vitest';
import { addCalendar, localDay, localHourStart, localHourStarts, localMidnight, periodOf, zoneOffsetMs } from './periods.ts';

describe('periods', () => {
  it('puts 23:59:59.999 on the last day of a month and 00:00 on the first of the next in different UTC periods', () => {
    expect(periodOf('UTC', Date.parse('2026-01-31T23:59:59.999Z')).startDay).toBe('2026-01-01');
    expect(periodOf('UTC', Date.parse('2026-02-01T00:00:00.000Z')).startDay).toBe('2026-02-01');
  });

  it('splits periods at local midnight in the tenant zone, across a DST change', () => {
    const march = periodOf('America/New_York', Date.parse('2026-03-15T12:00:00Z'));
    expect(march.start.toISOString()).toBe('2026-03-01T05:00:00.000Z');
    expect(march.end.toISOString()).toBe('2026-04-01T04:00:00.000Z');
    expect(periodOf('America/New_York', Date.parse('2026-04-01T03:59:59.999Z')).startDay).toBe('2026-03-01');
    expect(periodOf('America/New_York', Date.parse('2026-04-01T04:00:00.000Z')).startDay).toBe('2026-04-01');
  });

  it('handles zones with half-hour and quarter-hour offsets', () => {
    expect(periodOf('Asia/Kolkata', Date.parse('2026-02-28T18:29:59.999Z')).startDay).toBe('2026-02-01');
    expect(periodOf('Asia/Kolkata', Date.parse('2026-02-28T18:30:00.000Z')).startDay).toBe('2026-03-01');
    expect(zoneOffsetMs('Asia/Kathmandu', Date.parse('2026-06-01T00:00:00Z'))).toBe((5 * 60 + 45) * 60_000);
  });

  it("starts each hour on the zone's clock, so that no hour holds two local days", () => {
    const at = (zone: string, iso: string) => new Date(localHourStart(zone, Date.parse(iso))).toISOString();
    expect(at('UTC', '2026-05-31T18:15:00Z')).toBe('2026-05-31T18:00:00.000Z');
    expect(at('Europe/Berlin', '2026-03-29T01:30:00Z')).toBe('2026-03-29T01:00:00.000Z');
    // India (+05:30): 23:45 on 31 May and 00:00 on 1 June are in different hours.
    expect(at('Asia/Kolkata', '2026-05-31T18:15:00Z')).toBe('2026-05-31T17:30:00.000Z');
    expect(at('Asia/Kolkata', '2026-05-31T18:30:00Z')).toBe('2026-05-31T18:30:00.000Z');
    expect(at('Asia/Kathmandu', '2026-05-31T18:14:59Z')).toBe('2026-05-31T17:15:00.000Z');
    expect(at('America/St_Johns', '2026-06-01T02:45:00Z')).toBe('2026-06-01T02:30:00.000Z');
  });

  it("gives Lord Howe's half-hour DST change a half-hour hour, so that every start is its own start", () => {
    const starts = (from: string, to: string) =>
      localHourStarts('Australia/Lord_Howe', Date.parse(from), Date.parse(to)).starts.map((hour) =>
        new Date(hour).toISOString().slice(11, 16),
      );
    // 2026-10-04 02:00 (+10:30) becomes 02:30 (+11:00) at 15:30Z; 2027-04-04 02:00 (+11:00) becomes 01:30 (+10:30) at 15:00Z.
    expect(starts('2026-10-03T14:00:00Z', '2026-10-03T16:10:00Z')).toEqual(['13:30', '14:30', '15:30', '16:00']);
    expect(starts('2027-04-03T14:00:00Z', '2027-04-03T16:10:00Z')).toEqual(['14:00', '15:00', '15:30']);
    expect(new Date(localHourStart('Australia/Lord_Howe', Date.parse('2026-10-03T15:45:00Z'))).toISOString()).toBe(
      '2026-10-03T15:30:00.000Z',
    );
  });

  it('lists, across every offset change of two years, each quarter hour in the last start at or before it, and each start as its own', () => {
    const from = Date.parse('2025-01-01T00:00:00Z');
    const to = Date.parse('2027-01-01T00:00:00Z');
    const quarter = 900_000;
    for (const zone of [
      'UTC',
      'Europe/Berlin',
      'America/New_York',
      'Asia/Kolkata',
      'Asia/Kathmandu',
      'Australia/Adelaide',
      'Australia/Lord_Howe',
      'America/St_Johns',
      'Pacific/Chatham',
      'America/Santiago',
      'Africa/Casablanca',
    ]) {
      const { starts, end } = localHourStarts(zone, from, to);
      expect(starts[0], zone).toBe(localHourStart(zone, from));
      expect(
        starts.every((hour) => localHourStart(zone, hour) === hour),
        zone,
      ).toBe(true);
      expect(localHourStart(zone, end), zone).toBe(end);
      expect(localHourStart(zone, end - quarter), zone).toBe(starts.at(-1));
      // Instants a quarter hour apart for two days around every offset change, and 1 h 45 min apart
      // elsewhere: each is in the last start at or before it, no hour is an hour long or more, and
      // none spans two local days.
      const changes = starts.filter((hour, index) => index > 0 && zoneOffsetMs(zone, hour) !== zoneOffsetMs(zone, starts[index - 1]!));
      const instants = new Set<number>();
      for (let instant = from; instant < end; instant += 7 * quarter) instants.add(instant);
      for (const change of changes)
        for (let instant = change - 96 * quarter; instant < change + 96 * quarter; instant += quarter) instants.add(instant);
      let low = 0;
      for (const instant of [...instants].filter((instant) => instant >= starts[0]! && instant < end).sort((a, b) => a - b)) {
        while (low + 1 < starts.length && starts[low + 1]! <= instant) low++;
        expect(localHourStart(zone, instant), `${zone} ${new Date(instant).toISOString()}`).toBe(starts[low]);
        expect(instant - starts[low]!).toBeLessThan(3_600_000);
        expect(localDay(zone, instant)).toBe(localDay(zone, starts[low]!));
      }
      expect(localHourStarts(zone, from + 7 * 3_600_000 + 60_000, from + 7 * 3_600_000 + 60_000).starts, zone).toHaveLength(1);
    }
  });

  it('knows the local day of an instant and steps calendar days and months', () => {
    expect(localDay('Europe/Berlin', Date.parse('2026-06-30T22:00:00Z'))).toBe('2026-07-01');
    expect(addCalendar('2026-12-01', { months: 1 })).toBe('2027-01-01');
    expect(addCalendar('2026-02-28', { days: 1 })).toBe('2026-03-01');
  });
  it('starts a day at the first instant that falls on it, also where a DST change skips midnight', () => {
    // By search, minute by minute: the first instant whose local day is `day`.
    const firstInstant = (zone: string, day: string): number => {
      let instant = Date.parse(`${day}T00:00:00Z`) - 15 * 3_600_000;
      while (localDay(zone, instant) !== day) instant += 60_000;
      return instant;
    };
    const cases: [string, string][] = [
      ['America/Havana', '2025-03-09'], // midnight skipped: the day begins at 01:00 local, 05:00Z
      ['America/Santiago', '2025-09-07'],
      ['America/Asuncion', '2023-10-01'], // and a period start
      ['America/Sao_Paulo', '2018-11-04'],
      ['America/Havana', '2025-11-02'], // midnight twice (fall back): the first
      ['Asia/Amman', '2021-10-29'], // set back at 01:00 to 00:00: the day begins at the first midnight, 21:00Z
      ['Asia/Gaza', '2004-10-01'], // the same, on a period start
      ['America/New_York', '2026-03-08'],
      ['Europe/Berlin', '2026-10-25'],
      ['Australia/Lord_Howe', '2025-10-05'],
      ['Asia/Kolkata', '2026-03-01'],
      ['UTC', '2026-03-01'],
    ];
    for (const [zone, day] of cases) {
      expect(new Date(localMidnight(zone, day)).toISOString(), `${zone} ${day}`).toBe(new Date(firstInstant(zone, day)).toISOString());
    }
    expect(new Date(localMidnight('America/Havana', '2025-03-09')).toISOString()).toBe('2025-03-09T05:00:00.000Z');
  });
});
