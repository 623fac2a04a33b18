import { EventBuffer } from './buffer.ts';
import { errorOf, FlagMeterError, type HttpAnswer, isRetryableStatus, request, type RetryPolicy, retryDelay, sleep, type Transport } from './http.ts';
import { type ModelResponse, readResponse } from './model-usage.ts';
import type { IngestResult, QuotaCheck, TrackedEvent, TrackEvent, UsageReport } from './types.ts';

/** What happens to a `track()` when the buffer is full. */
export type BufferFullPolicy = 'drop-oldest' | 'block';

export interface MeterOptions {
  /** Base URL of FlagMeter, e.g. `https://meter.example.com`. */
  url: string;
  apiKey: string;
  /** Events per request, 1–1,000 (the server's batch limit). Default 100. */
  batchSize?: number;
  /** A partial batch is sent at the latest this long after its first event. Default 1,000 ms. */
  flushIntervalMs?: number;
  /** Events waiting to be sent, not counting those in flight. Default 10,000. */
  maxBufferSize?: number;
  /**
   * `drop-oldest` (default): the oldest waiting event is dropped, counted and reported, and `track()`
   * still returns at once. `block`: the promise `track()` returns settles only once the event has a
   * place, so a caller that awaits it slows down instead of losing events.
   */
  onBufferFull?: BufferFullPolicy;
  /** Requests in flight at once. Default 4. */
  maxConcurrentRequests?: number;
  retry?: Partial<RetryPolicy>;
  /** Per request. Default 10,000 ms. */
  requestTimeoutMs?: number;
  /** Events the server refused, dropped or given up on. Default: a line on stderr. */
  onError?: (error: MeterError) => void;
  /** Another fetch (a proxy agent, a test double). Default: the global fetch. */
  fetch?: typeof fetch;
}

/**
 * - `rejected`: the server answered 4xx for these events (its message is here); they were not counted
 *   and are not retried.
 * - `dropped`: the buffer was full under `drop-oldest`.
 * - `gave_up`: still undelivered after `retry.giveUpAfterMs`, or when `close()` ran out of time.
 * - `invalid`: `trackResponse()` got a response without usage or model.
 */
export type MeterErrorKind = 'rejected' | 'dropped' | 'gave_up' | 'invalid';

export interface MeterError {
  kind: MeterErrorKind;
  message: string;
  events: TrackedEvent[];
  status?: number;
  code?: string;
  /** The server's id of the request that refused them (`rejected`), to find it in the server's logs. */
  requestId?: string;
}

export interface MeterStats {
  tracked: number;
  /** Counted by the server (202), duplicates excluded. */
  accepted: number;
  /** Resent events the server had already counted: retries made safe by the event id. */
  duplicates: number;
  rejected: number;
  dropped: number;
  /** `track()` calls that had to wait for room under `block`. */
  blocked: number;
  gaveUp: number;
  requests: number;
  retries: number;
  buffered: number;
  inFlight: number;
}

/** An event as it waits: the time stays a number until it is sent, which keeps `track()` cheap. */
interface PendingEvent {
  tenant: string;
  feature: string;
  tokens: number;
  id: string;
  timestamp: number | string;
}

interface Batch {
  /** Sequence number of its first event; flush() waits for every batch at or before its target. */
  firstSeq: number;
}

const MAX_BATCH = 1_000;
/** How long a 401 is retried from a batch's first attempt: a new key reaches every ingest instance within ~2 s. */
const NEW_KEY_GRACE_MS = 10_000;
/** Shorter provider response ids are not taken as event ids (OpenAI's and Anthropic's are 28+ characters). */
const MIN_RESPONSE_ID_LENGTH = 16;

/** The usage function's own 404 for a tenant with no counted event yet, not any other 404. */
function isUnknownTenant(answer: HttpAnswer): boolean {
  const error = errorOf(answer);
  return error.code === 'not_found' && error.message.startsWith('unknown tenant');
}

