import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { healthResponse } from '../functions/health/schema.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';
import { byTenant, rolledUp, sendBatches, sortedEntries, type Totals } from './helpers/load.ts';
import { freePort, type RunningProcess, startAggregatorProcess, startProcess, waitFor } from './helpers/processes.ts';
import { type CuttableProxy, proxyDatabase } from './helpers/proxy.ts';
import { functionEnv } from './helpers/runtime.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, uniqueName } from './helpers/services.ts';

describe.skipIf(!servicesAvailable)('outages', () => {
  let database: TestDatabase;
  let keySpace: ReturnType<typeof createKeySpace>;
  let runtime: Runtime;
  let env: Record<string, string>;
  let apiKey: string;
  const processes: RunningProcess[] = [];
  let proxy: CuttableProxy | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
    keySpace = createKeySpace();
    env = functionEnv(database.url, keySpace.prefix);
    runtime = await createRuntime('test', { config: loadConfig(env) });
    apiKey = (await createApiKey(runtime, 'outage', null)).key;
  });

  afterAll(async () => {
    await Promise.all(processes.map((process) => process.kill('SIGKILL')));
    await proxy?.close();
    await runtime?.close();
    await keySpace?.clear();
    await database?.drop();
  });

  it('answers 503 with Retry-After within a second while Valkey is unreachable, and health says degraded', async () => {
    const deadValkey = `redis://127.0.0.1:${await freePort()}`;
    const ingest = await startProcess('functions/ingest/server.ts', { ...env, VALKEY_URL: deadValkey });
    const health = await startProcess('functions/health/server.ts', { ...env, VALKEY_URL: deadValkey });
    processes.push(ingest, health);
    const started = performance.now();
    const response = await fetch(`${ingest.url}/api/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tenant: 't', feature: 'f', tokens: 1 }),
    });
    const elapsedMs = performance.now() - started;
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    // It cannot say nothing was accepted (a write that timed out may have landed): it says how to retry.
    expect(errorBody.parse(await response.json()).error).toMatchObject({
      code: 'queue_unavailable',
      message: expect.stringMatching(/^the queue did not confirm the events; retry later with the same ids/),
    });
    expect(elapsedMs).toBeLessThan(1000);
    const check = await fetch(`${health.url}/api/health`);
    expect(check.status).toBe(503);
    const body = healthResponse.parse(await check.json());
    expect(body).toMatchObject({ status: 'degraded', checks: { postgres: { ok: true }, valkey: { ok: false } } });
    expect(JSON.stringify(body)).not.toContain('redis://');
  });

  it('keeps accepting while PostgreSQL is cut off from the aggregator and counts everything once it is back', async () => {
    const proxied = await proxyDatabase(database.url);
    proxy = proxied.proxy;
    const ingest = await startProcess('functions/ingest/server.ts', env);
    const aggregator = await startAggregatorProcess({ ...env, DATABASE_URL: proxied.url }, 'behind-proxy');
    processes.push(ingest, aggregator);
    const tenants = Array.from({ length: 5 }, (_, i) => uniqueName(`pgdown${i}`));
    const accepted: Totals = new Map();
    const batches = (n: number) =>
      Array.from({ length: n }, (_, r) => tenants.map((tenant, i) => ({ tenant, feature: `f${i % 2}`, tokens: r + i + 1 })));

    await sendBatches(ingest.url, apiKey, batches(20), accepted);
    const expectCounted = async () => {
      const expected = byTenant(accepted);
      await waitFor(
        async () => {
          const { periods } = await rolledUp(runtime.db, tenants);
          return sortedEntries(expected).every(([tenant, tokens]) => periods.get(tenant) === tokens);
        },
        { timeoutMs: 60_000, intervalMs: 200, what: 'rollups to equal the accepted events' },
      );
      expect(sortedEntries((await rolledUp(runtime.db, tenants)).daily)).toEqual(sortedEntries(accepted));
    };
    await expectCounted();

    proxy.cut();
    const before = (await rolledUp(runtime.db, tenants)).periods;
    const { rejected } = await sendBatches(ingest.url, apiKey, batches(50), accepted, { retryOn503: false });
    expect(rejected).toBe(0);
    await waitFor(async () => (await runtime.queue.backlog()).reduce((a, b) => a + b, 0) >= 250, { what: 'events to wait in the queue' });
    expect(sortedEntries((await rolledUp(runtime.db, tenants)).periods)).toEqual(sortedEntries(before));

    proxy.restore();
    await expectCounted();
    await waitFor(async () => (await runtime.queue.backlog()).every((n) => n === 0), { what: 'the backlog to drain' });
  });
});
