import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upsertTenant } from '../../shared/domain/tenants.ts';
import { byTenant, rolledUp } from '../helpers/load.ts';
import { waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, expectReconciled, type FaultStack, type FlakySlack, SteadyLoad, startFlakySlack } from './harness.ts';

const DOWN_MS = 60_000;
const SLOW_MS = 20_000;
const QUOTA = 300_000n;

describe.skipIf(!servicesAvailable)('fault: Slack down for a minute, then slow (5 s answers), then back', () => {
  let slack: FlakySlack;
  let stack: FaultStack;

  beforeAll(async () => {
    slack = await startFlakySlack(5_000);
    // 8 s webhook timeout: a 5 s answer is slow but succeeds, so each alert is posted exactly once.
    stack = await createFaultStack({
      WEBHOOK_ALLOW_INSECURE: 'true',
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
      ALERT_RETRY_BASE: '200ms',
      WEBHOOK_TIMEOUT: '8s',
    });
  });
  afterAll(async () => {
    await stack?.close();
    await slack?.close();
  });

  it('creates each alert once, delivers every one after the outage, and never holds up aggregation', async () => {
    const ingest = await stack.start('functions/ingest/server.ts');
    await stack.startAggregator('slack-agg');
    const groups = { down: [] as string[], slow: [] as string[], up: [] as string[] };
    for (const [phase, tenants] of Object.entries(groups)) {
      for (let i = 0; i < 3; i++) {
        const tenant = `slack-${phase}-${i}-${Math.random().toString(36).slice(2, 8)}`;
        await upsertTenant(stack.runtime.db, tenant, { monthlyQuota: QUOTA, slackWebhookUrl: `${slack.url}/hook/${tenant}` }, 1_000_000n);
        tenants.push(tenant);
      }
    }
    const all = [...groups.down, ...groups.slow, ...groups.up];
    // Traffic goes to the current phase's tenants only, so each group crosses 80% and 100% in its phase.
    const current: string[] = [];
    const load = new SteadyLoad({
      apiKey: stack.apiKey,
      tenants: current,
      targets: () => [ingest.url],
      label: 'slack',
      workers: 2,
      intervalMs: 50,
    });
    const alertRows = (tenants: string[]) =>
      stack.runtime.db.query<{ tenant: string; threshold: number; status: string; attempts: number; last_error: string | null }>(
        `SELECT tenant, threshold, status, attempts, last_error FROM alerts
         WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))`,
        [JSON.stringify(tenants)],
      );
    /** Aggregation keeps up whatever Slack does: what was acknowledged is counted within seconds. */
    const expectAggregationKeepsUp = async () => {
      const snapshot = byTenant(load.accepted);
      await waitFor(
        async () => {
          const { periods } = await rolledUp(stack.runtime.db, all);
          return [...snapshot].every(([tenant, tokens]) => (periods.get(tenant) ?? 0n) >= tokens);
        },
        { timeoutMs: 5_000, intervalMs: 100, what: 'the rollups to catch up with acknowledged events' },
      );
    };
    const phase = async (mode: 'down' | 'slow' | 'up', ms: number) => {
      await slack.setMode(mode);
      current.splice(0, current.length, ...groups[mode]);
      const started = Date.now();
      await waitFor(async () => (await alertRows(groups[mode])).length === 6, { timeoutMs: ms, what: `both alerts of the ${mode} group` });
      await expectAggregationKeepsUp();
      await sleep(Math.max(0, ms - (Date.now() - started)));
      await expectAggregationKeepsUp();
    };
    try {
      current.push(...groups.down);
      load.start();
      await phase('down', DOWN_MS);
      const whileDown = await alertRows(groups.down);
      expect(
        whileDown.every((alert) => alert.status === 'pending' && alert.attempts >= 3 && /ECONNREFUSED/.test(alert.last_error ?? '')),
      ).toBe(true);
      expect(slack.delivered).toEqual([]);
      await phase('slow', SLOW_MS);
      expect(slack.delivered.some((post) => post.mode === 'slow')).toBe(true);
      await phase('up', 10_000);
    } finally {
      await slack.setMode('up');
      await load.stop();
    }
    // Every alert delivered in the end (the down group's retries back off to ~50 s by then).
    await waitFor(async () => (await alertRows(all)).every((alert) => alert.status === 'delivered'), {
      timeoutMs: 150_000,
      intervalMs: 500,
      what: 'every alert delivered',
    });
    await expectReconciled(stack.runtime, all, load.accepted);
    const alerts = await alertRows(all);
    expect(alerts).toHaveLength(all.length * 2);
    // One Slack message per alert: no alert lost, none sent twice.
    for (const tenant of all) {
      const posts = slack.delivered.filter((post) => post.path === `/hook/${tenant}`).map((post) => /reached (\d+)%/.exec(post.text)![1]);
      expect(posts.sort(), tenant).toEqual(['100', '80']);
    }
  }, 330_000);
});