function toWire(event: PendingEvent): TrackedEvent {
  let timestamp = event.timestamp;
  if (typeof timestamp === 'number') {
    const date = new Date(timestamp);
    // An invalid Date (NaN) or one out of range goes as written: the server names that event, and
    // only it is reported (toISOString would throw here, out of the send loop, and lose the batch).
    timestamp = Number.isNaN(date.getTime()) ? String(timestamp) : date.toISOString();
  }
  return { tenant: event.tenant, feature: event.feature, tokens: event.tokens, id: event.id, timestamp };
}

function positiveInteger(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) throw new RangeError(`flagmeter: ${name} must be an integer from 1 to ${max}`);
  return value;
}

const reportToStderr = (error: MeterError): void => {
  console.error(`flagmeter: ${error.events.length} event(s) ${error.kind}: ${error.message}`);
};

/** Buffers, batches and delivers usage events exactly once; see docs/client.md. */
export class Meter {
  readonly #transport: Transport;
  readonly #closer = new AbortController();
  readonly #batchSize: number;
  readonly #flushIntervalMs: number;
  readonly #maxBuffer: number;
  readonly #policy: BufferFullPolicy;
  readonly #maxConcurrent: number;
  readonly #retry: RetryPolicy;
  readonly #onError: (error: MeterError) => void;
  /** Random per meter, so that `session-counter` ids never collide across processes. */
  readonly #session = crypto.randomUUID();
  #idCounter = 0;

  readonly #buffer = new EventBuffer<PendingEvent>();
  /** Under `block`: events waiting for room, in order, with the resolver of their `track()`. */
  #waiting: { event: PendingEvent; resolve: (id: string) => void }[] = [];
  /** Sequence number the next buffered event gets; the buffer always holds the range just before it. */
  #nextSeq = 0;
  /** Partial batches up to this sequence number are sent without waiting to fill up. */
  #drainThrough = -1;
  readonly #inFlight = new Set<Batch>();
  #flushes: { target: number; resolve: () => void }[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #pumpScheduled = false;
  #closed = false;
  readonly #stats = { tracked: 0, accepted: 0, duplicates: 0, rejected: 0, dropped: 0, blocked: 0, gaveUp: 0, requests: 0, retries: 0 };

  constructor(options: MeterOptions) {
    if (!options.url) throw new TypeError('flagmeter: url is required');
    if (!options.apiKey) throw new TypeError('flagmeter: apiKey is required');
    this.#batchSize = positiveInteger('batchSize', options.batchSize ?? 100, MAX_BATCH);
    this.#flushIntervalMs = positiveInteger('flushIntervalMs', options.flushIntervalMs ?? 1_000);
    this.#maxBuffer = positiveInteger('maxBufferSize', options.maxBufferSize ?? 10_000);
    if (this.#maxBuffer < this.#batchSize) throw new RangeError('flagmeter: maxBufferSize must be at least batchSize');
    this.#policy = options.onBufferFull ?? 'drop-oldest';
    this.#maxConcurrent = positiveInteger('maxConcurrentRequests', options.maxConcurrentRequests ?? 4);
    this.#retry = { initialDelayMs: 100, maxDelayMs: 10_000, giveUpAfterMs: 10 * 60_000, ...options.retry };
    this.#onError = options.onError ?? reportToStderr;
    this.#transport = {
      baseUrl: options.url.replace(/\/+$/, ''),
      apiKey: options.apiKey,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      timeoutMs: positiveInteger('requestTimeoutMs', options.requestTimeoutMs ?? 10_000),
      closing: this.#closer.signal,
    };
  }

