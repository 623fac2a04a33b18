/**
 * Slows repeated failed logins per client address: after two failures at full speed, each further
 * failure doubles the wait (0.5 s, 1 s, 2 s … up to 10 s) before the next attempt is answered.
 * Failures older than the window are forgotten; the table is bounded so a flood of addresses
 * cannot grow memory.
 */
export class LoginThrottle {
  private failures = new Map<string, { count: number; last: number }>();

  constructor(
    private readonly options = { freeFailures: 2, baseDelayMs: 500, maxDelayMs: 10_000, windowMs: 15 * 60_000, maxEntries: 10_000 },
  ) {}

  /** How long to hold the next attempt from `client` before answering it. */
  delayFor(client: string, now = Date.now()): number {
    const entry = this.failures.get(client);
    if (!entry || now - entry.last > this.options.windowMs) return 0;
    const over = entry.count - this.options.freeFailures;
    if (over <= 0) return 0;
    return Math.min(this.options.baseDelayMs * 2 ** (over - 1), this.options.maxDelayMs);
  }

  recordFailure(client: string, now = Date.now()): void {
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
