import type { TenantStatus } from '../../../shared/domain/tenants.ts';

const grouped = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/** Exact token counts with thousands separators (bigint in, no float rounding). */
export const formatTokens = (value: bigint | number): string => grouped.format(value);

export const formatCompact = (value: bigint | number): string => compact.format(value);

/** Percent as computed by percentOf (two decimals, exact); trailing zeros dropped. */
export const formatPercent = (percent: number): string => `${grouped.format(percent)}%`;

/** Status words shown beside every bar, so the state never rests on colour alone. */
export const STATUS_LABEL: Record<TenantStatus, string> = {
  ok: 'OK',
  warning: 'Near quota',
  over: 'Over quota',
};

const dateTimeFormats = new Map<string, Intl.DateTimeFormat>();

/** 'YYYY-MM-DD HH:mm' in `timeZone`: unambiguous, sortable, the same for every reader. */
export function formatDateTime(iso: string | Date, timeZone = 'UTC'): string {
  let format = dateTimeFormats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-CA', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
    });
    dateTimeFormats.set(timeZone, format);
  }
  const parts = Object.fromEntries(format.formatToParts(new Date(iso)).map((part) => [part.type, part.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}

/** "5 min ago" style age, for scanning a table; the exact time goes in the title/datetime. */
export function formatAge(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3_600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3_600)} h ago`;
  return `${Math.floor(seconds / 86_400)} d ago`;
}
