import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { IngestResponse } from '../functions/ingest/schema.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import type { UsageResponse } from '../functions/usage/schema.ts';
import { parseJson } from '../packages/client/src/http.ts';
import {
  createMeter,
  type IngestResult,
  type Meter,
  type MeterError,
  parseRetryAfter,
  retryDelay,
  type TrackedEvent,
  tokensFromAnthropic,
  tokensFromOpenAI,
  tokensFromUsage,
  type UsageReport,
} from '../packages/client/src/index.ts';
import { loadConfig } from '../shared/platform/config.ts';
import type { UsageEvent } from '../shared/domain/events.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';
import { type RunningProcess, startAggregatorProcess, startProcess, waitFor } from './helpers/processes.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, uniqueName, VALKEY_URL } from './helpers/services.ts';

// The client's wire types are written out by hand so that it has no dependencies; these fail to
// compile when they drift from the schemas the server validates with.
expectTypeOf<UsageReport>().toEqualTypeOf<UsageResponse>();
expectTypeOf<IngestResult>().toEqualTypeOf<IngestResponse>();
expectTypeOf<TrackedEvent>().toExtend<UsageEvent>();

const FEATURES = ['gpt-4o', 'openai/gpt-4o-mini', 'claude-sonnet-4', 'text-embedding-3-small', 'whisper-1'];
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Router {
  url: string;
  /** Answers the next `times` ingest requests with `status` (and Retry-After) instead of proxying. */
  failIngest(times: number, status: number, retryAfter: string): void;
  injected(): number;
  close(): Promise<void>;
}

/**
 * Stands in for Traefik: /api/events to the ingest process, the rest to the usage process. It is also
 * the fault injector, and when the upstream is down it drops the client's connection, which is what
 * a client sees from a dead server.
 */
