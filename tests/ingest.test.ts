import awsLambdaFastify from '@fastify/aws-lambda';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestResponse } from '../functions/ingest/schema.ts';
import { createApiKey, revokeApiKey } from '../shared/domain/keys.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

describe.skipIf(!servicesAvailable)('POST /api/events', () => {
  let stack: TestStack;
  let app: FastifyInstance;
  let lambda: ReturnType<typeof awsLambdaFastify>;
  const backlog = async () => (await stack.runtime.queue.backlog()).reduce((sum, n) => sum + n, 0);
  const post = (body: unknown, { key = stack.apiKey, contentType = 'application/json' } = {}) =>
    app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { authorization: `Bearer ${key}`, 'content-type': contentType },
      payload: typeof body === 'string' ? body : JSON.stringify(body),
    });

  beforeAll(async () => {
    stack = await createTestStack();
    app = buildApi(stack.runtime);
    lambda = awsLambdaFastify(app);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
  });

  it('accepts one event, an array and {events} and answers 202 with counts and ids', async () => {
    const tenant = uniqueName('shape');
    const event = { tenant, feature: 'gpt-4o', tokens: 10 };
    for (const body of [event, [event, event], { events: [event] }]) {
      const response = await post(body);
      expect(response.statusCode).toBe(202);
      const parsed = ingestResponse.parse(response.json());
      expect(parsed.accepted).toBe(Array.isArray(body) ? 2 : 1);
      expect(parsed.duplicates).toBe(0);
      expect(parsed.ids).toHaveLength(parsed.accepted);
    }
  });

  it('enqueues exactly the accepted events', async () => {
    const before = await backlog();
    const response = await post(Array.from({ length: 1000 }, (_, i) => ({ tenant: uniqueName('batch'), feature: 'f', tokens: i + 1 })));
    expect(response.statusCode).toBe(202);
    expect(await backlog()).toBe(before + 1000);
  });

  const tenant = 'bad-input-tenant';
  const valid = { tenant, feature: 'gpt-4o', tokens: 5 };
  const badBodies: { name: string; body: unknown; field: string; code?: string; status?: number; contentType?: string }[] = [
    { name: 'tokens 0', body: { ...valid, tokens: 0 }, field: 'tokens' },
    { name: 'negative tokens', body: { ...valid, tokens: -5 }, field: 'tokens' },
    { name: 'fractional tokens', body: { ...valid, tokens: 1.5 }, field: 'tokens' },
    { name: 'string tokens', body: { ...valid, tokens: '5' }, field: 'tokens' },
    { name: 'tokens 10^12+1', body: { ...valid, tokens: 1_000_000_000_001 }, field: 'tokens' },
    { name: 'tokens beyond 2^53', body: `{"tenant":"${tenant}","feature":"f","tokens":123456789012345678901234}`, field: 'tokens' },
    { name: 'missing tenant', body: { feature: 'f', tokens: 1 }, field: 'tenant' },
    { name: 'missing feature', body: { tenant, tokens: 1 }, field: 'feature' },
    { name: 'missing tokens', body: { tenant, feature: 'f' }, field: 'tokens' },
    { name: 'illegal tenant characters', body: { ...valid, tenant: 'acme corp' }, field: 'tenant' },
    { name: '129-character tenant', body: { ...valid, tenant: 'a'.repeat(129) }, field: 'tenant' },
    { name: '129-character feature', body: { ...valid, feature: 'f'.repeat(129) }, field: 'feature' },
    { name: 'a huge feature string', body: { ...valid, feature: 'x'.repeat(500_000) }, field: 'feature' },
    { name: 'non-printable id', body: { ...valid, id: 'has space' }, field: 'id' },
    { name: '129-character id', body: { ...valid, id: 'i'.repeat(129) }, field: 'id' },
    { name: 'timestamp not ISO', body: { ...valid, timestamp: 'yesterday' }, field: 'timestamp' },
    {
      name: 'timestamp 36 days old',
      body: { ...valid, timestamp: new Date(Date.now() - 36 * 86_400_000).toISOString() },
      field: 'timestamp',
    },
    { name: 'timestamp 10 minutes ahead', body: { ...valid, timestamp: new Date(Date.now() + 600_000).toISOString() }, field: 'timestamp' },
    { name: 'unknown field', body: { ...valid, tokns: 5 }, field: 'tokns' },
    { name: 'empty batch', body: [], field: 'events' },
    { name: '1,001 events', body: Array.from({ length: 1001 }, () => valid), field: 'events' },
    { name: 'a number as body', body: '42', field: '(body)', code: 'invalid_request' },
    { name: 'malformed JSON', body: '{"tenant": ', field: '', code: 'malformed_json' },
    {
      name: 'prototype pollution key',
      body: `{"__proto__": {"admin": true}, "tenant": "${tenant}", "feature": "f", "tokens": 1}`,
      field: '',
      code: 'malformed_json',
    },
    { name: 'text/plain body', body: 'tokens=5', field: '', code: 'unsupported_media_type', status: 415, contentType: 'text/plain' },
    {
      name: 'form body',
      body: 'a=1',
      field: '',
      code: 'unsupported_media_type',
      status: 415,
      contentType: 'application/x-www-form-urlencoded',
    },
    {
      name: 'body over 1 MiB',
      body: JSON.stringify([{ ...valid, feature: 'x'.repeat(1024 * 1024) }]),
      field: '',
      code: 'payload_too_large',
      status: 413,
    },
  ];

  for (const bad of badBodies) {
    it(`rejects ${bad.name} with ${bad.status ?? 400}${bad.field ? ` naming ${bad.field}` : ''} and enqueues nothing`, async () => {
      const before = await backlog();
      const response = await post(bad.body, bad.contentType ? { contentType: bad.contentType } : {});
      expect(response.statusCode).toBe(bad.status ?? 400);
      const body = errorBody.parse(response.json());
      expect(body.error.code).toBe(bad.code ?? 'invalid_event');
      if (bad.field) expect(body.error.details?.map((d) => d.field)).toContain(bad.field);
      expect(await backlog()).toBe(before);
    });
  }

  it('rejects a batch with one bad event, lists it by index, and enqueues none of the good ones', async () => {
    const before = await backlog();
    const response = await post([valid, { ...valid, tokens: -1 }, valid, { ...valid, tenant: '' }]);
    expect(response.statusCode).toBe(400);
    const details = errorBody.parse(response.json()).error.details!;
    expect(details).toEqual([
      expect.objectContaining({ index: 1, field: 'tokens' }),
      expect.objectContaining({ index: 3, field: 'tenant' }),
    ]);
    expect(await backlog()).toBe(before);
  });

  it('answers 401 for a missing, malformed, unknown or revoked key, and enqueues nothing', async () => {
    const { id, key } = await createApiKey(stack.runtime, 'to-revoke', null);
    await revokeApiKey(stack.runtime, id);
    const before = await backlog();
    for (const authorization of [undefined, 'Basic abc', 'Bearer fm_not-a-key', `Bearer ${key}`]) {
      const response = await app.inject({
        method: 'POST',
        url: '/api/events',
        headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
        payload: JSON.stringify(valid),
      });
      expect(response.statusCode, authorization).toBe(401);
      expect(errorBody.parse(response.json()).error.code).toBe('unauthorized');
    }
    expect(await backlog()).toBe(before);
  });

  it('answers 403 when a tenant-scoped key sends events for another tenant, and enqueues nothing', async () => {
    const { key } = await createApiKey(stack.runtime, 'scoped', 'tenant-a');
    const before = await backlog();
    expect((await post({ ...valid, tenant: 'tenant-a' }, { key })).statusCode).toBe(202);
    const response = await post(
      [
        { ...valid, tenant: 'tenant-a' },
        { ...valid, tenant: 'tenant-b' },
      ],
      { key },
    );
    expect(response.statusCode).toBe(403);
    expect(await backlog()).toBe(before + 1);
  });

  it('answers 404 with the error shape for an unknown path', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/nothing-here' });
    expect(response.statusCode).toBe(404);
    expect(errorBody.parse(response.json()).error.code).toBe('not_found');
  });

  it('answers through the Lambda adapter exactly as through the server', async () => {
    const handler = lambda;
    const body = JSON.stringify({ ...valid, id: uniqueName('lambda') });
    const event = {
      version: '2.0',
      routeKey: '$default',
      rawPath: '/api/events',
      rawQueryString: '',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.apiKey}` },
      requestContext: { http: { method: 'POST', path: '/api/events', sourceIp: '127.0.0.1' }, requestId: 'r1', stage: '$default' },
      body,
      isBase64Encoded: false,
    };
    const viaLambda = (await handler(event as never, {} as never, () => undefined)) as unknown as { statusCode: number; body: string };
    const viaServer = await post(body);
    expect(viaLambda.statusCode).toBe(202);
    expect(viaServer.statusCode).toBe(202);
    const lambdaBody = ingestResponse.parse(JSON.parse(viaLambda.body));
    expect(lambdaBody.accepted).toBe(1);
    // The second send of the same id is a duplicate, whichever path sent the first.
    expect(ingestResponse.parse(viaServer.json())).toMatchObject({ accepted: 0, duplicates: 1, duplicateIndexes: [0] });
    const unauthorised = (await handler(
      { ...event, headers: { 'content-type': 'application/json' } } as never,
      {} as never,
      () => undefined,
    )) as unknown as { statusCode: number };
    expect(unauthorised.statusCode).toBe(401);
  });

  it('refuses admin routes to API keys (403) and to missing or wrong tokens (401)', async () => {
    const { key: scoped } = await createApiKey(stack.runtime, 'scoped-admin', 'tenant-a');
    let guesser = 0;
    for (const [authorization, status] of [
      [`Bearer ${stack.apiKey}`, 403],
      [`Bearer ${scoped}`, 403],
      ['Bearer wrong-admin-token', 401],
      [undefined, 401],
    ] as const) {
      for (const [method, url] of [
        ['GET', '/api/keys'],
        ['POST', '/api/keys'],
        ['GET', '/api/tenants'],
        ['PUT', '/api/tenants/x'],
      ] as const) {
        // Each refusal from its own address: repeated wrong tokens from one address are throttled
        // (429, tested in security.test.ts), which is not what this test is about.
        guesser += 1;
        const remoteAddress = `10.9.0.${guesser}`;
        const response = await app.inject({
          method,
          url,
          remoteAddress,
          headers: authorization ? { authorization } : {},
          payload: method === 'GET' ? undefined : {},
        });
        expect(response.statusCode, `${method} ${url} ${authorization}`).toBe(status);
      }
    }
    const admin = await app.inject({ method: 'GET', url: '/api/keys', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(admin.statusCode).toBe(200);
    expect(admin.body).not.toContain(stack.apiKey);
  });
});
