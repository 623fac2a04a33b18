/**
 * Slows guessing of a secret (the admin token, the dashboard password). Per client address: after
 * `freeFailures` failures, each further failure doubles the wait (0.5 s, 1 s, 2 s … up to 10 s) before
 * that client's next attempt is considered. While one attempt from a client is pending or waiting,
 * any other from it is refused outright, so parallel guesses cannot share one wait; and a global
 * budget of failures per minute bounds guesses from many addresses together. Failures older than the
 * window are forgotten; the table is bounded so a flood of addresses cannot grow memory.
 */
export interface ThrottleOptions {
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  windowMs: number;
  maxEntries: number;
  /** Attempts pending at once, all clients together. */
  maxPending: number;
  /** Failures per minute, all clients together, above which every attempt is refused until the minute ends. */
  maxGlobalFailuresPerMinute: number;
}

export type Admission = { admitted: true; delayMs: number; release(): void } | { admitted: false; retryAfterMs: number };

const DEFAULTS: ThrottleOptions = {
  freeFailures: 2,
  baseDelayMs: 500,
  maxDelayMs: 10_000,
  windowMs: 15 * 60_000,
  maxEntries: 10_000,
  maxPending: 32,
  maxGlobalFailuresPerMinute: 120,
};
const MINUTE_MS = 60_000;

export class FailureThrottle {
  private readonly options: ThrottleOptions;
  private failures = new Map<string, { count: number; last: number }>();
  private readonly pending = new Set<string>();
  private globalMinute = 0;
  private globalFailures = 0;

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
  }

  /** How long to hold the next attempt from `client` before answering it. */
  delayFor(client: string, now = Date.now()): number {
    const entry = this.failures.get(client);
    if (!entry || now - entry.last > this.options.windowMs) return 0;
    const over = entry.count - this.options.freeFailures;
    if (over <= 0) return 0;
    return Math.min(this.options.baseDelayMs * 2 ** (over - 1), this.options.maxDelayMs);
  }

  /** How long until an attempt from `client` may be considered at all: its own wait, or the global budget's. */
  retryAfterMs(client: string, now = Date.now()): number {
    const entry = this.failures.get(client);
    const own = entry ? Math.max(0, entry.last + this.delayFor(client, now) - now) : 0;
    return Math.max(own, this.globalWaitMs(now));
  }

  private globalWaitMs(now: number): number {
    const minute = Math.floor(now / MINUTE_MS);
    return minute === this.globalMinute && this.globalFailures >= this.options.maxGlobalFailuresPerMinute
      ? (minute + 1) * MINUTE_MS - now
      : 0;
  }

  /**
   * One attempt that may wait (the login form): refused while another from the client is pending,
   * while too many are pending overall, or while the global budget is spent; else admitted with the
   * delay to hold it, and `release()` to call once it is answered.
   */
  admit(client: string, now = Date.now()): Admission {
    const global = this.globalWaitMs(now);
    if (this.pending.has(client) || this.pending.size >= this.options.maxPending || global > 0) {
      return { admitted: false, retryAfterMs: Math.max(global, this.delayFor(client, now), 1_000) };
    }
    this.pending.add(client);
    return { admitted: true, delayMs: this.delayFor(client, now), release: () => this.pending.delete(client) };
  }

  /** One refused attempt from `client`; `global: false` leaves the all-clients budget alone. */
  recordFailure(client: string, now = Date.now(), options: { global?: boolean } = {}): void {
    const minute = Math.floor(now / MINUTE_MS);
    if (minute !== this.globalMinute) {
      this.globalMinute = minute;
      this.globalFailures = 0;
    }
    if (options.global !== false) this.globalFailures++;
    const entry = this.failures.get(client);
    const count = entry && now - entry.last <= this.options.windowMs ? entry.count + 1 : 1;
    this.failures.delete(client);
    if (this.failures.size >= this.options.maxEntries) {
      // Map order is insertion order: the first key is the least recently failed client.
      const oldest = this.failures.keys().next().value;
      if (oldest !== undefined) this.failures.delete(oldest);
    }
    this.failures.set(client, { count, last: now });
  }

  recordSuccess(client: string): void {
    this.failures.delete(client);
  }
}

/**
 * The client address a trusted proxy appended to X-Forwarded-For: its last entry (earlier ones are
 * client-written). Refused credentials are counted against it behind Traefik (TRUST_PROXY=true).
 */
export function lastForwardedFor(header: string | readonly string[] | null | undefined): string | undefined {
  const value = typeof header === 'string' ? header : header?.at(-1);
  return value?.split(',').at(-1)?.trim() || undefined;
}
