import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { METRIC_NAMES } from '../shared/platform/telemetry/metrics.ts';
import { freePort, ROOT, type RunningProcess, startProcess, waitFor } from './helpers/processes.ts';
import { ADMIN_TOKEN, createTestStack, type TestStack } from './helpers/runtime.ts';
import { REQUIRE_SERVICES, servicesAvailable, uniqueName } from './helpers/services.ts';

const run = promisify(execFile);
const OBSERVABILITY = join(ROOT, 'stacks', 'observability');
const EXPORTED = new Set<string>(Object.values(METRIC_NAMES));
// Series Prometheus itself makes about every target: allowed in queries beside ours.
const PROMETHEUS_SERIES = new Set(['up']);

/** `name{labels} value` lines of a Prometheus text exposition. */
function parseExposition(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The base metric names of the series a process exports (histogram suffixes folded). */
const baseNames = (text: string): Set<string> =>
  new Set(parseExposition(text).map((sample) => sample.name.replace(/_(bucket|sum|count)$/, '')));

/** Every series name a PromQL expression mentions (label names, functions and keywords left out). */
function seriesIn(expr: string): string[] {
  const withoutStrings = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '');
  const withoutGrouping = withoutStrings.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...withoutGrouping.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)]
    .map((match) => match[1]!)
    .filter((name) => !/^(and|or|unless|bool|offset|le|inf|nan)$/i.test(name) && !/^\d/.test(name))
    .map((name) => name.replace(/_(bucket|sum|count)$/, ''));
}

interface LokiLine {
  labels: Record<string, string>;
  line: string;
}

