import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Db } from '../platform/db.ts';
import { ApiError } from '../platform/http/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { FailureThrottle, lastForwardedFor } from './throttle.ts';

export type Principal = { kind: 'admin' } | { kind: 'key'; id: string; tenant: string | null };

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
}

const KEY_PREFIX = 'fm_';

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new API key: the secret (shown once) and what is stored of it. */
export function generateApiKey(): { key: string; hash: string; prefix: string } {
  const key = `${KEY_PREFIX}${randomBytes(24).toString('base64url')}`;
  return { key, hash: hashSecret(key), prefix: key.slice(0, 10) };
}

export function generateAdminToken(): string {
  return `fma_${randomBytes(24).toString('base64url')}`;
}

interface StoredKey {
  id: string;
  tenant: string | null;
}

/**
 * Active key hashes, held in memory so that ingest authenticates without a database round trip and
 * keeps working while PostgreSQL is away (with the last set it read); reloaded every `refreshMs`, so
 * a revoked key stops working on every instance within about that time.
 */
export class KeyStore {
  private keys = new Map<string, StoredKey>();
  /** Bumped whenever the set of keys may have changed: what was authenticated before is checked again. */
  generation = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Loads started, and the latest one whose answer was used: an older answer never replaces a newer. */
  private loadsStarted = 0;
  private loadUsed = 0;
  /**
   * Keys made or revoked through this process, numbered. A load that was under way meanwhile may
   * have missed them, so they are replayed over its answer; the ones before its start it has seen
   * (they were committed before this process applied them here).
   */
  private changes: { number: number; apply: (keys: Map<string, StoredKey>) => void }[] = [];
  private changeCount = 0;
  /** When the set in use was read (Date.now()); 0 before the first load. */
  private loadedAt = 0;
  private started = false;
  private loading = 0;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
    private readonly refreshMs = 2_000,
  ) {}

  async start(): Promise<void> {
    this.started = true;
    await this.refresh().catch((error: Error) => this.logger.warn({ err: error.message }, 'api keys not loaded yet'));
    // A load every refreshMs, even while an earlier one hangs on a dead connection (answers are used
    // newest first, so overlapping is safe), but no more than two at once while the database is away.
    this.timer = setInterval(() => {
      if (this.loading >= 2) return;
      this.loading++;
      this.refresh()
        .catch((error: Error) => this.logger.warn({ err: error.message }, 'api key refresh failed'))
        .finally(() => this.loading--);
    }, this.refreshMs);
    this.timer.unref();
  }

  async refresh(): Promise<void> {
    const load = ++this.loadsStarted;
    const changesBefore = this.changeCount;
    const rows = await this.db.query<{ id: string; tenant: string | null; key_hash: string }>(
      'SELECT id, tenant, key_hash FROM api_keys WHERE revoked_at IS NULL',
    );
    if (load < this.loadUsed) return;
    this.loadUsed = load;
    const next = new Map<string, StoredKey>();
    for (const row of rows) next.set(row.key_hash, { id: row.id, tenant: row.tenant });
    this.changes = this.changes.filter((change) => change.number > changesBefore);
    for (const change of this.changes) change.apply(next);
    this.keys = next;
    this.loadedAt = Date.now();
    this.generation++;
  }

  /**
   * After a pause in which no load ran — an AWS Lambda instance is frozen between invocations, and
   * its timers with it — loads now, before the invocation authenticates anyone: a key revoked (or
   * made) meanwhile is known. Waits at most `maxWaitMs`; the last set stays if the database is slower.
   */
  async catchUp(maxWaitMs = 1_000): Promise<void> {
    // A runtime made without keys (health, the aggregator) never loads them.
    if (!this.started || Date.now() - this.loadedAt <= this.refreshMs) return;
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, maxWaitMs)));
    const load = this.refresh().catch((error: Error) => this.logger.warn({ err: error.message }, 'api key refresh failed'));
    await Promise.race([load, waited]);
    clearTimeout(timer);
  }

  private change(apply: (keys: Map<string, StoredKey>) => void): void {
    apply(this.keys);
    this.changes.push({ number: ++this.changeCount, apply });
    this.generation++;
  }

  /** Forget a key at once in this process (the others catch up on their next refresh). */
  revoke(id: string): void {
    this.change((keys) => {
      for (const [hash, key] of keys) if (key.id === id) keys.delete(hash);
    });
  }

  add(hash: string, key: StoredKey): void {
    this.change((keys) => keys.set(hash, key));
  }

  findByHash(hash: string): StoredKey | undefined {
    if (this.loadedAt === 0) throw new ApiError('service_unavailable', 'API keys cannot be checked yet; retry shortly', undefined, 1);
    return this.keys.get(hash);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** The shape of every API key generateApiKey makes: KEY_PREFIX and 24 random bytes in base64url. */
const API_KEY_SHAPE = new RegExp(`^Bearer\\s+${KEY_PREFIX}[A-Za-z0-9_-]{32}\\s*$`, 'i');

/** A presented credential that cannot be an API key: a guess at the admin token. */
function isAdminGuess(header: string | undefined): boolean {
  return header !== undefined && !API_KEY_SHAPE.test(header);
}

/** Distinct credentials remembered between key refreshes; past it the memo starts over (a flood of valid keys only costs hashing). */
const MEMO_LIMIT = 1_024;

export class Authenticator {
  private readonly adminHash: Buffer | undefined;
  /**
   * Authorization header → who it authenticated, valid for one key-store generation: a SHA-256 per
   * request was the largest cost of small requests. Every refresh (every 2 s), revoke or add starts a
   * new generation, so a revoked key stops working exactly as soon as it did without the memo. Only
   * successes are remembered: unknown keys cannot fill it.
   */
  private memo = new Map<string, Principal>();
  private memoGeneration = -1;
  /**
   * Refused guesses at the admin token, per client address: guessing it is slowed like the dashboard
   * login, on admin routes and on key routes (which take the admin token too) alike.
   */
  private readonly adminGuesses = new FailureThrottle();
  private readonly trustProxy: boolean;

  constructor(
    readonly keys: KeyStore,
    adminToken: string | undefined,
    options: { trustProxy?: boolean } = {},
  ) {
    this.adminHash = adminToken ? createHash('sha256').update(adminToken).digest() : undefined;
    this.trustProxy = options.trustProxy ?? false;
  }

  /**
   * The address refused credentials are counted against. Behind a trusted proxy (TRUST_PROXY=true)
   * it is the last X-Forwarded-For entry, the one the proxy appended (earlier ones are client-made);
   * otherwise the connection's own address, whatever the headers say.
   */
  clientOf(request: FastifyRequest): string {
    return (this.trustProxy && lastForwardedFor(request.headers['x-forwarded-for'])) || request.ip;
  }

  private throttled(client: string): ApiError | undefined {
    const waitMs = this.adminGuesses.retryAfterMs(client);
    if (waitMs <= 0) return undefined;
    return new ApiError(
      'too_many_requests',
      'too many refused credentials from this address; retry after Retry-After',
      undefined,
      Math.ceil(waitMs / 1000),
    );
  }

  isAdminToken(secret: string): boolean {
    return this.isAdminDigest(createHash('sha256').update(secret).digest());
  }

  private isAdminDigest(digest: Buffer): boolean {
    return this.adminHash !== undefined && timingSafeEqual(digest, this.adminHash);
  }

  /** Who is calling; 401 for a missing, malformed, unknown or revoked credential. */
  authenticate(request: FastifyRequest): Principal {
    const header = request.headers.authorization;
    if (!header) throw new ApiError('unauthorized', 'missing Authorization: Bearer <key> header');
    if (this.memoGeneration !== this.keys.generation) {
      this.memo = new Map();
      this.memoGeneration = this.keys.generation;
    }
    const known = this.memo.get(header);
    if (known) return known;
    const principal = this.verify(header);
    if (this.memo.size >= MEMO_LIMIT) this.memo.clear();
    this.memo.set(header, principal);
    return principal;
  }

  private verify(header: string): Principal {
    const match = /^Bearer\s+(\S{1,512})\s*$/i.exec(header);
    if (!match) throw new ApiError('unauthorized', 'Authorization header must be "Bearer <key>"');
    const digest = createHash('sha256').update(match[1]!).digest();
    if (this.isAdminDigest(digest)) return { kind: 'admin' };
    const key = this.keys.findByHash(digest.toString('hex'));
    if (!key) throw new ApiError('unauthorized', 'invalid or revoked API key');
    return { kind: 'key', id: key.id, tenant: key.tenant };
  }

  /**
   * onRequest hook: authenticates before the body is read, so a bad key is 401 whatever it sent.
   * API keys are never throttled (they are 192-bit random; a misconfigured client resending a revoked
   * one must not lock anyone out). The admin token, which these routes take too, is guessed under
   * the same throttle as on admin routes, per address: a refused credential not shaped like an API
   * key counts as a guess, and while an address is throttled its admin token and its guesses alike
   * are 429, so a throttled guesser learns nothing.
   */
  readonly requireKey: onRequestHookHandler = (request: FastifyRequest, _reply: FastifyReply, done) => {
    let principal: Principal;
    try {
      principal = this.authenticate(request);
    } catch (error) {
      if (error instanceof ApiError && error.code === 'unauthorized' && isAdminGuess(request.headers.authorization)) {
        const client = this.clientOf(request);
        const throttled = this.throttled(client);
        if (throttled) throw throttled;
        this.adminGuesses.recordFailure(client, Date.now(), { global: false });
      }
      throw error;
    }
    if (principal.kind === 'admin') {
      const throttled = this.throttled(this.clientOf(request));
      if (throttled) throw throttled;
    }
    request.principal = principal;
    done();
  };

  /** onRequest hook for admin routes: API keys, scoped or not, are 403. */
  readonly requireAdmin: onRequestHookHandler = (request: FastifyRequest, _reply: FastifyReply, done) => {
    const client = this.clientOf(request);
    // Checked before the credential: a throttled guess must learn nothing, right or wrong.
    const throttled = this.throttled(client);
    if (throttled) throw throttled;
    try {
      request.principal = this.authenticate(request);
    } catch (error) {
      // No credential at all (a probe, a misconfigured client) is no guess.
      if (error instanceof ApiError && error.code === 'unauthorized' && request.headers.authorization)
        this.adminGuesses.recordFailure(client);
      throw error;
    }
    if (request.principal.kind === 'admin') this.adminGuesses.recordSuccess(client);
    if (request.principal.kind !== 'admin') {
      throw new ApiError('forbidden', 'this endpoint needs the admin token; API keys may not use it');
    }
    done();
  };
}

/** 403 when a tenant-scoped key reaches for another tenant. */
export function authoriseTenant(principal: Principal, tenant: string): void {
  if (principal.kind === 'key' && principal.tenant !== null && principal.tenant !== tenant) {
    throw new ApiError('forbidden', `this API key is scoped to another tenant and may not access "${tenant}"`);
  }
}