  /**
   * Queues one event and returns at once with its id. The promise is already settled unless the
   * buffer is full under `block`; it never rejects, so it need not be awaited.
   */
  track(input: TrackEvent): Promise<string> {
    if (this.#closed) throw new Error('flagmeter: track() after close()');
    const event: PendingEvent = {
      tenant: input.tenant,
      feature: input.feature,
      // A bigint (as usage() returns them) cannot go into JSON: sent as the number it is.
      tokens: typeof input.tokens === 'bigint' ? Number(input.tokens) : input.tokens,
      id: input.id ?? `${this.#session}-${(this.#idCounter++).toString(36)}`,
      timestamp: input.timestamp === undefined ? Date.now() : input.timestamp instanceof Date ? input.timestamp.getTime() : input.timestamp,
    };
    this.#stats.tracked++;
    if (this.#waiting.length > 0 || this.#buffer.length >= this.#maxBuffer) {
      if (this.#policy === 'block') {
        this.#stats.blocked++;
        return new Promise((resolve) => this.#waiting.push({ event, resolve }));
      }
      const dropped = this.#buffer.shift()!;
      this.#stats.dropped++;
      this.#report({ kind: 'dropped', message: `the buffer is full (${this.#maxBuffer} events); the oldest event was dropped`, events: [toWire(dropped)] });
    }
    this.#admit(event);
    return Promise.resolve(event.id);
  }

  /**
   * Meters one model response as the OpenAI, Anthropic or Vercel AI SDK returns it: tokens from its
   * usage, feature from its model, idempotency key from its id. `includeCache` adds Anthropic's cache
   * write and read tokens (the other SDKs count cached input in their totals already).
   */
  trackResponse(response: ModelResponse, context: { tenant: string; feature?: string; includeCache?: boolean }): Promise<string | undefined> {
    const { tokens, model, id } = readResponse(response, context);
    const feature = context.feature ?? model;
    if (tokens < 1 || !feature) {
      const message = tokens < 1 ? 'the response has no usage block with tokens' : 'no feature given and the response names no model';
      this.#report({
        kind: 'invalid',
        message,
        events: [{ tenant: context.tenant, feature: feature ?? '', tokens, id: id ?? '', timestamp: new Date().toISOString() }],
      });
      return Promise.resolve(undefined);
    }
    // The provider's response id makes re-tracking the same response count once, but only an id long
    // enough to be unique: some OpenAI-compatible servers (Ollama: "chatcmpl-" and a number under
    // 1,000) reuse theirs, and a reused id would drop later calls as duplicates in silence.
    const unique = id !== undefined && id.length >= MIN_RESPONSE_ID_LENGTH;
    return this.track({ tenant: context.tenant, feature, tokens, ...(unique ? { id } : {}) });
  }

