/**
 * The production shape on a real single-node Docker Swarm (`npm run test:swarm`): the stack
 * scripts/swarm-up deployed from this checkout, driven through its one entrypoint as clients and
 * operators drive it. The scenarios run in order on the one stack.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { beforeAll, describe, expect, inject, test } from 'vitest';
import { ROOT, waitFor } from '../helpers/processes.ts';
import { buildImage, containerOf, docker, entrypoint, running, script, serviceImage, sql, STACK, tasks, updateState } from './swarm.ts';

const swarm = inject('swarm');
const call = entrypoint(swarm);
const admin = { authorization: `Bearer ${swarm.ADMIN_TOKEN}`, 'content-type': 'application/json' };
const image = (name: string, tag: string) => `${swarm.REGISTRY}/flagmeter-${name}:${tag}`;
const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;
const figures: string[] = [];
const report = (line: string) => {
  figures.push(line);
  process.stdout.write(`${line}\n`);
};

let apiKey: string;
const keyed = () => ({ authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' });

async function usageTokens(tenant: string): Promise<bigint> {
  const answer = await call('GET', `/api/usage/${tenant}`, { headers: keyed() });
  if (answer.status === 404) return 0n;
  if (answer.status !== 200) throw new Error(`usage answered ${answer.status}`);
  return BigInt(/"tokens":(\d+)/.exec(answer.body)?.[1] ?? '0');
}

/**
 * A well-behaved client under load: `requests` batches of events with fixed ids, `workers` at a time,
 * each batch retried with the same ids until it is answered 202. `during` runs once a quarter of the
 * batches are in. Resolves with the tokens of every accepted batch and the refused attempts.
 */
