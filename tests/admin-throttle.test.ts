import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../shared/domain/keys.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable } from './helpers/services.ts';

/**
 * Guessing the admin token is throttled per client address wherever the token is taken: admin routes
 * and key routes (ingest, usage), which accept it too. Behind Traefik (TRUST_PROXY=true) the address
 * is the last X-Forwarded-For entry, so one guesser does not lock out every client of the proxy.
 */
describe.skipIf(!servicesAvailable)('admin token guessing', () => {
  const stacks: TestStack[] = [];
  const apps: FastifyInstance[] = [];
  let direct: FastifyInstance;
  let proxied: FastifyInstance;
  let key: string;

  const open = async (extra: Record<string, string>): Promise<FastifyInstance> => {
    const stack = await createTestStack(extra);
    stacks.push(stack);
    const app = buildApi(stack.runtime);
    await app.ready();
    apps.push(app);
    return app;
  };
  const get = (app: FastifyInstance, url: string, from: string, token?: string, forwardedFor?: string) =>
    app
      .inject({
        method: 'GET',
        url,
        remoteAddress: from,
        headers: {
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }),
        },
      })
      .then((answer) => answer.statusCode);

  beforeAll(async () => {
    direct = await open({});
    proxied = await open({ TRUST_PROXY: 'true' });
    const stack = stacks[0]!;
    key = (await createApiKey(stack.runtime, 'throttle-test', null)).key;
    expect(await get(direct, '/api/tenants?limit=1', '10.1.0.1', ADMIN_TOKEN)).toBe(200);
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    for (const stack of stacks) await stack.close();
  });

  it('on a key route: guesses are throttled, and a throttled address learns nothing from the right token', async () => {
    const guesser = '10.2.0.1';
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await get(direct, '/api/usage/nobody', guesser, `guess-number-${i}-of-the-admin-token`));
    expect(statuses).toEqual([401, 401, 401, 429]);
    // The right token from the throttled address is refused the same way as a wrong one.
    expect(await get(direct, '/api/usage/nobody', guesser, ADMIN_TOKEN)).toBe(429);
    expect(await get(direct, '/api/tenants?limit=1', guesser, ADMIN_TOKEN)).toBe(429);
    // API keys from that address still work; the admin from any other address too.
    expect(await get(direct, '/api/usage/nobody', guesser, key)).toBe(404);
    expect(await get(direct, '/api/usage/nobody', '10.2.0.2', ADMIN_TOKEN)).toBe(404);
  });

  it('unknown API keys (a client resending a revoked one) and requests without a credential are never throttled', async () => {
    const client = '10.3.0.1';
    const revoked = `fm_${'A'.repeat(32)}`;
    for (let i = 0; i < 10; i++) expect(await get(direct, '/api/usage/nobody', client, revoked)).toBe(401);
    for (let i = 0; i < 10; i++) expect(await get(direct, '/api/tenants?limit=1', client)).toBe(401);
    expect(await get(direct, '/api/tenants?limit=1', client, ADMIN_TOKEN)).toBe(200);
  });

  it('behind a trusted proxy each client is counted by the address the proxy appended', async () => {
    const proxy = '10.0.0.9';
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      // A guesser cannot escape its count by writing X-Forwarded-For entries of its own.
      statuses.push(await get(proxied, '/api/tenants?limit=1', proxy, `guess-${i}-xxxxxxxxxxxxxxxx`, `198.51.100.${i}, 203.0.113.7`));
    }
    expect(statuses).toEqual([401, 401, 401, 429]);
    expect(await get(proxied, '/api/tenants?limit=1', proxy, ADMIN_TOKEN, '203.0.113.7')).toBe(429);
    // Another client through the same proxy is not locked out.
    expect(await get(proxied, '/api/tenants?limit=1', proxy, ADMIN_TOKEN, '203.0.113.8')).toBe(200);
  });

  it('without a trusted proxy, X-Forwarded-For changes nothing: the connection address is counted', async () => {
    const client = '10.4.0.1';
    const statuses = [];
    for (let i = 0; i < 4; i++)
      statuses.push(await get(direct, '/api/tenants?limit=1', client, `guess-${i}-yyyyyyyyyyyyyyyy`, `198.51.100.${i}`));
    expect(statuses).toEqual([401, 401, 401, 429]);
    expect(await get(direct, '/api/tenants?limit=1', client, ADMIN_TOKEN, '198.51.100.200')).toBe(429);
  });
});
