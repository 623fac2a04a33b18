import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAggregator, type RunningAggregator } from '../functions/aggregator/service.ts';
import { alertListResponse } from '../functions/tenants/schema.ts';
import { usageResponse } from '../functions/usage/schema.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { periodOf } from '../shared/domain/periods.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { type FakeSlack, startFakeSlack } from './helpers/fake-slack.ts';
import { parseExact } from './helpers/json.ts';
import { type RunningProcess, startAggregatorProcess, waitFor } from './helpers/processes.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

describe.skipIf(!servicesAvailable)('quota alerts to Slack', () => {
  let slack: FakeSlack;
  let stack: TestStack;
  let app: FastifyInstance;
  let aggregator: RunningAggregator;
  const processes: RunningProcess[] = [];

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const putTenant = (tenant: string, body: Record<string, unknown>) =>
    app.inject({ method: 'PUT', url: `/api/tenants/${tenant}`, headers: { ...admin, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  const post = async (events: unknown) => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { authorization: `Bearer ${stack.apiKey}`, 'content-type': 'application/json' },
      payload: JSON.stringify(events),
    });
    expect(response.statusCode).toBe(202);
  };
  const usageIs = async (tenant: string, tokens: bigint) => {
    const response = await app.inject({ method: 'GET', url: `/api/usage/${tenant}`, headers: { authorization: `Bearer ${stack.apiKey}` } });
    return response.statusCode === 200 && usageResponse.parse(parseExact(response.body)).tokens === tokens;
  };
  const alertsOf = async (tenant: string) => {
    const response = await app.inject({ method: 'GET', url: `/api/tenants/${tenant}/alerts`, headers: admin });
    return alertListResponse.parse(parseExact(response.body)).alerts;
  };
  /** A tenant whose alerts go to its own path on the fake Slack. */
  const tenantWithHook = async (label: string, monthlyQuota: number) => {
    const tenant = uniqueName(label);
    const response = await putTenant(tenant, { monthlyQuota, slackWebhookUrl: `${slack.url}/hook/${tenant}` });
    expect(response.statusCode).toBe(201);
    return { tenant, hook: `/hook/${tenant}` };
  };
  const fieldsOf = (post: FakeSlack['posts'][number]) => post.body.blocks.flatMap((block) => block.fields?.map((f) => f.text) ?? []);

  beforeAll(async () => {
    slack = await startFakeSlack();
    stack = await createTestStack({
      WEBHOOK_ALLOW_INSECURE: 'true',
      ALERT_RETRY_BASE: '200ms',
      PUBLIC_URL: 'https://flagmeter.example.com',
    });
    app = buildApi(stack.runtime);
    await app.ready();
    aggregator = await startAggregator(stack.runtime);
  });
  afterAll(async () => {
    await Promise.all(processes.map((process) => process.kill('SIGKILL')));
    await aggregator?.stop();
    await app?.close();
    await stack?.close();
    await slack?.close();
  });

  it('posts exactly two messages, with the right numbers, when usage crosses 80% and then 100%', async () => {
    const { tenant, hook } = await tenantWithHook('cross', 1000);
    await post({ tenant, feature: 'gpt-4o', tokens: 850 });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'the 80% message' });
    await post({ tenant, feature: 'gpt-4o', tokens: 200 });
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'the 100% message' });
    await post({ tenant, feature: 'gpt-4o', tokens: 5 });
    await waitFor(() => usageIs(tenant, 1055n), { what: 'later usage to be counted' });
    const [first, second] = slack.postsTo(hook);
    expect(first!.body.text).toContain(`${tenant} reached 80% of its monthly quota: 85% used (850 / 1,000 tokens)`);
    expect(second!.body.text).toContain(`${tenant} reached 100% of its monthly quota: 105% used (1,050 / 1,000 tokens)`);
    expect(fieldsOf(first!)).toEqual([
      `*Tenant*\n${tenant}`,
      '*Used*\n85%',
      '*Used / quota*\n850 / 1,000 tokens',
      `*Period*\n${periodOf('UTC', Date.now()).startDay.slice(0, 7)} (UTC)`,
    ]);
    const button = first!.body.blocks.find((block) => block.type === 'actions')!.elements![0]!;
    expect(button.url).toBe(`https://flagmeter.example.com/dashboard/tenants/${tenant}`);
    const alerts = await waitFor(async () => {
      const found = await alertsOf(tenant);
      return found.every((a) => a.status === 'delivered') ? found : undefined;
    }, { what: 'both alerts marked delivered' });
    expect(alerts.map((a) => [a.threshold, a.status, a.usedTokens])).toEqual([[100, 'delivered', 1050n], [80, 'delivered', 850n]]);
    expect(slack.postsTo(hook)).toHaveLength(2);
  });

  it('fires at exactly the threshold and not one token below it', async () => {
    const { tenant, hook } = await tenantWithHook('edge', 1000);
    await post({ tenant, feature: 'f', tokens: 799 });
    await waitFor(() => usageIs(tenant, 799n), { what: '79.9% to be counted' });
    expect(await alertsOf(tenant)).toEqual([]);
    await post({ tenant, feature: 'f', tokens: 1 });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'the alert at exactly 80%' });
    expect((await alertsOf(tenant)).map((a) => [a.threshold, a.usedTokens])).toEqual([[80, 800n]]);
  });

  it('posts both messages when a single batch jumps from 10% to 120%', async () => {
    const { tenant, hook } = await tenantWithHook('jump', 1000);
    await post({ tenant, feature: 'f', tokens: 100 });
    await waitFor(() => usageIs(tenant, 100n), { what: 'the first 10%' });
    await post([{ tenant, feature: 'f', tokens: 600 }, { tenant, feature: 'g', tokens: 500 }]);
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'two messages' });
    expect(slack.postsTo(hook).map((p) => /reached (\d+)%/.exec(p.body.text)![1]).sort()).toEqual(['100', '80']);
    expect((await alertsOf(tenant)).every((alert) => alert.usedTokens === 1200n)).toBe(true);
  });

  it('retries a failing webhook with backoff and Retry-After, delivers once, and holds up no other tenant or rollup', async () => {
    const failing = await tenantWithHook('failing', 100);
    const healthy = await tenantWithHook('healthy', 100);
    slack.script(failing.hook, [{ status: 500 }, { status: 500 }, { status: 500 }, { status: 429, headers: { 'retry-after': '2' } }]);
    await post({ tenant: failing.tenant, feature: 'f', tokens: 90 });
    await waitFor(() => slack.requests.filter((r) => r.path === failing.hook).length >= 1, { what: 'the first failed attempt' });
    await post({ tenant: healthy.tenant, feature: 'f', tokens: 90 });
    await waitFor(() => slack.postsTo(healthy.hook).length === 1, { what: 'the healthy tenant alert' });
    // The failing tenant is still waiting, and its rollups keep flowing meanwhile.
    expect(slack.postsTo(failing.hook)).toHaveLength(0);
    await post({ tenant: failing.tenant, feature: 'f', tokens: 1 });
    await waitFor(() => usageIs(failing.tenant, 91n), { what: 'rollups while the webhook fails' });
    await waitFor(() => slack.postsTo(failing.hook).length === 1, { timeoutMs: 30_000, what: 'delivery after the retries' });
    const attempts = slack.requests.filter((r) => r.path === failing.hook);
    expect(attempts.map((r) => r.status)).toEqual([500, 500, 500, 429, 200]);
    // Retry-After: 2 was honoured.
    expect(attempts[4]!.at - attempts[3]!.at).toBeGreaterThanOrEqual(2000);
    const alert = await waitFor(async () => (await alertsOf(failing.tenant)).find((a) => a.status === 'delivered'), { what: 'the delivered status' });
    expect(alert).toMatchObject({ threshold: 80, attempts: 5, lastError: null });
    expect(slack.postsTo(healthy.hook)[0]!.at).toBeLessThan(slack.postsTo(failing.hook)[0]!.at);
  });

  it('never alerts for late events in a past period and starts the new period from zero', async () => {
    const { tenant, hook } = await tenantWithHook('rollover', 1000);
    const current = periodOf('UTC', Date.now());
    await post({ tenant, feature: 'f', tokens: 5000, timestamp: new Date(current.start.getTime() - 1).toISOString() });
    await post({ tenant, feature: 'f', tokens: 10 });
    await waitFor(() => usageIs(tenant, 10n), { what: 'the current period to hold only its own events' });
    expect(await alertsOf(tenant)).toEqual([]);
    await post({ tenant, feature: 'f', tokens: 800 });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'the 80% alert of the new period' });
    expect((await alertsOf(tenant))[0]).toMatchObject({ threshold: 80, period: current.startDay.slice(0, 7) });
  });

  it('re-arms a threshold when the quota is raised above usage, and fires at once when it is lowered below', async () => {
    const { tenant, hook } = await tenantWithHook('rearm', 1000);
    await post({ tenant, feature: 'f', tokens: 900 });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'the first 80% alert' });
    expect((await putTenant(tenant, { monthlyQuota: 2000 })).statusCode).toBe(200);
    const [rearmed] = await alertsOf(tenant);
    expect(rearmed!.rearmedAt).not.toBeNull();
    await post({ tenant, feature: 'f', tokens: 800 });
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'the 80% alert again after re-arming' });
    const lowered = await putTenant(tenant, { monthlyQuota: 1500 });
    expect(lowered.statusCode).toBe(200);
    await waitFor(() => slack.postsTo(hook).length === 3, { what: 'the 100% alert fired by the lower quota' });
    expect(slack.postsTo(hook)[2]!.body.text).toContain('reached 100%');
    expect((await alertsOf(tenant)).filter((alert) => alert.rearmedAt === null).map((a) => a.threshold).sort()).toEqual([100, 80]);
  });

  it('refuses webhook URLs that are http, internal or off the allow list, and never requests them', async () => {
    const strict = await createRuntime('strict', { config: loadConfig({ ...stack.env, WEBHOOK_ALLOW_INSECURE: 'false' }) });
    const strictApp = buildApi(strict);
    try {
      const before = slack.requests.length;
      for (const slackWebhookUrl of [
        `${slack.url}/hook/x`,
        'http://hooks.slack.com/services/T/B/x',
        'https://127.0.0.1/hook',
        'https://169.254.169.254/latest/meta-data',
        'https://[::1]/hook',
        'https://10.0.0.8/hook',
        'https://example.com/hook',
        'https://user:pw@hooks.slack.com/services/x',
      ]) {
        const response = await strictApp.inject({
          method: 'PUT',
          url: `/api/tenants/${uniqueName('ssrf')}`,
          headers: { ...admin, 'content-type': 'application/json' },
          payload: JSON.stringify({ slackWebhookUrl }),
        });
        expect(response.statusCode, slackWebhookUrl).toBe(400);
        expect(errorBody.parse(response.json()).error.details?.[0]?.field).toBe('slackWebhookUrl');
      }
      expect(slack.requests.length).toBe(before);
    } finally {
      await strictApp.close();
      await strict.close();
    }
  });

  it('validates the tenant body and names each bad field', async () => {
    const response = await putTenant(uniqueName('bad'), { monthlyQuota: 0, thresholds: [0, 2000], timeZone: 'Mars/Olympus', extra: 1 });
    expect(response.statusCode).toBe(400);
    const fields = errorBody.parse(response.json()).error.details!.map((d) => d.field);
    expect(fields).toEqual(expect.arrayContaining(['monthlyQuota', 'thresholds.0', 'thresholds.1', 'extra']));
    const zone = await putTenant(uniqueName('bad'), { timeZone: 'Mars/Olympus' });
    expect(errorBody.parse(zone.json()).error.details).toEqual([expect.objectContaining({ field: 'timeZone' })]);
  });

  it('creates one alert per threshold with two aggregator processes applying the traffic and one killed', async () => {
    const tenants = await Promise.all(Array.from({ length: 8 }, (_, i) => tenantWithHook(`dual${i}`, 10_000)));
    const start = (id: string) =>
      startAggregatorProcess(stack.env, id);
    const [a, b] = await Promise.all([start('alert-a'), start('alert-b')]);
    processes.push(a!, b!);
    for (let round = 0; round < 12; round++) {
      await post(tenants.map(({ tenant }) => ({ tenant, feature: 'f', tokens: 1000 })));
      if (round === 5) await b!.kill('SIGKILL');
    }
    await waitFor(async () => {
      for (const { tenant } of tenants) if (!(await usageIs(tenant, 12_000n))) return false;
      return true;
    }, { timeoutMs: 60_000, what: 'all traffic to be applied' });
    const rows = await stack.runtime.db.query<{ tenant: string; threshold: number; count: number }>(
      `SELECT tenant, threshold, count(*)::int AS count FROM alerts
       WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) GROUP BY tenant, threshold`,
      [JSON.stringify(tenants.map((t) => t.tenant))],
    );
    expect(rows).toHaveLength(tenants.length * 2);
    expect(rows.every((row) => row.count === 1)).toBe(true);
    await waitFor(() => tenants.every(({ hook }) => slack.postsTo(hook).length >= 2), { what: 'every alert delivered' });
  });
});