  /** Resolves once every event tracked before the call is delivered or reported through onError. */
  flush(): Promise<void> {
    const target = this.#nextSeq + this.#waiting.length - 1;
    if (this.#settledThrough(target)) return Promise.resolve();
    this.#drainThrough = Math.max(this.#drainThrough, target);
    const settled = new Promise<void>((resolve) => this.#flushes.push({ target, resolve }));
    this.#pump();
    return settled;
  }

  /**
   * Stops taking events and flushes. After `timeoutMs` (default: none, so delivery runs until
   * `retry.giveUpAfterMs`) pending events are given up and reported instead.
   */
  async close({ timeoutMs }: { timeoutMs?: number } = {}): Promise<void> {
    this.#closed = true;
    const flushed = this.flush();
    if (timeoutMs !== undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        flushed.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) this.#closer.abort();
    }
    await flushed;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** The tenant's current period: tokens, quota, percent, remaining, per feature. */
  async usage(tenant: string): Promise<UsageReport> {
    const answer = await this.#read(`/api/usage/${encodeURIComponent(tenant)}`);
    if (answer.status !== 200) throw errorOf(answer);
    return answer.body as UsageReport;
  }

  /** For enforcement: is the tenant over its quota, and how much is left. */
  async check(tenant: string): Promise<QuotaCheck> {
    const answer = await this.#read(`/api/usage/${encodeURIComponent(tenant)}`);
    // A tenant exists from its first counted event; before that it has used nothing. Only the usage
    // function's own "unknown tenant" means that: any other 404 (a wrong base URL, a proxy's page)
    // throws, so that enforcement never fails open in silence.
    if (answer.status === 404 && isUnknownTenant(answer)) return { tenant, known: false, over: false, remaining: null, percent: 0 };
    if (answer.status !== 200) throw errorOf(answer);
    const usage = answer.body as UsageReport;
    return { tenant, known: true, over: usage.over, remaining: usage.remaining, percent: usage.percent };
  }

  stats(): MeterStats {
    return { ...this.#stats, buffered: this.#buffer.length + this.#waiting.length, inFlight: this.#inFlight.size };
  }

  #admit(event: PendingEvent): void {
    this.#buffer.push(event);
    this.#nextSeq++;
    if (this.#buffer.length >= this.#batchSize) this.#schedulePump();
    else if (this.#timer === undefined) this.#armTimer();
  }

  #armTimer(): void {
    // Not unref'd: a process that exits on its own still sends what it tracked.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#drainThrough = Math.max(this.#drainThrough, this.#nextSeq - 1);
      this.#pump();
    }, this.#flushIntervalMs);
  }

  /** Sending starts after the caller's synchronous work, so a loop of track() calls fills whole batches. */
  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => this.#pump());
  }

  #pump(): void {
    this.#pumpScheduled = false;
    while (this.#inFlight.size < this.#maxConcurrent && this.#buffer.length > 0) {
      const firstSeq = this.#nextSeq - this.#buffer.length;
      if (this.#buffer.length < this.#batchSize && firstSeq > this.#drainThrough) break;
      const events = this.#buffer.take(this.#batchSize);
      while (this.#waiting.length > 0 && this.#buffer.length < this.#maxBuffer) {
        const { event, resolve } = this.#waiting.shift()!;
        this.#buffer.push(event);
        this.#nextSeq++;
        resolve(event.id);
      }
      const batch: Batch = { firstSeq };
      this.#inFlight.add(batch);
      void this.#deliver(events.map(toWire)).finally(() => {
        this.#inFlight.delete(batch);
        this.#pump();
        this.#settleFlushes();
      });
    }
    if (this.#buffer.length === 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    } else if (this.#timer === undefined) {
      this.#armTimer();
    }
    this.#settleFlushes();
  }

  #settledThrough(target: number): boolean {
    const firstUnsent = this.#nextSeq - this.#buffer.length;
    if (this.#buffer.length + this.#waiting.length > 0 && firstUnsent <= target) return false;
    for (const batch of this.#inFlight) if (batch.firstSeq <= target) return false;
    return true;
  }

  #settleFlushes(): void {
    if (this.#flushes.length === 0) return;
    this.#flushes = this.#flushes.filter((flush) => {
      if (!this.#settledThrough(flush.target)) return true;
      flush.resolve();
      return false;
    });
  }

  /** Sends one batch until every event in it is counted or reported; never rejects. */
  async #deliver(events: TrackedEvent[]): Promise<void> {
    const startedAt = Date.now();
    let pending = events;
    let attempt = 0;
    while (pending.length > 0) {
      if (this.#closer.signal.aborted) return this.#giveUp(pending, 'close() timed out before these events were delivered');
      let answer: HttpAnswer | undefined;
      let failure = '';
      let body: string;
      try {
        body = JSON.stringify({ events: pending });
      } catch {
        // Something JSON cannot hold (a cycle, a bigint in a field): reported alone, the rest sent.
        pending = this.#unserialisable(pending);
        continue;
      }
      try {
        this.#stats.requests++;
        answer = await request(this.#transport, 'POST', '/api/events', body);
      } catch (error) {
        failure = (error as Error).cause instanceof Error ? `${(error as Error).message}: ${((error as Error).cause as Error).message}` : (error as Error).message;
      }
      if (answer?.status === 202) {
        const result = answer.body as Partial<IngestResult> | undefined;
        if (typeof result?.accepted === 'number' && typeof result.duplicates === 'number') {
          this.#stats.accepted += result.accepted;
          this.#stats.duplicates += result.duplicates;
          return;
        }
        // Not FlagMeter's answer (a proxy's, or one cut short): resent like a lost answer, which the
        // same ids make safe, so the counts are known rather than guessed.
        failure = 'a 202 answer without its {accepted, duplicates} body';
        answer = undefined;
      }
      // A key created a moment ago may not be known yet to every ingest instance (each reloads keys
      // every 2 s): a 401 is retried for a short while before the batch is reported.
      const newKeyGrace = answer?.status === 401 && Date.now() - startedAt < NEW_KEY_GRACE_MS;
      if (answer && !newKeyGrace && !isRetryableStatus(answer.status)) {
        pending = await this.#refused(pending, answer);
        attempt = 0;
        continue;
      }
      const delay = retryDelay(attempt++, this.#retry, answer?.retryAfterMs);
      if (Date.now() + delay - startedAt > this.#retry.giveUpAfterMs) {
        return this.#giveUp(pending, `still undelivered after ${this.#retry.giveUpAfterMs} ms: ${answer ? errorOf(answer).message : failure}`);
      }
      this.#stats.retries++;
      await sleep(delay, this.#closer.signal);
    }
  }

  /**
   * A 4xx: the server names the bad events by index, so only those are reported and the rest go again
   * (the batch was all-or-nothing, so none of it was counted). Returns the events to resend.
   */
  async #refused(pending: TrackedEvent[], answer: HttpAnswer): Promise<TrackedEvent[]> {
    const error = errorOf(answer);
    if (answer.status === 413 && pending.length > 1) {
      const half = Math.ceil(pending.length / 2);
      await this.#deliver(pending.slice(0, half));
      return pending.slice(half);
    }
    const indexed = error.details.filter((detail) => detail.index !== undefined && detail.index >= 0 && detail.index < pending.length);
    // 400 names invalid events, 403 the events a tenant-scoped key may not send.
    if ((answer.status !== 400 && answer.status !== 403) || indexed.length === 0) {
      this.#reject(pending, error);
      return [];
    }
    const messages = new Map<number, string[]>();
    for (const detail of indexed) messages.set(detail.index!, [...(messages.get(detail.index!) ?? []), `${detail.field} ${detail.message}`]);
    for (const [index, problems] of messages) {
      this.#reject(
        [pending[index]!],
        new FlagMeterError(
          error.status,
          error.code,
          problems.join('; '),
          error.details.filter((detail) => detail.index === index),
          error.requestId,
        ),
      );
    }
    return pending.filter((_event, index) => !messages.has(index));
  }

  /** Reports the events JSON cannot hold; returns the others. */
  #unserialisable(events: TrackedEvent[]): TrackedEvent[] {
    return events.filter((event) => {
      try {
        JSON.stringify(event);
        return true;
      } catch (error) {
        this.#reject([event], new FlagMeterError(0, 'invalid_event', `cannot be sent as JSON: ${(error as Error).message}`));
        return false;
      }
    });
  }

  #reject(events: TrackedEvent[], error: FlagMeterError): void {
    this.#stats.rejected += events.length;
    this.#report({
      kind: 'rejected',
      message: error.message,
      events,
      status: error.status,
      code: error.code,
      ...(error.requestId === undefined ? {} : { requestId: error.requestId }),
    });
  }

  #giveUp(events: TrackedEvent[], message: string): void {
    this.#stats.gaveUp += events.length;
    this.#report({ kind: 'gave_up', message, events });
  }

  #report(error: MeterError): void {
    try {
      this.#onError(error);
    } catch {
      // A throwing hook must not stop delivery of the other events.
    }
  }

  /** Reads are safe to repeat: a few quick retries ride out a restart, then the error surfaces. */
  async #read(path: string): Promise<HttpAnswer> {
    for (let attempt = 0; ; attempt++) {
      try {
        const answer = await request(this.#transport, 'GET', path, undefined, true);
        if (!isRetryableStatus(answer.status) || attempt >= 3) return answer;
        await sleep(retryDelay(attempt, this.#retry, answer.retryAfterMs), this.#closer.signal);
      } catch (error) {
        if (attempt >= 3) throw error;
        await sleep(retryDelay(attempt, this.#retry, undefined), this.#closer.signal);
      }
    }
  }
}