/** A Loki push endpoint that keeps every line it is sent. */
async function fakeLoki(): Promise<{ url: string; lines: LokiLine[]; raw: string[]; server: Server }> {
  const lines: LokiLine[] = [];
  const raw: string[] = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      raw.push(body);
      if (request.method === 'POST' && request.url === '/loki/api/v1/push') {
        const push = JSON.parse(body) as { streams: { stream: Record<string, string>; values: [string, string][] }[] };
        for (const stream of push.streams) for (const [, line] of stream.values) lines.push({ labels: stream.stream, line });
      }
      response.statusCode = 204;
      response.end();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}`, lines, raw, server };
}

/** A Slack stand-in: the first request fails with 500, every later one is accepted. */
async function fakeWebhook(): Promise<{ port: number; requests: () => number; server: Server }> {
  let requests = 0;
  const server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      requests++;
      response.statusCode = requests === 1 ? 500 : 200;
      response.end(requests === 1 ? 'server error' : 'ok');
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, requests: () => requests, server };
}

describe.skipIf(!servicesAvailable)('metrics and logs of the real function processes', () => {
  let stack: TestStack;
  let loki: Awaited<ReturnType<typeof fakeLoki>>;
  let webhook: Awaited<ReturnType<typeof fakeWebhook>>;
  const processes: Record<string, RunningProcess> = {};
  const metricsPorts: Record<string, number> = {};
  const tenant = uniqueName('obs');
  const webhookSecret = `obs-webhook-secret-${uniqueName('s')}`;
  const requestId = uniqueName('obs-request');

  const scrape = async (name: string): Promise<string> => {
    const response = await fetch(`http://127.0.0.1:${metricsPorts[name]}/metrics`);
    expect(response.status).toBe(200);
    return response.text();
  };
  /** The value of one series (summed over the labels not given), or undefined when absent. */
  const valueOf = async (name: string, series: string, labels: Record<string, string> = {}): Promise<number | undefined> => {
    const matching = parseExposition(await scrape(name)).filter(
      (sample) => sample.name === series && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    );
    return matching.length === 0 ? undefined : matching.reduce((sum, sample) => sum + sample.value, 0);
  };
  const post = (body: string, { key = stack.apiKey, headers = {} }: { key?: string; headers?: Record<string, string> } = {}) =>
    fetch(`${processes.ingest!.url}/api/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body,
    });

  beforeAll(async () => {
    [stack, loki, webhook] = await Promise.all([createTestStack(), fakeLoki(), fakeWebhook()]);
    const entries = {
      ingest: 'functions/ingest/server.ts',
      usage: 'functions/usage/server.ts',
      health: 'functions/health/server.ts',
      tenants: 'functions/tenants/server.ts',
      aggregator: 'functions/aggregator/main.ts',
    };
    await Promise.all(
      Object.entries(entries).map(async ([name, entry]) => {
        metricsPorts[name] = await freePort();
        const env = {
          ...stack.env,
          METRICS_PORT: String(metricsPorts[name]),
          LOKI_URL: loki.url,
          // Debug: the per-request lines must carry no secret either.
          LOG_LEVEL: 'debug',
          WEBHOOK_ALLOW_INSECURE: 'true',
          WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
          ALERT_RETRY_BASE: '100ms',
        };
        processes[name] = await startProcess(entry, env, {
          // Metrics start first; ready means the function itself serves too (the aggregator has no HTTP port).
          ready: async (output, url) =>
            (await fetch(`http://127.0.0.1:${metricsPorts[name]}/metrics`).catch(() => undefined))?.status === 200 &&
            (name === 'aggregator'
              ? output.includes('"msg":"aggregator running"')
              : (await fetch(`${url}/api/health`).catch(() => undefined)) !== undefined),
        });
      }),
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.all(Object.values(processes).map((process) => process.kill('SIGKILL')));
    await new Promise((resolve) => loki?.server.close(resolve));
    await new Promise((resolve) => webhook?.server.close(resolve));
    await stack?.close();
  });

  test('a known workload shows up with exact values on each function and the aggregator', async () => {
    const put = await fetch(`${processes.tenants!.url}/api/tenants/${tenant}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ monthlyQuota: 100, slackWebhookUrl: `http://127.0.0.1:${webhook.port}/services/T0/B0/${webhookSecret}` }),
    });
    expect(put.status, await put.text()).toBeLessThan(300);

    // 10 accepted (100 tokens: crosses 80% and 100% of the quota), 2 duplicates, 3 rejected.
    const event = (index: number) => ({ tenant, feature: 'gpt-4o', tokens: 10, id: `e${index}` });
    const batch = await post(JSON.stringify(Array.from({ length: 8 }, (_, index) => event(index))), {
      headers: { 'x-request-id': requestId },
    });
    expect(batch.status).toBe(202);
    for (const index of [8, 9]) expect((await post(JSON.stringify(event(index)))).status).toBe(202);
    const duplicates = await post(JSON.stringify([event(0), event(1)]));
    expect(await duplicates.json()).toMatchObject({ accepted: 0, duplicates: 2 });
    expect((await post(JSON.stringify({ tenant, feature: 'gpt-4o', tokens: -1 }))).status).toBe(400);
    expect((await post('{"tenant":', {})).status).toBe(400);
    expect((await post(JSON.stringify(event(20)), { key: 'fm_not-a-real-key-0123456789abcdef' })).status).toBe(401);

    expect(await valueOf('ingest', 'flagmeter_ingest_events_accepted_total')).toBe(10);
    expect(await valueOf('ingest', 'flagmeter_ingest_events_duplicate_total')).toBe(2);
    expect(await valueOf('ingest', 'flagmeter_ingest_requests_rejected_total', { reason: 'invalid_event' })).toBe(1);
    expect(await valueOf('ingest', 'flagmeter_ingest_requests_rejected_total', { reason: 'malformed_json' })).toBe(1);
    expect(await valueOf('ingest', 'flagmeter_ingest_requests_rejected_total', { reason: 'unauthorized' })).toBe(1);
    expect(await valueOf('ingest', 'flagmeter_ingest_requests_rejected_total')).toBe(3);
    const events = { route: '/api/events', method: 'POST' };
    expect(await valueOf('ingest', 'flagmeter_http_request_duration_seconds_count', { ...events, status_code: '202' })).toBe(4);
    expect(await valueOf('ingest', 'flagmeter_http_request_duration_seconds_count', { ...events, status_code: '400' })).toBe(2);
    expect(await valueOf('ingest', 'flagmeter_http_request_duration_seconds_count', { ...events, status_code: '401' })).toBe(1);
    expect(await valueOf('ingest', 'flagmeter_http_request_duration_seconds_bucket', { ...events, status_code: '202', le: '+Inf' })).toBe(
      4,
    );

    // The aggregator commits all 10, creates both alerts and delivers them (one after a retry).
    await waitFor(async () => (await valueOf('aggregator', 'flagmeter_aggregator_events_applied_total')) === 10, {
      what: '10 events applied',
    });
    await waitFor(async () => (await valueOf('aggregator', 'flagmeter_alert_deliveries_total', { outcome: 'delivered' })) === 2, {
      what: 'two alerts delivered',
    });
    expect(await valueOf('aggregator', 'flagmeter_alerts_created_total')).toBe(2);
    expect(await valueOf('aggregator', 'flagmeter_alerts_created_total', { threshold: '80' })).toBe(1);
    expect(await valueOf('aggregator', 'flagmeter_alerts_created_total', { threshold: '100' })).toBe(1);
    expect(await valueOf('aggregator', 'flagmeter_alert_deliveries_total', { outcome: 'retry' })).toBe(1);
    expect(await valueOf('aggregator', 'flagmeter_alert_delivery_attempts_count', { outcome: 'delivered' })).toBe(2);
    // One alert went through at its first attempt, the other at its second.
    expect(await valueOf('aggregator', 'flagmeter_alert_delivery_attempts_sum', { outcome: 'delivered' })).toBe(3);
    expect(await valueOf('aggregator', 'flagmeter_aggregator_batch_events_sum')).toBe(10);
    expect(await valueOf('aggregator', 'flagmeter_aggregator_commit_duration_seconds_count')).toBe(
      await valueOf('aggregator', 'flagmeter_aggregator_batch_events_count'),
    );
    // The backlog falls when the runner trims what it committed (on its next idle round, or within a
    // second), which may come after the deliveries above: wait for it rather than race it.
    const backlog = await waitFor(
      async () => {
        const samples = parseExposition(await scrape('aggregator')).filter((sample) => sample.name === 'flagmeter_queue_backlog_events');
        return samples.length === 4 && samples.every((sample) => sample.value === 0) ? samples : undefined;
      },
      { timeoutMs: 10_000, what: 'every partition backlog gauge at 0' },
    );
    expect(backlog.map((sample) => sample.labels.partition).sort()).toEqual(['0', '1', '2', '3']);
    // Nothing waits, so nothing lags.
    expect(await valueOf('aggregator', 'flagmeter_aggregator_lag_seconds')).toBe(0);

    const usage = await fetch(`${processes.usage!.url}/api/usage/${tenant}`, { headers: { authorization: `Bearer ${stack.apiKey}` } });
    expect(await usage.json()).toMatchObject({ tokens: 100 });
    expect(
      await valueOf('usage', 'flagmeter_http_request_duration_seconds_count', { route: '/api/usage/:tenant', status_code: '200' }),
    ).toBe(1);
    // Raw paths never become labels: a 404 counts under one "unmatched" series.
    await fetch(`${processes.usage!.url}/no/such/${uniqueName('path')}`);
    expect(
      await valueOf('usage', 'flagmeter_http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      await valueOf('tenants', 'flagmeter_http_request_duration_seconds_count', { route: '/api/tenants/:tenant', method: 'PUT' }),
    ).toBe(1);

    for (const name of Object.keys(processes)) {
      expect(await valueOf(name, 'flagmeter_dependency_up', { dependency: 'postgres' }), name).toBe(1);
      // Usage and tenants never touch the queue: no Valkey client, so no Valkey series either.
      expect(await valueOf(name, 'flagmeter_dependency_up', { dependency: 'valkey' }), name).toBe(
        ['usage', 'tenants'].includes(name) ? undefined : 1,
      );
      expect(await valueOf(name, 'flagmeter_dependency_latency_seconds', { dependency: 'postgres' }), name).toBeGreaterThan(0);
      expect(await valueOf(name, 'flagmeter_db_pool_size'), name).toBe(10);
      expect(await valueOf(name, 'flagmeter_db_pool_in_use'), name).toBeGreaterThanOrEqual(0);
    }
    const healthOk = { route: '/api/health', method: 'GET', status_code: '200' };
    const healthBefore = (await valueOf('health', 'flagmeter_http_request_duration_seconds_count', healthOk)) ?? 0;
    expect((await fetch(`${processes.health!.url}/api/health`)).status).toBe(200);
    expect(await valueOf('health', 'flagmeter_http_request_duration_seconds_count', healthOk)).toBe(healthBefore + 1);
  });

  test('every exported series is documented, and every function exports its own', async () => {
    const docs = readFileSync(join(ROOT, 'docs', 'observability.md'), 'utf8');
    for (const name of EXPORTED) expect(docs, name).toContain(`\`${name}\``);
    const ingest = baseNames(await scrape('ingest'));
    for (const name of ['flagmeter_ingest_events_accepted_total', 'flagmeter_http_request_duration_seconds', 'flagmeter_dependency_up']) {
      expect(ingest.has(name), name).toBe(true);
    }
    const aggregator = baseNames(await scrape('aggregator'));
    for (const name of [
      'flagmeter_queue_backlog_events',
      'flagmeter_aggregator_lag_seconds',
      'flagmeter_aggregator_events_applied_total',
    ]) {
      expect(aggregator.has(name), name).toBe(true);
    }
  });

  test('logs reach Loki with service, environment and level labels and the request id, and never a secret', async () => {
    const services = ['ingest', 'usage', 'health', 'tenants', 'aggregator'];
    await waitFor(() => services.every((service) => loki.lines.some((line) => line.labels.service === service)), {
      what: `log lines from every function (so far: ${JSON.stringify([...new Set(loki.lines.map((line) => line.labels.service))])})`,
    });
    // The per-request line (debug) of the batch carries the request id the client sent.
    const requestLine = await waitFor(() => loki.lines.find((line) => line.line.includes(requestId)), { what: 'the request id in Loki' });
    expect(requestLine.labels).toMatchObject({ service: 'ingest', environment: 'development', level: 'debug' });
    expect(JSON.parse(requestLine.line)).toMatchObject({ reqId: requestId, route: '/api/events', status: 202, msg: 'request completed' });
    await waitFor(() => loki.lines.some((line) => line.labels.service === 'aggregator' && line.line.includes('alert delivered')), {
      what: 'the delivery log line',
    });
    for (const line of loki.lines) {
      expect(Object.keys(line.labels).sort()).toEqual(['environment', 'level', 'service']);
      expect(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).toContain(line.labels.level);
    }
    const everything = loki.raw.join('\n');
    expect(everything).not.toContain(stack.apiKey);
    expect(everything).not.toContain(ADMIN_TOKEN);
    expect(everything).not.toContain(webhookSecret);
    expect(everything).not.toContain('fm_not-a-real-key');
    expect(everything.toLowerCase()).not.toContain('bearer ');
  });
});

