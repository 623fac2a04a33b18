import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAggregator } from '../functions/aggregator/service.ts';
import { type FakeSlack, startFakeSlack } from './helpers/fake-slack.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

/**
 * A stopping aggregator claims no more alerts: its runner may take a while to finish its round and
 * give its leases back, and an alert claimed in that time could be sent after the forced exit's
 * deadline, or its delivered mark lost with the process, and then sent again by another replica.
 */
describe.skipIf(!servicesAvailable)('alert delivery at shutdown', () => {
  let slack: FakeSlack;
  let stack: TestStack;
  let app: FastifyInstance;

  beforeAll(async () => {
    slack = await startFakeSlack();
    // A long lease: the runner's lease upkeep sleeps a quarter of it, so stopping takes seconds.
    stack = await createTestStack({ WEBHOOK_ALLOW_INSECURE: 'true', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1', AGGREGATOR_LEASE: '20s' });
    app = buildApi(stack.runtime);
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await stack?.close();
    await slack?.close();
  });

  it('claims no alert once stop() has begun, while the runner is still winding down', async () => {
    const tenant = uniqueName('shutdown');
    const hook = `/hook/${tenant}`;
    const put = await app.inject({
      method: 'PUT',
      url: `/api/tenants/${tenant}`,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      payload: JSON.stringify({ monthlyQuota: 100, slackWebhookUrl: `${slack.url}${hook}` }),
    });
    expect(put.statusCode).toBe(201);
    const aggregator = await startAggregator(stack.runtime);
    const startedStopping = Date.now();
    const stopped = aggregator.stop().then(() => Date.now());
    // An alert falls due after the stop began (a commit of another replica, a retry coming due).
    await stack.runtime.db.query(
      `INSERT INTO alerts (tenant, period_start, threshold, used_tokens, quota)
       VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 80, 85, 100)`,
      [tenant],
    );
    const end = await stopped;
    // The stop took long enough for the delivery loop to have polled several times (every 200 ms).
    expect(end - startedStopping).toBeGreaterThan(1_000);
    expect(slack.requests.filter((request) => request.path === hook)).toEqual([]);
    const [alert] = await stack.runtime.db.query<{ status: string; attempts: number }>(
      'SELECT status, attempts FROM alerts WHERE tenant = $1',
      [tenant],
    );
    expect(alert).toEqual({ status: 'pending', attempts: 0 });
  });
});
