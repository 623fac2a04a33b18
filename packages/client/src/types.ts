/**
 * The wire shapes the client speaks. They are written out here, not imported from the functions'
 * zod schemas, so that the client carries no dependency; tests/client.test.ts checks at compile
 * time that they still match the schemas the server validates with.
 */

/** One model call to meter. */
export interface TrackEvent {
  tenant: string;
  feature: string;
  tokens: number;
  /**
   * Idempotency key. Defaults to an id generated at `track()` time, which makes the client's own
   * retries safe; pass the model response's id to also make re-tracking after your process restarts safe.
   */
  id?: string;
  /** When the call happened; defaults to the time of `track()`, so a delayed send counts in the right period. */
  timestamp?: Date | string;
}

/** An event as the client sends it: every field fixed at `track()` time. */
export interface TrackedEvent {
  tenant: string;
  feature: string;
  tokens: number;
  id: string;
  timestamp: string;
}

export interface ErrorDetail {
  index?: number;
  field: string;
  message: string;
}

export interface ErrorBody {
  error: { code: string; message: string; requestId?: string; details?: ErrorDetail[] };
}

export interface IngestResult {
  accepted: number;
  duplicates: number;
  ids: string[];
  duplicateIndexes: number[];
}

/** `GET /api/usage/:tenant`. Token sums are 64-bit in the database, so they arrive as exact bigints. */
export interface UsageReport {
  tenant: string;
  period: { start: string; end: string };
  tokens: bigint;
  quota: bigint;
  percent: number;
  remaining: bigint;
  over: boolean;
  features: { feature: string; tokens: bigint }[];
  /** At the current pace (trailing 7-day rate): the period's total, and when the quota is reached (null: not this period). */
  forecast: { tokensAtPeriodEnd: bigint; quotaReachedAt: string | null };
  asOf: string;
}

/** What enforcement needs: may this tenant go on? */
export interface QuotaCheck {
  tenant: string;
  /** False when the tenant has no counted event yet (the server does not know it). */
  known: boolean;
  over: boolean;
  /** Tokens left in the period; null for an unknown tenant, whose quota is the server's default. */
  remaining: bigint | null;
  percent: number;
}