describe('observability stack files', () => {
  const dashboard = JSON.parse(readFileSync(join(OBSERVABILITY, 'grafana', 'dashboards', 'flagmeter.json'), 'utf8')) as {
    title: string;
    uid: string;
    panels: { type: string; title: string; datasource?: { uid: string }; targets?: { expr: string; datasource?: { uid: string } }[] }[];
  };
  const datasources = parseYaml(readFileSync(join(OBSERVABILITY, 'grafana', 'provisioning', 'datasources', 'datasources.yml'), 'utf8')) as {
    datasources: { uid: string; type: string; url: string }[];
  };
  const prometheus = parseYaml(readFileSync(join(OBSERVABILITY, 'prometheus.yml'), 'utf8')) as {
    rule_files: string[];
    scrape_configs: { job_name: string; dns_sd_configs?: { names: string[]; port: number }[] }[];
  };
  const rules = parseYaml(readFileSync(join(OBSERVABILITY, 'alerts.yml'), 'utf8')) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  };
  const queryPanels = dashboard.panels.filter((panel) => panel.type !== 'row');

  test('the stack mounts exactly the files provided here', () => {
    const stackFile = readFileSync(join(ROOT, 'stacks', 'observability.yml'), 'utf8');
    for (const path of [...stackFile.matchAll(/\.\/observability\/[\w./-]+/g)].map((match) => match[0])) {
      expect(existsSync(join(ROOT, 'stacks', path)), path).toBe(true);
    }
    expect(existsSync(join(OBSERVABILITY, 'grafana', 'provisioning', 'dashboards', 'dashboards.yml'))).toBe(true);
    expect(existsSync(join(OBSERVABILITY, 'loki.yml'))).toBe(true);
  });

  test('the dashboard "FlagMeter" queries only series FlagMeter exports, through provisioned datasources', () => {
    expect(dashboard.title).toBe('FlagMeter');
    const uids = new Map(datasources.datasources.map((source) => [source.uid, source.type]));
    expect([...uids.values()].sort()).toEqual(['loki', 'prometheus']);
    const queried = new Set<string>();
    for (const panel of queryPanels) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets!) {
        const source = uids.get(target.datasource?.uid ?? panel.datasource?.uid ?? '');
        expect(source, panel.title).toBeDefined();
        if (source === 'loki') {
          expect(target.expr).toMatch(/service=/);
          continue;
        }
        const names = seriesIn(target.expr);
        expect(names.length, `${panel.title}: ${target.expr}`).toBeGreaterThan(0);
        for (const name of names) {
          expect(EXPORTED.has(name) || PROMETHEUS_SERIES.has(name), `${panel.title}: ${name}`).toBe(true);
          queried.add(name);
        }
      }
    }
    // What an operator must see at a glance.
    for (const name of [
      METRIC_NAMES.eventsAccepted,
      METRIC_NAMES.httpRequestDuration,
      METRIC_NAMES.queueBacklog,
      METRIC_NAMES.aggregatorLag,
      METRIC_NAMES.alertsCreated,
      METRIC_NAMES.alertDeliveries,
      METRIC_NAMES.dependencyUp,
    ]) {
      expect(queried.has(name), name).toBe(true);
    }
    const expressions = queryPanels.flatMap((panel) => panel.targets!.map((target) => target.expr)).join('\n');
    for (const quantile of ['0.5', '0.95', '0.99'])
      expect(expressions).toContain(`histogram_quantile(${quantile}, sum by (le) (rate(flagmeter_http_request_duration_seconds_bucket`);
    expect(expressions).toContain('status_code=~"4.."');
    expect(expressions).toContain('status_code=~"5.."');
  });

  test('Prometheus scrapes every function by Swarm service DNS on its metrics port, and the rules name our series', () => {
    const app = parseYaml(readFileSync(join(ROOT, 'stacks', 'app.yml'), 'utf8')) as {
      services: Record<string, { environment?: Record<string, string> }>;
    };
    const jobs = new Map(prometheus.scrape_configs.map((job) => [job.job_name, job]));
    for (const name of ['ingest', 'usage', 'health', 'tenants', 'aggregator']) {
      expect(app.services[name], name).toBeDefined();
      const sd = jobs.get(name)?.dns_sd_configs?.[0];
      expect(sd?.names).toEqual([`tasks.flagmeter_${name}`]);
      expect(String(sd?.port)).toBe(app.services[name]!.environment?.METRICS_PORT ?? '9464');
    }
    expect(jobs.get('aggregator')?.dns_sd_configs?.[0]?.port).toBe(9465);
    expect(prometheus.rule_files).toEqual(['alerts.yml']);
    const alerts = rules.groups.flatMap((group) => group.rules);
    expect(alerts.map((rule) => rule.alert)).toEqual(
      expect.arrayContaining([
        'FlagMeterQueueBacklogGrowing',
        'FlagMeterAggregatorLagHigh',
        'FlagMeterSlackDeliveryFailed',
        'FlagMeterServerErrors',
      ]),
    );
    for (const rule of alerts) {
      for (const name of seriesIn(rule.expr))
        expect(EXPORTED.has(name) || PROMETHEUS_SERIES.has(name), `${rule.alert}: ${name}`).toBe(true);
    }
  });

  const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((path) => existsSync(path));
  test.skipIf(!promtool && !REQUIRE_SERVICES)('promtool check config and check rules pass', async () => {
    expect(promtool, 'promtool (Debian package prometheus) is required under FLAGMETER_REQUIRE_SERVICES=1').toBeDefined();
    const config = await run(promtool!, ['check', 'config', join(OBSERVABILITY, 'prometheus.yml')]);
    expect(config.stdout + config.stderr).toContain('SUCCESS');
    const checked = await run(promtool!, ['check', 'rules', join(OBSERVABILITY, 'alerts.yml')]);
    expect(checked.stdout + checked.stderr).toMatch(/SUCCESS: \d+ rules found/);
  });
});