async function retryingLoad(
  tenant: string,
  {
    requests = 200,
    perRequest = 5,
    workers = 6,
    during,
  }: { requests?: number; perRequest?: number; workers?: number; during?: () => Promise<void> } = {},
) {
  let next = 0;
  let accepted = 0;
  let tokens = 0n;
  const refused: number[] = [];
  let fault: Promise<void> | undefined;
  const worker = async () => {
    while (next < requests) {
      const index = next++;
      const events = Array.from({ length: perRequest }, (_, n) => ({
        tenant,
        feature: 'gpt-4o',
        tokens: (index % 7) + 1,
        id: `${tenant}-${index}-${n}`,
      }));
      for (;;) {
        const answer = await call('POST', '/api/events', { headers: keyed(), body: JSON.stringify(events) });
        if (answer.status === 202) break;
        refused.push(answer.status);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      accepted += 1;
      tokens += BigInt(((index % 7) + 1) * perRequest);
      if (during && !fault && accepted >= requests / 4) fault = during();
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  await fault;
  return { tokens, refused };
}

async function expectCounted(tenant: string, tokens: bigint): Promise<void> {
  await waitFor(async () => (await usageTokens(tenant)) >= tokens, {
    timeoutMs: 60_000,
    intervalMs: 250,
    what: `${tokens} tokens of ${tenant} to be counted`,
  });
  expect(await usageTokens(tenant)).toBe(tokens);
}

/** Running task ids of every stack service but `except`. */
async function otherTasks(except: string): Promise<Record<string, string[]>> {
  const names = (await docker(['service', 'ls', '--filter', `label=com.docker.stack.namespace=${STACK}`, '--format', '{{.Name}}'])).split(
    '\n',
  );
  const result: Record<string, string[]> = {};
  for (const name of names.map((full) => full.slice(STACK.length + 1)).filter((name) => name !== except && name !== 'migrate')) {
    result[name] = (await running(name)).map((task) => task.id).sort();
  }
  return result;
}

/** `scripts/deploy-function <name> <tag>` on the local Swarm (images already built here). */
const deployFunction = (name: string, tag: string) =>
  script('scripts/deploy-function', [name, tag], { REGISTRY: swarm.REGISTRY, SKIP_BUILD: '1' });

beforeAll(async () => {
  const created = await call('POST', '/api/keys', { headers: admin, body: JSON.stringify({ name: 'swarm scenarios' }) });
  expect(created.status, created.body).toBe(201);
  apiKey = (JSON.parse(created.body) as { key: string }).key;
  // Every function task learns new keys on its key-store refresh.
  await waitFor(async () => (await call('POST', '/api/events', { headers: keyed(), body: '[]' })).status === 400, {
    timeoutMs: 60_000,
    what: 'ingest to know the key',
  });
  await waitFor(async () => (await call('GET', '/api/usage/nobody', { headers: keyed() })).status === 404, {
    timeoutMs: 60_000,
    what: 'usage to know the key',
  });
});

describe('the stack on Docker Swarm', () => {
  test('events POSTed through the entrypoint are counted exactly: usage equals what was answered 202', async () => {
    const tenant = unique('exact');
    const { tokens } = await retryingLoad(tenant, { requests: 120, perRequest: 10 });
    await expectCounted(tenant, tokens);
    // A host other than the stack's public one reaches nothing (Host() on every router).
    const elsewhere = await call('GET', '/api/health', { headers: { host: 'grafana.example.com' } });
    expect(elsewhere.status).toBe(404);
  });

  test('dashboard login and the tenant settings form work behind the TLS proxy, with Secure cookies', async () => {
    const tenant = unique('form');
    expect((await call('PUT', `/api/tenants/${tenant}`, { headers: admin, body: JSON.stringify({ monthlyQuota: 1000 }) })).status).toBe(
      201,
    );
    const proxied = { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' };
    const origin = `https://${swarm.HOST}`;
    const form = { 'content-type': 'application/x-www-form-urlencoded', origin, ...proxied };
    const cookiesOf = (answer: { headers: Record<string, string | string[] | undefined> }) => [answer.headers['set-cookie'] ?? []].flat();
    const csrfOf = (html: string) => /name="_csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';

    const page = await call('GET', '/login', { headers: proxied });
    expect(page.status).toBe(200);
    const loginCookie = cookiesOf(page).find((cookie) => cookie.startsWith('fm_login='));
    expect(loginCookie).toMatch(/; Secure/i);
    const loggedIn = await call('POST', '/login?next=%2Fdashboard', {
      headers: { ...form, cookie: loginCookie!.split(';')[0]! },
      body: new URLSearchParams({ credential: swarm.ADMIN_TOKEN, _csrf: csrfOf(page.body) }).toString(),
    });
    expect(loggedIn.status, loggedIn.body.slice(0, 200)).toBe(303);
    const session = cookiesOf(loggedIn).find((cookie) => cookie.startsWith('fm_session='));
    expect(session).toMatch(/; Secure/i);
    expect(session).toMatch(/; HttpOnly/i);

    const cookie = session!.split(';')[0]!;
    const settings = await call('GET', `/dashboard/tenants/${tenant}`, { headers: { ...proxied, cookie } });
    expect(settings.status).toBe(200);
    const saved = await call('POST', `/dashboard/tenants/${tenant}`, {
      headers: { ...form, cookie },
      body: new URLSearchParams({
        monthlyQuota: '12345',
        thresholds: '50, 100',
        timeZone: 'UTC',
        slackWebhookUrl: '',
        _csrf: csrfOf(settings.body),
      }).toString(),
    });
    expect(saved.status, saved.body.slice(0, 200)).toBe(303);
    const stored = await call('GET', `/api/tenants/${tenant}`, { headers: admin });
    expect(JSON.parse(stored.body)).toMatchObject({ monthlyQuota: 12345, thresholds: [50, 100] });
  });

  test('docker kill of an ingest container under a retrying load: Swarm replaces it, nothing lost or doubled', async () => {
    const tenant = unique('kill');
    const before = new Set((await running('ingest')).map((task) => task.id));
    let killed = '';
    const { tokens, refused } = await retryingLoad(tenant, {
      during: async () => {
        killed = await containerOf('ingest');
        await docker(['kill', killed]);
      },
    });
    expect(killed).not.toBe('');
    report(`docker kill ingest under load: ${refused.length} refused attempts retried (${[...new Set(refused)].join(', ') || 'none'})`);
    await waitFor(
      async () => {
        const now = await running('ingest');
        return now.length === 2 && now.some((task) => !before.has(task.id));
      },
      { timeoutMs: 120_000, intervalMs: 500, what: 'Swarm to start a new ingest task' },
    );
    await expectCounted(tenant, tokens);
  });

  test('scripts/deploy-function ingest <new tag> rolls out only ingest', async () => {
    const tag = `${swarm.TAG}-r2`;
    await docker(['tag', image('ingest', swarm.TAG), image('ingest', tag)]);
    await docker(['tag', image('migrate', swarm.TAG), image('migrate', tag)]);
    const others = await otherTasks('ingest');
    const started = performance.now();
    const deployed = await deployFunction('ingest', tag);
    expect(deployed.code, deployed.output).toBe(0);
    report(`one-function rollout (deploy-function ingest, 2 tasks, migrations first): ${Math.round(performance.now() - started)} ms`);
    expect(await serviceImage('ingest')).toBe(image('ingest', tag));
    const now = await running('ingest');
    expect(now.map((task) => task.image.split('@')[0])).toEqual([image('ingest', tag), image('ingest', tag)]);
    expect(await otherTasks('ingest')).toEqual(others);
    const tenant = unique('rolled');
    expect(
      (await call('POST', '/api/events', { headers: keyed(), body: JSON.stringify({ tenant, feature: 'gpt-4o', tokens: 5 }) })).status,
    ).toBe(202);
    await expectCounted(tenant, 5n);
  });

  test('an image whose health check fails is rolled back by Swarm, and the old version keeps serving', async () => {
    const previous = await serviceImage('ingest');
    const tag = `${swarm.TAG}-broken`;
    // Starts and listens, but its health route answers 500: only a status-checking probe sees it.
    await buildImage(
      image('ingest', tag),
      [
        `FROM ${previous}`,
        `ENTRYPOINT ["node", "-e", "require('http').createServer((q, s) => { s.writeHead(q.url === '/healthz' ? 500 : 503); s.end(); }).listen(3000)"]`,
      ].join('\n'),
    );
    await docker(['tag', image('migrate', swarm.TAG), image('migrate', tag)]);
    const tenant = unique('rollback');
    let firstFailure = 0;
    let unhealthyAt = 0;
    let deployedAt = 0;
    // The broken task's health as Docker reports it: its first failing check, and when it is
    // declared unhealthy (retries used up after the start period), which is what Swarm acts on.
    const watch = (async () => {
      while (!unhealthyAt) {
        const ids = (await docker(['ps', '-aq', '--filter', `ancestor=${image('ingest', tag)}`])).split('\n').filter(Boolean);
        for (const id of ids) {
          const [status = '', streak = '0'] = (
            await docker([
              'inspect',
              '--format',
              '{{if .State.Health}}{{.State.Health.Status}} {{.State.Health.FailingStreak}}{{end}}',
              id,
            ]).catch(() => '')
          ).split(' ');
          if (Number(streak) > 0 && !firstFailure) firstFailure = performance.now();
          if (status === 'unhealthy' && !unhealthyAt) unhealthyAt = performance.now();
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const load = retryingLoad(tenant, {
      requests: 400,
      workers: 2,
      during: async () => {
        deployedAt = performance.now();
        const deployed = await deployFunction('ingest', tag);
        expect(deployed.code, deployed.output).not.toBe(0);
        expect(deployed.output).toMatch(/roll/i);
      },
    });
    const { tokens } = await load;
    await waitFor(async () => (await updateState('ingest')) === 'rollback_completed', {
      timeoutMs: 180_000,
      intervalMs: 250,
      what: 'the rollback to complete',
    });
    const done = performance.now();
    await watch;
    report(
      `health check failing → rollback done: ${Math.round(done - unhealthyAt)} ms from unhealthy, ${Math.round(done - firstFailure)} ms from the first failed check` +
        ` (update started → rollback done: ${Math.round(done - deployedAt)} ms)`,
    );
    expect(await serviceImage('ingest')).toBe(previous);
    expect((await running('ingest')).map((task) => task.image.split('@')[0])).toEqual([previous, previous]);
    await expectCounted(tenant, tokens);
  });

  test('migrations run before any function of a new version serves', async () => {
    const tag = `${swarm.TAG}-m1`;
    const journal = JSON.parse(readFileSync(join(ROOT, 'migrations/meta/_journal.json'), 'utf8')) as {
      entries: { idx: number; tag: string; when: number }[];
    };
    const probe = '9000_swarm_probe';
    const last = journal.entries.at(-1)!;
    journal.entries.push({ ...last, idx: last.idx + 1, tag: probe, when: Date.now() });
    await buildImage(
      image('migrate', tag),
      [
        `FROM ${image('migrate', swarm.TAG)}`,
        `COPY ${probe}.sql /app/migrations/`,
        'COPY _journal.json /app/migrations/meta/_journal.json',
      ].join('\n'),
      { [`${probe}.sql`]: 'CREATE TABLE swarm_probe (id integer PRIMARY KEY);\n', '_journal.json': JSON.stringify(journal) },
    );
    await docker(['tag', image('ingest', swarm.TAG), image('ingest', tag)]);
    expect(await sql(`SELECT count(*) FROM flagmeter_migrations WHERE tag = '${probe}'`)).toBe('0');

    const deployed = await deployFunction('ingest', tag);
    expect(deployed.code, deployed.output).toBe(0);
    const appliedAt = Date.parse(await sql(`SELECT to_json(applied_at) #>> '{}' FROM flagmeter_migrations WHERE tag = '${probe}'`));
    expect(appliedAt).toBeGreaterThan(0);
    const newTasks = (await tasks('ingest')).filter((task) => task.image.split('@')[0] === image('ingest', tag));
    expect(newTasks.length).toBeGreaterThanOrEqual(2);
    for (const task of newTasks) expect(task.createdAt, `task ${task.id} created before the migration`).toBeGreaterThan(appliedAt);
    expect(await sql("SELECT to_regclass('swarm_probe') IS NOT NULL")).toBe('t');
  });

  test("the aggregator's alert reaches a Slack stand-in running as a container", async () => {
    const standin = `${swarm.REGISTRY}/flagmeter-slack-standin:${swarm.TAG}`;
    const bundled = await build({
      entryPoints: [join(ROOT, 'tests/swarm/slack-standin.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      write: false,
      logLevel: 'warning',
    });
    await buildImage(standin, [`FROM ${swarm.NODE_IMAGE}`, 'COPY index.mjs /app/index.mjs'].join('\n'), {
      'index.mjs': bundled.outputFiles[0]!.text,
    });
    const endpointMode = (await docker(['service', 'inspect', '--format', '{{.Spec.EndpointSpec.Mode}}', `${STACK}_ingest`])) || 'vip';
    // The name swarm-up allows as a webhook host (WEBHOOK_ALLOWED_HOSTS); a stand-in of an earlier
    // run on an attached stack gives way.
    const service = 'slack';
    await docker(['service', 'rm', `${STACK}_${service}`]).catch(() => '');
    await docker([
      'service',
      'create',
      '--quiet',
      '--name',
      `${STACK}_${service}`,
      '--network',
      'flagmeter',
      '--endpoint-mode',
      endpointMode,
      standin,
    ]);
    await waitFor(async () => (await running(service)).length === 1, {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'the Slack stand-in to run',
    });

    const tenant = unique('alert');
    const settings = { monthlyQuota: 1000, thresholds: [50], slackWebhookUrl: `http://${STACK}_${service}:8080/hook` };
    const put = await call('PUT', `/api/tenants/${tenant}`, { headers: admin, body: JSON.stringify(settings) });
    expect(put.status, put.body).toBe(201);
    expect(
      (await call('POST', '/api/events', { headers: keyed(), body: JSON.stringify({ tenant, feature: 'gpt-4o', tokens: 600 }) })).status,
    ).toBe(202);
    const container = await containerOf(service);
    const received = async () =>
      JSON.parse(
        await docker([
          'exec',
          container,
          'node',
          '-e',
          "fetch('http://127.0.0.1:8080/received').then((r) => r.text()).then((t) => process.stdout.write(t))",
        ]),
      ) as { path: string; body: unknown }[];
    const post = await waitFor(
      async () => (await received()).find((entry) => entry.path === '/hook' && JSON.stringify(entry.body).includes(tenant)),
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: 'the alert to reach the Slack stand-in',
      },
    );
    expect(JSON.stringify(post.body)).toMatch(/50/);
    const alerts = await call('GET', `/api/tenants/${tenant}/alerts`, { headers: admin });
    expect(alerts.body).toContain('delivered');
  });
});