async function startRouter(ingestUrl: string, usageUrl: string): Promise<Router> {
  let failures: { times: number; status: number; retryAfter: string } = { times: 0, status: 503, retryAfter: '1' };
  let injected = 0;
  const server = createServer((incoming, outgoing) => {
    const isIngest = incoming.url!.startsWith('/api/events');
    if (isIngest && failures.times > 0) {
      failures.times--;
      injected++;
      incoming.resume();
      outgoing.writeHead(failures.status, { 'content-type': 'application/json', 'retry-after': failures.retryAfter });
      outgoing.end(JSON.stringify({ error: { code: 'queue_unavailable', message: 'injected by the test router' } }));
      return;
    }
    const upstream = httpRequest(
      new URL(incoming.url!, isIngest ? ingestUrl : usageUrl),
      { method: incoming.method, headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(outgoing);
        answer.on('error', () => outgoing.destroy());
      },
    );
    upstream.on('error', () => outgoing.destroy());
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    failIngest(times, status, retryAfter) {
      failures = { times, status, retryAfter };
    },
    injected: () => injected,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function addTokens(totals: Map<string, number>, feature: string, tokens: number): void {
  totals.set(feature, (totals.get(feature) ?? 0) + tokens);
}

describe('model usage helpers and backoff', () => {
  it('reads total_tokens from OpenAI and input plus output from Anthropic', () => {
    expect(tokensFromOpenAI({ prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 })).toBe(42);
    expect(tokensFromOpenAI({ input_tokens: 10, output_tokens: 5 })).toBe(15);
    expect(tokensFromAnthropic({ input_tokens: 100, output_tokens: 20, cache_read_input_tokens: 1_000 })).toBe(120);
    expect(tokensFromAnthropic({ input_tokens: 100, output_tokens: 20, cache_read_input_tokens: 1_000 }, { includeCache: true })).toBe(
      1_120,
    );
    expect(tokensFromUsage({ input_tokens: 7, output_tokens: 3 })).toBe(10);
    expect(tokensFromUsage(null)).toBe(0);
  });

  it('keeps Retry-After as a floor and otherwise jitters under a doubling, capped ceiling', () => {
    const policy = { initialDelayMs: 100, maxDelayMs: 1_000, giveUpAfterMs: 60_000 };
    expect(retryDelay(0, policy, undefined, () => 0.999)).toBeLessThan(100);
    expect(retryDelay(3, policy, undefined, () => 0.999)).toBeCloseTo(799.2);
    expect(retryDelay(20, policy, undefined, () => 1)).toBe(1_000);
    expect(retryDelay(0, policy, 2_000, () => 0.5)).toBe(2_000);
    expect(parseRetryAfter('3')).toBe(3_000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 5_000)).toBe(5_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });

  it('reads 64-bit sums past 2^53 without losing a digit', () => {
    const body = parseJson('{"tokens": 9007199254740993, "percent": 12.5, "features": [{"tokens": 18446744073709551615}]}', true) as {
      tokens: bigint;
      percent: number;
      features: { tokens: bigint }[];
    };
    expect(body.tokens).toBe(9_007_199_254_740_993n);
    expect(body.features[0]!.tokens).toBe(18_446_744_073_709_551_615n);
    expect(body.percent).toBe(12.5);
  });
});

/** A real HTTP server answering each request with the next scripted answer (the last one repeats), recording bodies. */
async function startStub(answers: { status: number; body: string }[]) {
  const bodies: string[] = [];
  const server = createServer((incoming, outgoing) => {
    let text = '';
    incoming.setEncoding('utf8');
    incoming.on('data', (chunk) => (text += chunk));
    incoming.on('end', () => {
      bodies.push(text);
      const answer = answers[Math.min(bodies.length - 1, answers.length - 1)]!;
      outgoing.writeHead(answer.status, answer.body ? { 'content-type': 'application/json' } : {});
      outgoing.end(answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bodies,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('client against answers that are not the usual ones', () => {
  const accepted = JSON.stringify({ accepted: 1, duplicates: 0, ids: ['x'], duplicateIndexes: [] });
  const fast = { initialDelayMs: 1, maxDelayMs: 5, giveUpAfterMs: 60_000 };

  it('resends a batch answered 202 with no body (a proxy in between) with the same ids, and never crashes', async () => {
    const stub = await startStub([
      { status: 202, body: '' },
      { status: 202, body: 'not json' },
      { status: 202, body: accepted },
    ]);
    const errors: MeterError[] = [];
    const meter = createMeter({ url: stub.url, apiKey: 'fm_test', onError: (error) => errors.push(error), retry: fast });
    try {
      await meter.track({ tenant: 'acme', feature: 'f', tokens: 5 });
      await meter.flush();
      expect(errors).toEqual([]);
      expect(meter.stats()).toMatchObject({ accepted: 1, retries: 2, rejected: 0, gaveUp: 0 });
      const ids = stub.bodies.map((body) => (JSON.parse(body) as { events: { id: string }[] }).events[0]!.id);
      expect(ids).toHaveLength(3);
      expect(new Set(ids).size).toBe(1);
    } finally {
      await meter.close();
      await stub.close();
    }
  });

  it('retries a 401 for a moment (a key created a moment ago), then delivers', async () => {
    const unauthorized = JSON.stringify({ error: { code: 'unauthorized', message: 'invalid or revoked API key' } });
    const stub = await startStub([
      { status: 401, body: unauthorized },
      { status: 401, body: unauthorized },
      { status: 202, body: accepted },
    ]);
    const errors: MeterError[] = [];
    const meter = createMeter({ url: stub.url, apiKey: 'fm_new', onError: (error) => errors.push(error), retry: fast });
    try {
      await meter.track({ tenant: 'acme', feature: 'f', tokens: 5 });
      await meter.flush();
      expect(errors).toEqual([]);
      expect(meter.stats()).toMatchObject({ accepted: 1, rejected: 0 });
    } finally {
      await meter.close();
      await stub.close();
    }
  });

  it('takes a provider response id as the event id only when it is long enough to be unique (Ollama reuses short ones)', async () => {
    const stub = await startStub([
      { status: 202, body: JSON.stringify({ accepted: 3, duplicates: 0, ids: ['a', 'b', 'c'], duplicateIndexes: [] }) },
    ]);
    const meter = createMeter({ url: stub.url, apiKey: 'fm_test', batchSize: 3 });
    try {
      const openai = 'chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG';
      await meter.trackResponse(
        { id: 'chatcmpl-42', model: 'llama3', usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } },
        { tenant: 'acme' },
      );
      await meter.trackResponse(
        { id: 'chatcmpl-42', model: 'llama3', usage: { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 } },
        { tenant: 'acme' },
      );
      await meter.trackResponse(
        { id: openai, model: 'gpt-4o', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } },
        { tenant: 'acme' },
      );
      await meter.flush();
      const ids = stub.bodies.flatMap((body) => (JSON.parse(body) as { events: { id: string }[] }).events.map((event) => event.id));
      expect(ids).toHaveLength(3);
      expect(ids[0]).not.toBe('chatcmpl-42');
      expect(ids[1]).not.toBe(ids[0]);
      expect(ids[2]).toBe(openai);
    } finally {
      await meter.close();
      await stub.close();
    }
  });

  it('check() reads only the usage function\'s own "unknown tenant" as a tenant with no usage; any other 404 throws', async () => {
    const unknown = await startStub([
      { status: 404, body: JSON.stringify({ error: { code: 'not_found', message: 'unknown tenant "acme"' } }) },
    ]);
    const elsewhere = await startStub([{ status: 404, body: '<html>Not Found</html>' }]);
    const noRoute = await startStub([
      { status: 404, body: JSON.stringify({ error: { code: 'not_found', message: 'no route GET /api/usage/acme' } }) },
    ]);
    try {
      const check = (url: string) => createMeter({ url, apiKey: 'fm_test' }).check('acme');
      await expect(check(unknown.url)).resolves.toEqual({ tenant: 'acme', known: false, over: false, remaining: null, percent: 0 });
      await expect(check(elsewhere.url)).rejects.toMatchObject({ status: 404, code: 'http_error' });
      await expect(check(noRoute.url)).rejects.toMatchObject({ status: 404, code: 'not_found', message: 'no route GET /api/usage/acme' });
    } finally {
      await Promise.all([unknown.close(), elsewhere.close(), noRoute.close()]);
    }
  });
});

describe.skipIf(!servicesAvailable)('client against the real server', () => {
  let database: TestDatabase;
  let keySpace: ReturnType<typeof createKeySpace>;
  let runtime: Runtime;
  let env: Record<string, string>;
  let apiKey: string;
  let ingest: RunningProcess;
  let usage: RunningProcess;
  let aggregator: RunningProcess;
  let router: Router;

  beforeAll(async () => {
    database = await createTestDatabase();
    keySpace = createKeySpace();
    env = {
      DATABASE_URL: database.url,
      VALKEY_URL,
      VALKEY_PREFIX: keySpace.prefix,
      ADMIN_TOKEN: 'client-test-admin-token-0123456789',
      QUEUE_PARTITIONS: '4',
      AGGREGATOR_LEASE: '2s',
    };
    runtime = await createRuntime('client-test', { config: loadConfig({ ...env, LOG_LEVEL: 'warn' }) });
    apiKey = (await createApiKey(runtime, 'client test', null)).key;
    [ingest, usage, aggregator] = await Promise.all([
      startProcess('functions/ingest/server.ts', env),
      startProcess('functions/usage/server.ts', env),
      startAggregatorProcess(env),
    ]);
    router = await startRouter(ingest.url, usage.url);
  });

  afterAll(async () => {
    await Promise.all([ingest, usage, aggregator].map((child) => child?.kill()));
    await router?.close();
    await runtime?.close();
    await keySpace?.clear();
    await database?.drop();
  });

  const meterWith = (errors: MeterError[], options: Partial<Parameters<typeof createMeter>[0]> = {}): Meter =>
    createMeter({ url: router.url, apiKey, onError: (error) => errors.push(error), ...options });

  /**
   * A sentinel event tracked after everything else lands in the tenant's partition behind it; once
   * it is visible every earlier event has been applied, so the sums are final, not merely caught up.
   */
  async function expectCountedExactly(meter: Meter, tenant: string, expected: Map<string, number>): Promise<void> {
    await meter.track({ tenant, feature: 'sentinel', tokens: 1 });
    await meter.flush();
    const report = await waitFor(
      async () => {
        const current = await meter.usage(tenant).catch(() => undefined);
        return current?.features.some((row) => row.feature === 'sentinel') ? current : undefined;
      },
      // Shorter than the test's own timeout, so a stuck aggregator fails with this message.
      { timeoutMs: 45_000, intervalMs: 100, what: `the aggregator to apply ${tenant}'s events` },
    );
    const total = [...expected.values()].reduce((sum, tokens) => sum + tokens, 1);
    expect(report.tokens).toBe(BigInt(total));
    const features = report.features.filter((row) => row.feature !== 'sentinel').map((row) => [row.feature, row.tokens] as const);
    expect(new Map(features)).toEqual(new Map([...expected].map(([feature, tokens]) => [feature, BigInt(tokens)])));
  }

  it('counts 10,000 track() calls from 10 concurrent callers exactly once', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors);
    const tenant = uniqueName('concurrent');
    const expected = new Map<string, number>();
    await Promise.all(
      Array.from({ length: 10 }, async (_, caller) => {
        for (let call = 0; call < 1_000; call++) {
          const feature = FEATURES[(caller + call) % FEATURES.length]!;
          const tokens = 1 + (((caller * 1_000 + call) * 7_919) % 5_000);
          addTokens(expected, feature, tokens);
          await meter.track({ tenant, feature, tokens });
          if (call % 100 === 99) await yieldToIo();
        }
      }),
    );
    await meter.close();
    expect(errors).toEqual([]);
    expect(meter.stats()).toMatchObject({
      tracked: 10_000,
      accepted: 10_000,
      duplicates: 0,
      dropped: 0,
      rejected: 0,
      gaveUp: 0,
      buffered: 0,
      inFlight: 0,
    });
    await expectCountedExactly(meterWith(errors), tenant, expected);
  });

  it('loses and doubles nothing when the ingest server is killed and restarted mid-send and answers 503 once', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { batchSize: 50, flushIntervalMs: 20, retry: { initialDelayMs: 50, maxDelayMs: 400 } });
    const tenant = uniqueName('restart');
    const expected = new Map<string, number>();
    const send = async (from: number, count: number) => {
      for (let index = from; index < from + count; index++) {
        const feature = FEATURES[index % FEATURES.length]!;
        const tokens = 1 + ((index * 104_729) % 9_000);
        addTokens(expected, feature, tokens);
        await meter.track({ tenant, feature, tokens });
        if (index % 25 === 24) await yieldToIo();
      }
    };

    router.failIngest(1, 503, '1');
    await send(0, 1_000);
    await waitFor(() => meter.stats().accepted >= 300, { what: 'the first batches to be accepted' });
    // Killed while batches are in flight: some may be enqueued with their answer lost.
    await ingest.kill('SIGKILL');
    await send(1_000, 1_000);
    const retriesBeforeRestart = meter.stats().retries;
    await waitFor(() => meter.stats().retries >= retriesBeforeRestart + 3, { what: 'the client to retry against the dead server' });
    ingest = await startProcess('functions/ingest/server.ts', env, { port: ingest.port });
    await send(2_000, 1_000);
    await meter.flush();

    expect(router.injected()).toBe(1);
    expect(errors).toEqual([]);
    const stats = meter.stats();
    expect(stats).toMatchObject({ tracked: 3_000, dropped: 0, rejected: 0, gaveUp: 0, buffered: 0, inFlight: 0 });
    expect(stats.retries).toBeGreaterThan(3);
    // An answer lost to the kill makes the resend a duplicate, never a second count.
    expect(stats.accepted + stats.duplicates).toBeGreaterThanOrEqual(3_000);
    await expectCountedExactly(meter, tenant, expected);
    await meter.close();
  });

  it('reports one invalid event through onError and resends the valid rest of its batch', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { batchSize: 10 });
    const tenant = uniqueName('split');
    const expected = new Map<string, number>();
    for (let index = 0; index < 10; index++) {
      if (index === 4) {
        void meter.track({ tenant, feature: 'not a feature!', tokens: 5 });
        continue;
      }
      addTokens(expected, 'gpt-4o', index + 1);
      void meter.track({ tenant, feature: 'gpt-4o', tokens: index + 1 });
    }
    await meter.flush();

    expect(errors).toHaveLength(1);
    // With the server's request id, to find the refusal in its logs.
    expect(errors[0]).toMatchObject({
      kind: 'rejected',
      status: 400,
      code: 'invalid_event',
      requestId: expect.stringMatching(/^[0-9a-f]{8}-/),
    });
    expect(errors[0]!.events).toEqual([expect.objectContaining({ tenant, feature: 'not a feature!', tokens: 5 })]);
    expect(errors[0]!.message).toMatch(/^feature must be 1-128 characters/);
    expect(meter.stats()).toMatchObject({ accepted: 9, rejected: 1, requests: 2 });
    await expectCountedExactly(meter, tenant, expected);
    await meter.close();
  });

  it('reports an invalid Date alone and sends a bigint as its number: neither takes the batch down', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { batchSize: 10 });
    const tenant = uniqueName('dates');
    const expected = new Map<string, number>();
    for (let index = 0; index < 8; index++) {
      addTokens(expected, 'gpt-4o', index + 1);
      void meter.track({ tenant, feature: 'gpt-4o', tokens: index + 1 });
    }
    // Before, toISOString threw inside the send loop: an uncaught exception, and the batch was gone.
    void meter.track({ tenant, feature: 'gpt-4o', tokens: 100, timestamp: new Date('not a date') });
    addTokens(expected, 'embed', 7);
    void meter.track({ tenant, feature: 'embed', tokens: 7n as unknown as number });
    await meter.flush();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ kind: 'rejected', status: 400, code: 'invalid_event' });
    expect(errors[0]!.events).toEqual([expect.objectContaining({ tenant, tokens: 100, timestamp: 'NaN' })]);
    expect(errors[0]!.message).toMatch(/^timestamp /);
    await expectCountedExactly(meter, tenant, expected);
    await meter.close();
  });

  it('with a tenant-scoped key, reports the events for other tenants and delivers the rest of the batch', async () => {
    const tenant = uniqueName('scoped');
    const scoped = (await createApiKey(runtime, 'scoped client test', tenant)).key;
    // Made here: the ingest and usage processes know it at their next key load (within ~2 s).
    const known = async (path: string, init: RequestInit = {}) =>
      (await fetch(`${router.url}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${scoped}` } })).status !== 401;
    await waitFor(
      async () =>
        (await known('/api/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[]' })) &&
        (await known(`/api/usage/${tenant}`)),
      { what: 'the new key to be loaded' },
    );
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { apiKey: scoped, batchSize: 10 });
    const expected = new Map<string, number>();
    for (let index = 0; index < 9; index++) {
      if (index === 3) {
        void meter.track({ tenant: `${tenant}-other`, feature: 'gpt-4o', tokens: 50 });
        continue;
      }
      addTokens(expected, 'gpt-4o', index + 1);
      void meter.track({ tenant, feature: 'gpt-4o', tokens: index + 1 });
    }
    await meter.flush();
    // Before, the server's 403 named no event and the client dropped all nine.
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ kind: 'rejected', status: 403, code: 'forbidden' });
    expect(errors[0]!.events).toEqual([expect.objectContaining({ tenant: `${tenant}-other`, tokens: 50 })]);
    expect(errors[0]!.message).toMatch(/^tenant is not ".+", the tenant this API key is scoped to/);
    await expectCountedExactly(meter, tenant, expected);
    await meter.close();
  });

  it('drops the oldest events when the buffer is full under drop-oldest, and counts and reports them', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { batchSize: 5, maxBufferSize: 5, onBufferFull: 'drop-oldest' });
    const tenant = uniqueName('drop');
    // Synchronous calls: nothing can be sent in between, so the sixth call finds the buffer full.
    for (let tokens = 1; tokens <= 8; tokens++) void meter.track({ tenant, feature: 'gpt-4o', tokens });
    expect(meter.stats()).toMatchObject({ tracked: 8, dropped: 3, buffered: 5 });
    await meter.flush();

    expect(errors.map((error) => error.kind)).toEqual(['dropped', 'dropped', 'dropped']);
    expect(errors.map((error) => error.events[0]!.tokens)).toEqual([1, 2, 3]);
    await expectCountedExactly(meter, tenant, new Map([['gpt-4o', 4 + 5 + 6 + 7 + 8]]));
    await meter.close();
  });

  it('makes track() wait for room under block, counts the waits and delivers every event', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors, { batchSize: 5, maxBufferSize: 5, onBufferFull: 'block' });
    const tenant = uniqueName('block');
    const settled: number[] = [];
    const calls = Array.from({ length: 8 }, (_, index) =>
      meter.track({ tenant, feature: 'gpt-4o', tokens: index + 1 }).then(() => settled.push(index)),
    );
    expect(meter.stats()).toMatchObject({ tracked: 8, blocked: 3, dropped: 0, buffered: 8 });
    await Promise.resolve();
    expect(settled).toEqual([0, 1, 2, 3, 4]);
    await Promise.all(calls);
    expect(settled).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    await meter.flush();

    expect(errors).toEqual([]);
    await expectCountedExactly(meter, tenant, new Map([['gpt-4o', 36]]));
    await meter.close();
  });

  it('meters an OpenAI and an Anthropic response in one line each, counting a re-tracked response once', async () => {
    const errors: MeterError[] = [];
    const meter = meterWith(errors);
    const tenant = uniqueName('sdk');
    const completion = { id: `chatcmpl-${tenant}`, model: 'gpt-4o', usage: { prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 } };
    const message = { id: `msg_${tenant}`, model: 'claude-sonnet-4', usage: { input_tokens: 100, output_tokens: 20 } };
    await meter.trackResponse(completion, { tenant });
    await meter.trackResponse(message, { tenant });
    await meter.flush();
    // The same response again, as a retry in the application would: its id makes it a duplicate.
    await meter.trackResponse(completion, { tenant });
    await meter.trackResponse({ id: 'stream-without-usage', model: 'gpt-4o' }, { tenant });
    await meter.flush();

    expect(errors.map((error) => error.kind)).toEqual(['invalid']);
    expect(meter.stats()).toMatchObject({ accepted: 2, duplicates: 1 });
    await expectCountedExactly(
      meter,
      tenant,
      new Map([
        ['gpt-4o', 42],
        ['claude-sonnet-4', 120],
      ]),
    );
    const check = await meter.check(tenant);
    expect(check).toMatchObject({ tenant, known: true, over: false, remaining: 1_000_000n - 163n });
    expect(await meter.check(uniqueName('unknown'))).toMatchObject({ known: false, over: false, remaining: null });
    await meter.close();
  });
});
