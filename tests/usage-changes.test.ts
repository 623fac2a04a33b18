import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changedBuckets, changesPayload, nameHash, TENANT_BUCKETS, tenantBucket } from '../shared/domain/usage-changes.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { migrate } from '../shared/platform/migrate.ts';
import { createRuntime, type Runtime } from '../shared/runtime/runtime.ts';
import { waitFor } from './helpers/processes.ts';
import { ADMIN_TOKEN, createTestStack, postEvents, readUsage, startApiAndAggregator } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

describe('change notification payloads', () => {
  it('name exactly the buckets of the tenants they were made from', () => {
    const changedTenantsPayload = (names: string[]) => changesPayload(names.map(nameHash));
    const tenants = ['acme', 'globex', 'initech', 't0001', 'm-run-17'];
    expect(changedBuckets(changedTenantsPayload(tenants))).toEqual([...new Set(tenants.map(tenantBucket))].sort((a, b) => a - b));
    expect(changedBuckets(changedTenantsPayload([]))).toEqual([]);
    // A fixed size whatever the number of tenants: far under NOTIFY's 8,000 bytes.
    const many = Array.from({ length: 100_000 }, (_, i) => `tenant-${i}`);
    expect(changedTenantsPayload(many)).toHaveLength(changedTenantsPayload(['one']).length);
    expect(changedBuckets(changedTenantsPayload(many))).toHaveLength(TENANT_BUCKETS);
    expect(changedBuckets('not a payload')).toEqual([]);
  });
});

/**
 * The usage function caches each tenant's answer for USAGE_CACHE_TTL; here that is ten minutes, far
 * past every deadline below, so an answer can only move within a test because the commit that
 * changed it ended the cached one.
 */
function followsCommits(label: string, open: () => Promise<{ runtime: Runtime; apiKey: string; close(): Promise<void> }>) {
  describe(`usage answers follow commits (${label})`, () => {
    let stack: Awaited<ReturnType<typeof open>>;
    let api: Awaited<ReturnType<typeof startApiAndAggregator>> | undefined;

    beforeAll(async () => {
      stack = await open();
      api = await startApiAndAggregator(stack.runtime);
    });
    afterAll(async () => {
      await api?.close();
      await stack?.close();
    });

    const post = (events: unknown) => postEvents(api!.app, stack.apiKey, events);
    const usage = (tenant: string) => readUsage(api!.app, stack.apiKey, tenant);

    it('answers each commit at once although the cached answer has minutes to live', async () => {
      const tenant = uniqueName('fresh');
      // Cached as unknown (404) before the tenant's first event is counted.
      expect(await usage(tenant)).toBeUndefined();
      await post({ tenant, feature: 'f', tokens: 5 });
      await waitFor(async () => (await usage(tenant))?.tokens === 5n, { what: 'the first commit in the answer' });
      await post([
        { tenant, feature: 'f', tokens: 7 },
        { tenant, feature: 'g', tokens: 1 },
      ]);
      const answer = await waitFor(async () => ((await usage(tenant))?.tokens === 13n ? usage(tenant) : undefined), {
        what: 'the second commit in the answer',
      });
      expect(answer.features).toEqual([
        { feature: 'f', tokens: 12n },
        { feature: 'g', tokens: 1n },
      ]);
    });

    it('answers a quota or zone change at once although the cached answer has minutes to live', async () => {
      const tenant = uniqueName('requota');
      await post({ tenant, feature: 'f', tokens: 40 });
      await waitFor(async () => (await usage(tenant))?.tokens === 40n, { what: 'the event counted' });
      const put = await api!.app.inject({
        method: 'PUT',
        url: `/api/tenants/${tenant}`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ monthlyQuota: 50 }),
      });
      expect(put.statusCode, put.body).toBe(200);
      const answer = await waitFor(async () => ((await usage(tenant))?.quota === 50n ? usage(tenant) : undefined), {
        what: 'the new quota in the answer',
      });
      expect(answer).toMatchObject({ tokens: 40n, quota: 50n, percent: 80, over: false });
    });

    it('keeps serving the cached answer of a tenant no commit touched', async () => {
      const quiet = uniqueName('quiet');
      let busy = uniqueName('busy');
      // Two tenants of one bucket share their notifications (an extra read, by design): not these two.
      while (tenantBucket(busy) === tenantBucket(quiet)) busy = uniqueName('busy');
      await post([
        { tenant: quiet, feature: 'f', tokens: 3 },
        { tenant: busy, feature: 'f', tokens: 3 },
      ]);
      await waitFor(async () => (await usage(quiet))?.tokens === 3n && (await usage(busy))?.tokens === 3n, { what: 'both counted' });
      const cached = await usage(quiet);
      // Changed behind the aggregator's back: no commit names this tenant, so the cached answer stands.
      await stack.runtime.db.query('UPDATE usage_periods SET tokens = tokens + 1000 WHERE tenant = $1', [quiet]);
      await post({ tenant: busy, feature: 'f', tokens: 4 });
      await waitFor(async () => (await usage(busy))?.tokens === 7n, { what: 'the busy tenant to move on' });
      expect(await usage(quiet)).toEqual(cached);
    });
  });
}

describe.skipIf(!servicesAvailable)('on PostgreSQL and Valkey', () => {
  followsCommits('PostgreSQL', () => createTestStack({ USAGE_CACHE_TTL: '10m' }));
});

// npm start's shape: PGlite and the in-process queue.
followsCommits('embedded PGlite', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flagmeter-usage-changes-'));
  const config = loadConfig({ DATA_DIR: dataDir, ADMIN_TOKEN, LOG_LEVEL: 'error', USAGE_CACHE_TTL: '10m', QUEUE_PARTITIONS: '2' });
  const runtime = await createRuntime('test', { config, embedded: true, withoutKeys: true });
  await migrate(runtime.db);
  await runtime.keys.start();
  const { key } = await createApiKey(runtime, 'test', null);
  return {
    runtime,
    apiKey: key,
    async close() {
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
});
