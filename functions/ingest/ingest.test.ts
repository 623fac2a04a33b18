import { metrics } from '@opentelemetry/api';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestStack, type TestStack } from '../../tests/helpers/runtime.ts';
import { servicesAvailable, uniqueName } from '../../tests/helpers/services.ts';
import { buildIngestApp } from './app.ts';
import { ingestResponse } from './schema.ts';

/** Reads the instruments on demand: the test asks, nothing exports. */
class InspectingReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

describe.skipIf(!servicesAvailable)('ingest function (its own app, real Valkey)', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  const backlog = async (): Promise<number> => (await stack.runtime.queue.backlog()).reduce((sum, n) => sum + n, 0);
  const post = (body: unknown, key = stack.apiKey) =>
    app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });

  const reader = new InspectingReader();
  const rejectedByReason = async (): Promise<Record<string, number>> => {
    const { resourceMetrics } = await reader.collect();
    const metric = resourceMetrics.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .find((candidate) => candidate.descriptor.name === 'flagmeter_ingest_requests_rejected');
    return Object.fromEntries((metric?.dataPoints ?? []).map((point) => [String(point.attributes.reason), Number(point.value)]));
  };

  beforeAll(async () => {
    // Before the app exists: the ingest instruments bind to the global provider when registered.
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    stack = await createTestStack();
    app = buildIngestApp(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('accepts a batch with 202 and enqueues every event', async () => {
    const before = await backlog();
    const tenant = uniqueName('ingest');
    const response = await post([
      { tenant, feature: 'gpt-4o', tokens: 3 },
      { tenant, feature: 'gpt-4o', tokens: 4, id: 'a-1' },
    ]);
    expect(response.statusCode).toBe(202);
    expect(ingestResponse.parse(response.json())).toMatchObject({ accepted: 2, duplicates: 0, duplicateIndexes: [] });
    expect(await backlog()).toBe(before + 2);
  });

  it('rejects a batch with one bad event whole, naming its index and field', async () => {
    const before = await backlog();
    const response = await post([
      { tenant: 't', feature: 'f', tokens: 1 },
      { tenant: 't', feature: 'f', tokens: -1 },
    ]);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toMatchObject({ code: 'invalid_event', details: [{ index: 1, field: 'tokens' }] });
    expect(await backlog()).toBe(before);
  });

  it('answers 401 without a valid key and serves nothing but its own route', async () => {
    expect((await post({ tenant: 't', feature: 'f', tokens: 1 }, 'fm_wrong')).json().error.code).toBe('unauthorized');
    expect((await app.inject({ method: 'GET', url: '/api/health' })).statusCode).toBe(404);
  });

  it('counts each rejected request by the code the client got, auth and body-parser errors included', async () => {
    const before = await rejectedByReason();
    const send = (payload: string, headers: Record<string, string>) => app.inject({ method: 'POST', url: '/api/events', headers, payload });
    const auth = { authorization: `Bearer ${stack.apiKey}` };
    expect((await send('{bad', { ...auth, 'content-type': 'application/json' })).statusCode).toBe(400);
    expect((await send('x', { ...auth, 'content-type': 'text/plain' })).statusCode).toBe(415);
    expect((await send('{}', { authorization: 'Bearer fm_wrong', 'content-type': 'application/json' })).statusCode).toBe(401);
    expect((await post({ tenant: 't', feature: 'f', tokens: 0 })).statusCode).toBe(400);
    const after = await rejectedByReason();
    for (const reason of ['malformed_json', 'unsupported_media_type', 'unauthorized', 'invalid_event']) {
      expect((after[reason] ?? 0) - (before[reason] ?? 0), reason).toBe(1);
    }
  });
});
