import { createServer as createTcpServer, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startAggregator, type RunningAggregator } from '../functions/aggregator/service.ts';
import { alertListResponse } from '../functions/tenants/schema.ts';
import { usageResponse } from '../functions/usage/schema.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { errorBody } from '../shared/platform/http/errors.ts';
import { isValidTimeZone, periodOf } from '../shared/domain/periods.ts';
import { MAX_RESPONSE_BYTES, postWebhook } from '../shared/domain/webhooks.ts';
import { migrate } from '../shared/platform/migrate.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { type FakeSlack, startFakeSlack } from './helpers/fake-slack.ts';
import { parseExact } from './helpers/json.ts';
import { type RunningProcess, startAggregatorProcess, waitFor } from './helpers/processes.ts';
import { ADMIN_TOKEN, buildApi, createTestStack, postEvents, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

/**
 * A webhook that never finishes answering: after the request arrives it sends its status line one
 * byte every 2 s, which keeps an idle-socket timeout from ever firing. `answerFast()` turns it into
 * a normal 200 for later connections.
 */
async function startTricklingWebhook(): Promise<{
  url: string;
  open(): number;
  connections: { openedAt: number; closedAt?: number }[];
  answerFast(): void;
  close(): Promise<void>;
}> {
  const connections: { openedAt: number; closedAt?: number }[] = [];
  const sockets = new Set<Socket>();
  let fast = false;
  const server = createTcpServer((socket) => {
    const record: { openedAt: number; closedAt?: number } = { openedAt: Date.now() };
    connections.push(record);
    sockets.add(socket);
    let timer: NodeJS.Timeout | undefined;
    socket.on('error', () => {});
    socket.once('data', () => {
      if (fast) return void socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      // A status line, then a header that never ends.
      const answer = 'HTTP/1.1 200 OK\r\nx-slow: ';
      let sent = 0;
      timer = setInterval(() => socket.write(answer[sent++] ?? 'a'), 2_000);
    });
    socket.on('close', () => {
      clearInterval(timer);
      sockets.delete(socket);
      record.closedAt = Date.now();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    open: () => sockets.size,
    connections,
    answerFast: () => (fast = true),
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe.skipIf(!servicesAvailable)('quota alerts to Slack', () => {
  let slack: FakeSlack;
  let stack: TestStack;
  let app: FastifyInstance;
  let aggregator: RunningAggregator | undefined;
  const processes: RunningProcess[] = [];

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const putTenant = (tenant: string, body: Record<string, unknown>) =>
    app.inject({
      method: 'PUT',
      url: `/api/tenants/${tenant}`,
      headers: { ...admin, 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });
  const post = (events: unknown) => postEvents(app, stack.apiKey, events);
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
  /**
   * Sends `tokens` as an ingest host whose clock runs ahead of PostgreSQL's would: stamped a minute
   * into the next UTC period, which has not begun by the database clock when the aggregator counts it.
   */
  const postAhead = async (tenant: string, tokens: number) => {
    const next = periodOf('UTC', periodOf('UTC', Date.now()).end.getTime());
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(next.start.getTime() + 60_000);
    try {
      await post({ tenant, feature: 'f', tokens });
    } finally {
      vi.useRealTimers();
    }
    return next;
  };
  const fieldsOf = (post: FakeSlack['posts'][number]) => post.body.blocks.flatMap((block) => block.fields?.map((f) => f.text) ?? []);

  beforeAll(async () => {
    slack = await startFakeSlack();
    stack = await createTestStack({
      WEBHOOK_ALLOW_INSECURE: 'true',
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
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
    expect(button.url).toBe(
      `https://flagmeter.example.com/dashboard/tenants/${tenant}?period=${periodOf('UTC', Date.now()).startDay.slice(0, 7)}`,
    );
    const alerts = await waitFor(
      async () => {
        const found = await alertsOf(tenant);
        return found.every((a) => a.status === 'delivered') ? found : undefined;
      },
      { what: 'both alerts marked delivered' },
    );
    expect(alerts.map((a) => [a.threshold, a.status, a.usedTokens])).toEqual([
      [100, 'delivered', 1050n],
      [80, 'delivered', 850n],
    ]);
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

  it('alerts only the thresholds a commit takes usage across, not the ones it was over already', async () => {
    const { tenant, hook } = await tenantWithHook('across', 1000);
    await post({ tenant, feature: 'f', tokens: 850 });
    await waitFor(async () => (await alertsOf(tenant)).some((a) => a.status === 'delivered'), { what: 'the 80% alert delivered' });
    // Usage stays over 80% from here on. Even with its alert row gone (a purged history), later
    // commits do not cross 80% again, so they alert nothing; crossing 100% still alerts.
    await stack.runtime.db.query('DELETE FROM alerts WHERE tenant = $1', [tenant]);
    await post({ tenant, feature: 'f', tokens: 10 });
    await waitFor(() => usageIs(tenant, 860n), { what: 'more usage over 80% counted' });
    await post({ tenant, feature: 'f', tokens: 140 });
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'the 100% message' });
    expect((await alertsOf(tenant)).map((a) => [a.threshold, a.usedTokens])).toEqual([[100, 1000n]]);
    expect(slack.postsTo(hook).map((p) => /reached (\d+)%/.exec(p.body.text)![1])).toEqual(['80', '100']);
  });

  it('posts both messages when a single batch jumps from 10% to 120%', async () => {
    const { tenant, hook } = await tenantWithHook('jump', 1000);
    await post({ tenant, feature: 'f', tokens: 100 });
    await waitFor(() => usageIs(tenant, 100n), { what: 'the first 10%' });
    await post([
      { tenant, feature: 'f', tokens: 600 },
      { tenant, feature: 'g', tokens: 500 },
    ]);
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'two messages' });
    expect(
      slack
        .postsTo(hook)
        .map((p) => /reached (\d+)%/.exec(p.body.text)![1])
        .sort(),
    ).toEqual(['100', '80']);
    expect((await alertsOf(tenant)).every((alert) => alert.usedTokens === 1200n)).toBe(true);
  });

  it('settles a storm of crossings with no webhook to go to, and still alerts the tenant that has one', async () => {
    const storm = Array.from({ length: 300 }, (_, i) => uniqueName(`storm${i}`));
    await stack.runtime.db.query('INSERT INTO tenants (name, monthly_quota) SELECT value, 100 FROM jsonb_array_elements_text($1::jsonb)', [
      JSON.stringify(storm),
    ]);
    const hooked = await tenantWithHook('stormhook', 100);
    // One request takes every tenant past 80% at once: 301 alerts within a round or two of commits.
    await post([...storm, hooked.tenant].map((tenant) => ({ tenant, feature: 'f', tokens: 90 })));
    const settled = await waitFor(
      async () => {
        const rows = await stack.runtime.db.query<{ status: string; attempts: number; last_error: string | null; n: number }>(
          `SELECT status, attempts, last_error, count(*)::int AS n FROM alerts
           WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) GROUP BY 1, 2, 3`,
          [JSON.stringify(storm)],
        );
        return rows.length === 1 && rows[0]!.status === 'no_webhook' && rows[0]!.n === storm.length ? rows : undefined;
      },
      { what: 'every storm alert settled as no_webhook' },
    );
    expect(settled).toEqual([{ status: 'no_webhook', attempts: 1, last_error: 'no webhook configured', n: 300 }]);
    await waitFor(async () => (await alertsOf(hooked.tenant)).some((a) => a.status === 'delivered'), {
      what: 'the tenant with a webhook alerted',
    });
    expect((await alertsOf(hooked.tenant)).map((a) => [a.threshold, a.status])).toEqual([[80, 'delivered']]);
    expect(slack.postsTo(hooked.hook)).toHaveLength(1);
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
    const alert = await waitFor(async () => (await alertsOf(failing.tenant)).find((a) => a.status === 'delivered'), {
      what: 'the delivered status',
    });
    expect(alert).toMatchObject({ threshold: 80, attempts: 5, lastError: null });
    expect(slack.postsTo(healthy.hook)[0]!.at).toBeLessThan(slack.postsTo(failing.hook)[0]!.at);
  });

  it('backs off even when Retry-After says 0, a past date or a fraction (it re-posted at once, ~100 times a second)', async () => {
    const { tenant, hook } = await tenantWithHook('retry-zero', 100);
    const answers = ['0', 'Thu, 01 Jan 1970 00:00:00 GMT', '1.5', '-1'].map((value) => ({
      status: 429,
      headers: { 'retry-after': value },
    }));
    slack.script(hook, answers);
    await post({ tenant, feature: 'f', tokens: 80 });
    await waitFor(() => slack.postsTo(hook).length === 1, { timeoutMs: 30_000, what: 'delivery after the 429s' });
    const attempts = slack.requests.filter((request) => request.path === hook);
    expect(attempts.map((request) => request.status)).toEqual([429, 429, 429, 429, 200]);
    // ALERT_RETRY_BASE is 200 ms here: each wait is at least 0.8 × 200 ms × 2^(attempt − 1).
    const gaps = attempts.slice(1).map((request, i) => request.at - attempts[i]!.at);
    gaps.forEach((gap, i) => expect(gap, `wait after attempt ${i + 1}`).toBeGreaterThanOrEqual(0.8 * 200 * 2 ** i - 20));
  });

  it("delivers the alert of a tenant whose name is 128 characters (the header block is cut to Slack's 150)", async () => {
    const tenant = uniqueName('long').padEnd(128, 'x');
    const hook = '/hook/long-name';
    expect((await putTenant(tenant, { monthlyQuota: 100, slackWebhookUrl: `${slack.url}${hook}` })).statusCode).toBe(201);
    await post({ tenant, feature: 'f', tokens: 100 });
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'the 80% and 100% alerts' });
    expect(slack.requests.filter((request) => request.path === hook).map((request) => request.status)).toEqual([200, 200]);
    for (const threshold of [80, 100]) {
      const sent = slack.postsTo(hook).find((post) => post.body.text.includes(`reached ${threshold}%`))!;
      const header = sent.body.blocks.find((block) => block.type === 'header')!.text!.text;
      expect(header.length).toBeLessThanOrEqual(150);
      expect(header.endsWith('…')).toBe(true);
      // The whole headline is still in the message text.
      expect(sent.body.text).toContain(`${tenant} reached ${threshold}% of its monthly quota`);
    }
  });

  it('stores a webhook answer holding a NUL, retries after it and delivers once (an answer PostgreSQL cannot hold stuck the alert)', async () => {
    const { tenant, hook } = await tenantWithHook('nul-answer', 100);
    slack.script(hook, [{ status: 429, headers: { 'retry-after': '2' }, body: 'slow\u0000down\n' }]);
    await post({ tenant, feature: 'f', tokens: 80 });
    const failed = await waitFor(async () => (await alertsOf(tenant)).find((alert) => alert.lastError !== null), {
      what: 'the failed attempt recorded',
    });
    expect(failed).toMatchObject({ status: 'pending', attempts: 1, lastError: 'HTTP 429: slow\\u0000down\\u000a' });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'delivery after Retry-After' });
    expect(slack.requests.filter((request) => request.path === hook).map((request) => request.status)).toEqual([429, 200]);
    await waitFor(async () => (await alertsOf(tenant))[0]?.status === 'delivered', { what: 'the delivered status' });
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
    expect(
      (await alertsOf(tenant))
        .filter((alert) => alert.rearmedAt === null)
        .map((a) => a.threshold)
        .sort(),
    ).toEqual([100, 80]);
  });

  it('does not alert again when a threshold is taken off the list and put back while usage stays over it', async () => {
    const { tenant, hook } = await tenantWithHook('toggle', 100);
    await post({ tenant, feature: 'f', tokens: 120 });
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'the 80% and 100% alerts' });
    expect((await putTenant(tenant, { thresholds: [80] })).statusCode).toBe(200);
    expect((await putTenant(tenant, { thresholds: [80, 100] })).statusCode).toBe(200);
    // A quota change that keeps usage over both changes nothing either.
    expect((await putTenant(tenant, { monthlyQuota: 110 })).statusCode).toBe(200);
    const alerts = await alertsOf(tenant);
    expect(alerts.map((alert) => [alert.threshold, alert.rearmedAt]).sort()).toEqual([
      [100, null],
      [80, null],
    ]);
    await post({ tenant, feature: 'f', tokens: 1 });
    await waitFor(() => usageIs(tenant, 121n), { what: 'a later event to be counted' });
    expect(slack.postsTo(hook)).toHaveLength(2);

    // Off the list, then a quota that takes usage under it, then back on: its next crossing alerts.
    expect((await putTenant(tenant, { thresholds: [80] })).statusCode).toBe(200);
    expect((await putTenant(tenant, { monthlyQuota: 1000 })).statusCode).toBe(200);
    expect((await putTenant(tenant, { thresholds: [80, 100] })).statusCode).toBe(200);
    await post({ tenant, feature: 'f', tokens: 900 });
    await waitFor(() => slack.postsTo(hook).length === 4, { what: 'the 80% and 100% alerts of the new crossings' });
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

  it('keeps a slow webhook from delaying other tenants: 8 hanging webhooks, and a 9th tenant is alerted at once', async () => {
    const trickling = await startTricklingWebhook();
    try {
      const slow = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const tenant = uniqueName(`slow${i}`);
          expect((await putTenant(tenant, { monthlyQuota: 100, slackWebhookUrl: `${trickling.url}/hook/${tenant}` })).statusCode).toBe(201);
          return tenant;
        }),
      );
      // Each slow tenant crosses 80% and 100% at once: 16 alerts for the hanging host.
      await post(slow.map((tenant) => ({ tenant, feature: 'f', tokens: 120 })));
      await waitFor(() => trickling.open() >= 4, { what: 'deliveries hanging on the slow webhook' });
      const fast = await tenantWithHook('fast', 100);
      const crossedAt = Date.now();
      await post({ tenant: fast.tenant, feature: 'f', tokens: 90 });
      const delivered = await waitFor(() => slack.postsTo(fast.hook)[0], { timeoutMs: 15_000, what: 'the fast tenant alert' });
      const measuredMs = delivered!.at - crossedAt;
      console.info(
        `slow-webhook isolation: fast tenant delivered ${measuredMs} ms after crossing, with ${trickling.open()} slow deliveries hanging`,
      );
      expect(trickling.open()).toBeGreaterThan(0);
      // One host holds at most half of the 16 slots.
      expect(trickling.open()).toBeLessThanOrEqual(8);
      expect(measuredMs).toBeLessThan(2_500);
      // WEBHOOK_TIMEOUT (5 s) ends each attempt although a byte arrives every 2 s.
      const ended = await waitFor(() => trickling.connections.find((c) => c.closedAt !== undefined), {
        timeoutMs: 15_000,
        what: 'a slow attempt to be cut off',
      });
      expect(ended.closedAt! - ended.openedAt).toBeLessThan(6_500);
      trickling.answerFast();
      await waitFor(
        async () => {
          const [row] = await stack.runtime.db.query<{ delivered: number }>(
            `SELECT count(*)::int AS delivered FROM alerts WHERE status = 'delivered'
           AND tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))`,
            [JSON.stringify(slow)],
          );
          return row!.delivered === 16;
        },
        { timeoutMs: 40_000, what: 'the slow tenants alerts once the webhook answers' },
      );
    } finally {
      await trickling.close();
    }
  });

  it('reads at most a few KB of a webhook answer and ends an attempt at the deadline', async () => {
    const endless = await startTricklingWebhook();
    const flood = createTcpServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => {
        socket.write('HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n\r\n');
        const chunk = 'x'.repeat(16_384);
        const pump = (): void => {
          while (!socket.destroyed && socket.write(chunk));
          if (!socket.destroyed) socket.once('drain', pump);
        };
        pump();
      });
    });
    await new Promise<void>((resolve) => flood.listen(0, '127.0.0.1', resolve));
    const policy = { allowedHosts: ['127.0.0.1'], allowInsecure: true };
    try {
      const address = flood.address();
      const started = Date.now();
      const answer = await postWebhook(
        `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/x`,
        {},
        policy,
        10_000,
      );
      expect(answer.status).toBe(500);
      expect(answer.body.length).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
      expect(Date.now() - started).toBeLessThan(2_000);
      const hanging = Date.now();
      await expect(postWebhook(`${endless.url}/x`, {}, policy, 1_000)).rejects.toThrow(/within 1000 ms/);
      expect(Date.now() - hanging).toBeLessThan(1_800);
    } finally {
      flood.close();
      await endless.close();
    }
  });

  it('keeps the host allow list in insecure mode: only the https and private-address rules are lifted', async () => {
    for (const slackWebhookUrl of ['https://evil.example.com/hook', 'http://localhost:9/hook']) {
      const response = await putTenant(uniqueName('insecure'), { slackWebhookUrl });
      expect(response.statusCode, slackWebhookUrl).toBe(400);
      expect(errorBody.parse(response.json()).error.details?.[0]?.field).toBe('slackWebhookUrl');
    }
    expect((await putTenant(uniqueName('insecure'), { slackWebhookUrl: `${slack.url}/hook/ok` })).statusCode).toBe(201);
  });

  it('accepts only IANA zone names both Node and PostgreSQL know, and refuses offsets with 400 naming timeZone', async () => {
    // "+14:00" is UTC+14 to Node and UTC−14 to PostgreSQL; SystemV/EST5 is known to Node only.
    for (const timeZone of ['+0530', '+14:00', '-03', 'UTC+3', 'SystemV/EST5', ' Europe/Berlin', 'Europe/Berlin\n']) {
      const tenant = uniqueName('tz');
      const response = await putTenant(tenant, { timeZone });
      expect(response.statusCode, timeZone).toBe(400);
      expect(errorBody.parse(response.json()).error.details, timeZone).toEqual([expect.objectContaining({ field: 'timeZone' })]);
      expect((await app.inject({ method: 'GET', url: `/api/tenants/${tenant}`, headers: admin })).statusCode).toBe(404);
    }
    // PostgreSQL reads these as fixed-offset abbreviations, Node as zones with summer time: an hour at
    // seven month ends a year would count into one month and be read from another.
    for (const timeZone of ['CET', 'EET', 'MET', 'WET']) {
      const response = await putTenant(uniqueName('tz'), { timeZone });
      expect(response.statusCode, timeZone).toBe(400);
      const [detail] = errorBody.parse(response.json()).error.details!;
      expect(detail, timeZone).toEqual({ field: 'timeZone', message: expect.stringContaining('other offsets by PostgreSQL than by Node') });
    }
    for (const offset of ['+0530', '+14:00', '-03:00']) expect(isValidTimeZone(offset), offset).toBe(false);
    for (const timeZone of ['Europe/Berlin', 'America/New_York', 'US/Eastern', 'Etc/GMT+5', 'UTC', 'GMT', 'EST', 'Asia/Kolkata']) {
      const response = await putTenant(uniqueName('tz'), { timeZone });
      expect(response.statusCode, timeZone).toBe(201);
    }
    expect((await app.inject({ method: 'GET', url: '/api/tenants?limit=500', headers: admin })).statusCode).toBe(200);
  });

  it('repairs a zone stored before the rule (an offset) to UTC when the migrator runs', async () => {
    const { tenant } = await tenantWithHook('tzrepair', 1000);
    await stack.runtime.db.query(`UPDATE tenants SET time_zone = '+0530' WHERE name = $1`, [tenant]);
    expect((await app.inject({ method: 'GET', url: `/api/tenants/${tenant}`, headers: admin })).statusCode).toBe(500);
    await migrate(stack.runtime.db);
    const repaired = await app.inject({ method: 'GET', url: `/api/tenants/${tenant}`, headers: admin });
    expect(repaired.statusCode).toBe(200);
    expect(repaired.json().timeZone).toBe('UTC');
    // A zone PostgreSQL reads as a fixed abbreviation becomes the zone Node reads it as.
    for (const [stored, zone] of [
      ['CET', 'Europe/Brussels'],
      ['MET', 'Europe/Brussels'],
      ['EET', 'Europe/Athens'],
      ['WET', 'Europe/Lisbon'],
    ]) {
      await stack.runtime.db.query('UPDATE tenants SET time_zone = $2 WHERE name = $1', [tenant, stored]);
      await migrate(stack.runtime.db);
      const read = await app.inject({ method: 'GET', url: `/api/tenants/${tenant}`, headers: admin });
      expect(read.json().timeZone, stored).toBe(zone);
      expect(new Intl.DateTimeFormat('en', { timeZone: stored }).resolvedOptions().timeZone, stored).toBe(zone);
    }
    expect((await app.inject({ method: 'GET', url: '/api/tenants?limit=500', headers: admin })).statusCode).toBe(200);
  });

  it('takes the current period from the database clock, not the host clock, for quota changes and tenant views', async () => {
    const { tenant, hook } = await tenantWithHook('clock', 1000);
    await post({ tenant, feature: 'f', tokens: 900 });
    await waitFor(() => slack.postsTo(hook).length === 1, { what: 'the 80% alert' });
    const period = periodOf('UTC', Date.now());
    // The host clock runs 40 days ahead of PostgreSQL's: another month by the host's reckoning.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 40 * 86_400_000);
    try {
      const lowered = await putTenant(tenant, { monthlyQuota: 850 });
      expect(lowered.statusCode).toBe(200);
      expect(lowered.json().usage).toMatchObject({ period: { start: period.start.toISOString() }, tokens: 900 });
      const listed = await app.inject({ method: 'GET', url: `/api/tenants?q=${tenant}`, headers: admin });
      expect(listed.json().tenants[0].usage.period.start).toBe(period.start.toISOString());
    } finally {
      vi.useRealTimers();
    }
    // Lowering the quota below usage fired 100% in the database's current period.
    expect((await alertsOf(tenant)).map((alert) => [alert.threshold, alert.period])).toEqual([
      [100, period.startDay.slice(0, 7)],
      [80, period.startDay.slice(0, 7)],
    ]);
  });

  it('alerts a crossing by events counted ahead into the next period when it happens, due when that period begins', async () => {
    const { tenant, hook } = await tenantWithHook('ahead', 1000);
    const next = await postAhead(tenant, 850);
    const month = next.startDay.slice(0, 7);
    const listed = async () => (await alertsOf(tenant)).map((alert) => [alert.threshold, alert.period, alert.status]).sort();
    // Before, this crossing was dropped (not the current period) and, once the period began, every
    // later commit found 80% reached already: the alert was never made.
    await waitFor(async () => (await listed()).length === 1, { what: "the next period's 80% alert" });
    expect(await listed()).toEqual([[80, month, 'pending']]);
    // A quota change judges that period too: lowered under its usage, 100% fires, due at the same time.
    expect((await putTenant(tenant, { monthlyQuota: 800 })).statusCode).toBe(200);
    expect(await listed()).toEqual([
      [100, month, 'pending'],
      [80, month, 'pending'],
    ]);
    const due = await stack.runtime.db.query<{ due: Date }>('SELECT next_attempt_at AS due FROM alerts WHERE tenant = $1', [tenant]);
    expect(due.map((row) => new Date(row.due).getTime())).toEqual([next.start.getTime(), next.start.getTime()]);
    expect(slack.requests.filter((request) => request.path === hook)).toHaveLength(0);
    // When the period begins (brought forward here: the database clock cannot be moved), both are sent once.
    await stack.runtime.db.query('UPDATE alerts SET next_attempt_at = now() WHERE tenant = $1', [tenant]);
    await waitFor(() => slack.postsTo(hook).length === 2, { what: 'delivery once due' });
    // Marked delivered after Slack's answer arrives: a moment after the posts.
    await waitFor(async () => (await listed()).every(([, , status]) => status === 'delivered'), { what: 'both marked delivered' });
    expect(slack.postsTo(hook)).toHaveLength(2);
  });

  it('never sends an alert re-armed before its delivery: a quota raised before the next period begins', async () => {
    const { tenant, hook } = await tenantWithHook('ahead-rearmed', 1000);
    await postAhead(tenant, 850);
    await waitFor(async () => (await alertsOf(tenant)).length === 1, { what: "the next period's 80% alert" });
    // Raised before that period begins: 850 is no longer 80%.
    expect((await putTenant(tenant, { monthlyQuota: 2000 })).statusCode).toBe(200);
    const [rearmed] = await alertsOf(tenant);
    expect(rearmed).toMatchObject({
      threshold: 80,
      status: 'failed',
      lastError: expect.stringMatching(/^not sent: re-armed before delivery/),
    });
    expect(rearmed!.rearmedAt).not.toBeNull();
    // Due now; another tenant's alert due after it is sent, so the delivery loop has passed it by.
    await stack.runtime.db.query('UPDATE alerts SET next_attempt_at = now() WHERE tenant = $1', [tenant]);
    const later = await tenantWithHook('ahead-rearmed-later', 100);
    await post({ tenant: later.tenant, feature: 'f', tokens: 90 });
    await waitFor(() => slack.postsTo(later.hook).length === 1, { what: 'the later alert' });
    expect(slack.requests.filter((request) => request.path === hook)).toHaveLength(0);
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
    // Only the two processes apply traffic: the in-process aggregator would otherwise own partitions
    // and could apply everything while the killed process held none.
    await aggregator?.stop();
    aggregator = undefined;
    const owners = async (): Promise<Map<string, number>> => {
      const rows = await stack.runtime.db.query<{ owner: string; partitions: number }>(
        `SELECT owner, count(*)::int AS partitions FROM partition_checkpoints
         WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner`,
      );
      return new Map(rows.map((row) => [row.owner, row.partitions]));
    };
    const start = (id: string) => startAggregatorProcess(stack.env, id);
    const [a, b] = await Promise.all([start('alert-a'), start('alert-b')]);
    processes.push(a!, b!);
    await waitFor(
      async () => {
        const held = await owners();
        return held.get('alert-a')! > 0 && held.get('alert-b')! > 0 && held.size === 2;
      },
      { what: 'both processes, and only they, to own partitions' },
    );
    const appliedOnB = async (): Promise<bigint> => {
      const [row] = await stack.runtime.db.query<{ applied: bigint }>(
        `SELECT coalesce(sum(applied_events), 0)::bigint AS applied FROM partition_checkpoints WHERE owner = 'alert-b'`,
      );
      return row!.applied;
    };
    // Earlier tests' traffic is in these counters too: b's own share is what grows from here.
    const before = await appliedOnB();
    let appliedByB = 0n;
    for (let round = 0; round < 12; round++) {
      await post(tenants.map(({ tenant }) => ({ tenant, feature: 'f', tokens: 1000 })));
      if (round === 5) {
        // The kill matters: b owns partitions and has applied traffic from them when it dies.
        appliedByB = await waitFor(
          async () => {
            const applied = (await appliedOnB()) - before;
            return applied > 0n ? applied : undefined;
          },
          { what: 'the process to be killed to have applied events' },
        );
        expect((await owners()).get('alert-b')).toBeGreaterThan(0);
        await b!.kill('SIGKILL');
      }
    }
    expect(appliedByB).toBeGreaterThan(0n);
    await waitFor(
      async () => {
        for (const { tenant } of tenants) if (!(await usageIs(tenant, 12_000n))) return false;
        return true;
      },
      { timeoutMs: 60_000, what: 'all traffic to be applied' },
    );
    const rows = await stack.runtime.db.query<{ tenant: string; threshold: number; count: number }>(
      `SELECT tenant, threshold, count(*)::int AS count FROM alerts
       WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) GROUP BY tenant, threshold`,
      [JSON.stringify(tenants.map((t) => t.tenant))],
    );
    expect(rows).toHaveLength(tenants.length * 2);
    expect(rows.every((row) => row.count === 1)).toBe(true);
    // b's partitions were taken over by a once b's lease ran out.
    expect(await owners()).toEqual(new Map([['alert-a', 4]]));
    await waitFor(() => tenants.every(({ hook }) => slack.postsTo(hook).length >= 2), { what: 'every alert delivered' });
  });
});
