import type { ErrorBody, ErrorDetail } from './types.ts';

/** A non-2xx answer, with the server's error code, message, per-field details and request id. */
export class FlagMeterError extends Error {
  override name = 'FlagMeterError';
  readonly status: number;
  readonly code: string;
  readonly details: ErrorDetail[];
  /** The server's id of the request (its logs carry it), when it answered with one. */
  readonly requestId: string | undefined;

  // Fields assigned by hand, not parameter properties: the source must stay runnable by type stripping.
  constructor(status: number, code: string, message: string, details: ErrorDetail[] = [], requestId?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.requestId = requestId;
  }
}

export interface RetryPolicy {
  /** First backoff ceiling; it doubles per attempt. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** A batch still undelivered this long after its first attempt is given up and reported. */
  giveUpAfterMs: number;
}

export interface Transport {
  baseUrl: string;
  apiKey: string;
  fetch: typeof fetch;
  timeoutMs: number;
  /** Aborted when close() runs out of time: pending requests and backoff sleeps end at once. */
  closing: AbortSignal;
}

export interface HttpAnswer {
  status: number;
  retryAfterMs: number | undefined;
  body: unknown;
}

/** Every answer after which resending the same event ids is safe and may succeed. */
const RETRYABLE_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);
export const isRetryableStatus = (status: number): boolean => RETRYABLE_STATUSES.has(status);

/** A server asking for more than this is misconfigured; waiting longer would only stall shutdown. */
const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** `Retry-After` as seconds or an HTTP date, in milliseconds from now. */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined;
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1_000 : Date.parse(header) - now;
  if (Number.isNaN(ms)) return undefined;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/**
 * Exponential backoff with full jitter, so that many clients recovering together spread out;
 * the server's `Retry-After` is a floor, never shortened.
 */
export function retryDelay(attempt: number, policy: RetryPolicy, retryAfterMs: number | undefined, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** attempt);
  const jittered = random() * ceiling;
  return retryAfterMs === undefined ? jittered : Math.max(retryAfterMs, jittered);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The fields that carry 64-bit sums; they are read as bigints so that no digit is lost past 2^53. */
const EXACT_KEYS = new Set(['tokens', 'quota', 'remaining', 'tokensAtPeriodEnd']);

type SourceReviver = (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown;

function reviveExact(key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== 'number' || !EXACT_KEYS.has(key) || !Number.isInteger(value)) return value;
  // Runtimes without JSON.parse source access still get a bigint, exact up to 2^53.
  return context?.source === undefined ? BigInt(value) : BigInt(context.source);
}

export function parseJson(text: string, exact: boolean): unknown {
  if (text === '') return undefined;
  return exact ? (JSON.parse as (text: string, reviver: SourceReviver) => unknown)(text, reviveExact) : JSON.parse(text);
}

export function errorOf(answer: HttpAnswer): FlagMeterError {
  const error = (answer.body as Partial<ErrorBody> | undefined)?.error;
  return new FlagMeterError(
    answer.status,
    error?.code ?? 'http_error',
    error?.message ?? `HTTP ${answer.status}`,
    error?.details ?? [],
    typeof error?.requestId === 'string' ? error.requestId : undefined,
  );
}

/** One request; a network failure or timeout rejects, every HTTP answer resolves. */
export async function request(transport: Transport, method: 'GET' | 'POST', path: string, body: string | undefined, exact = false): Promise<HttpAnswer> {
  const response = await transport.fetch(`${transport.baseUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${transport.apiKey}`,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.any([AbortSignal.timeout(transport.timeoutMs), transport.closing]),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = parseJson(text, exact);
  } catch {
    // A proxy's HTML error page: the status still decides what happens.
    parsed = undefined;
  }
  return { status: response.status, retryAfterMs: parseRetryAfter(response.headers.get('retry-after')), body: parsed };
}
