import { execFile, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { compileRouters, routeRequest, routerName, serviceLabels, stackRouters } from '../scripts/lib/traefik.ts';
import { freePort, ROOT, waitFor } from './helpers/processes.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, uniqueName, VALKEY_URL } from './helpers/services.ts';
import { buildBundles, jsonLines, type NodeProcess, startNode } from './helpers/stack.ts';

const run = promisify(execFile);
const HTTP_FUNCTIONS = Object.keys(FUNCTION_ROUTES) as (keyof typeof FUNCTION_ROUTES)[];
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

const hasDocker = (() => {
  try {
    execFileSync('docker', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** What `docker stack deploy` requires of the environment, with throwaway values. */
const STACK_ENV = {
  REGISTRY: 'registry.example.com/acme',
  TAG: 'test',
  DOMAIN: 'meter.example.com',
  ACME_EMAIL: 'ops@example.com',
  GRAFANA_DOMAIN: 'grafana.meter.example.com',
  CONFIG_HASH_PROMETHEUS: 'p1',
  CONFIG_HASH_ALERTS: 'a1',
  CONFIG_HASH_LOKI: 'l1',
  CONFIG_HASH_ALERTMANAGER: 'm1',
};

interface Service {
  image?: string;
  command?: string[] | string;
  environment?: Record<string, string>;
  secrets?: (string | { source: string })[];
  ports?: (string | { target: number; published?: number })[];
  entrypoint?: string[] | string;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  deploy?: {
    mode?: string;
    replicas?: number | string;
    labels?: Record<string, string>;
    resources?: { limits?: { cpus?: string; memory?: string } };
    update_config?: { order?: string; failure_action?: string };
    rollback_config?: Record<string, unknown>;
    restart_policy?: { condition?: string };
    placement?: { constraints?: string[] };
  };
}

interface StackFile {
  services: Record<string, Service>;
  networks: Record<string, { driver?: string; external?: boolean }>;
  secrets?: Record<string, unknown>;
  configs?: Record<string, { name?: string; file?: string }>;
}

const readStack = (file: string): StackFile => parse(readFileSync(join(ROOT, file), 'utf8'), { merge: true }) as StackFile;

/** A concrete path for a table route: each `:param` becomes a plausible value. */
const samplePath = (path: string): string => path.replace(/:[^/]+/g, 'acme-1');

/** The generic Swarm hygiene every long-running service of both stacks must show. */
function checkServiceHygiene(name: string, service: Service, placement: string): void {
  const deploy = service.deploy ?? {};
  expect(deploy.resources?.limits?.memory, `${name}: memory limit`).toBeTruthy();
  expect(deploy.resources?.limits?.cpus, `${name}: cpu limit`).toBeTruthy();
  expect(deploy.placement?.constraints, `${name}: placement`).toContain(placement);
  for (const port of service.ports ?? []) {
    const target = typeof port === 'string' ? Number(port.split(':').at(-1)) : port.target;
    expect([80, 443], `${name} publishes ${target}`).toContain(target);
  }
  if (deploy.mode === 'replicated-job') {
    // A one-shot job has nothing to health-check or roll: it runs to completion, retried on failure.
    // The image's own HTTP check must be off, or Swarm ends a job that runs past it.
    expect(deploy.restart_policy?.condition, `${name}: job restart policy`).toBe('on-failure');
    expect(service.healthcheck?.disable, `${name}: the image's health check disabled`).toBe(true);
    return;
  }
  expect(service.healthcheck?.disable, `${name}: health check disabled`).not.toBe(true);
  expect(service.healthcheck?.test?.length, `${name}: health check`).toBeGreaterThan(0);
  expect(deploy.update_config?.failure_action, `${name}: update failure action`).toBe('rollback');
  expect(['start-first', 'stop-first'], `${name}: update order`).toContain(deploy.update_config?.order);
  expect(deploy.rollback_config, `${name}: rollback policy`).toBeTruthy();
}

/** Secrets come from Docker secrets through *_FILE variables, never as plain environment values. */
function checkSecrets(name: string, service: Service): void {
  const mounted = new Set((service.secrets ?? []).map((secret) => (typeof secret === 'string' ? secret : secret.source)));
  for (const [key, value] of Object.entries(service.environment ?? {})) {
    if (/PASSWORD|TOKEN|SECRET|DATABASE_URL|VALKEY_URL|WEBHOOK_URL/.test(key)) {
      expect(key, `${name}: ${key} must be a *_FILE variable`).toMatch(/_FILE$/);
      const secret = /^\/run\/secrets\/(.+)$/.exec(String(value))?.[1];
      expect(secret && mounted.has(secret), `${name}: ${key} must point at a mounted secret`).toBe(true);
    }
    expect(String(value), `${name}: ${key} carries credentials`).not.toMatch(/:\/\/[^/\s]*:[^/\s]*@/);
  }
}

describe.skipIf(!hasDocker)('docker stack config', () => {
  test.each(['stacks/app.yml', 'stacks/observability.yml'])('accepts %s with the required variables set', async (file) => {
    const { stdout } = await run('docker', ['stack', 'config', '-c', file], { cwd: ROOT, env: { ...process.env, ...STACK_ENV } });
    expect(stdout).toContain('services:');
  });

  test('refuses app.yml without the required variables', async () => {
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' };
    await expect(run('docker', ['stack', 'config', '-c', 'stacks/app.yml'], { cwd: ROOT, env })).rejects.toThrow(/REGISTRY|DOMAIN|TAG/);
  });
});

describe('stacks/app.yml', () => {
  const stack = readStack('stacks/app.yml');
  // As `docker stack deploy` interpolates the labels: `$$` is a `$`, ${DOMAIN} the public host.
  const unescape = (value: string) => value.replaceAll('${DOMAIN}', STACK_ENV.DOMAIN).replaceAll('$$', '$');
  const host = STACK_ENV.DOMAIN;
  const routers = Object.entries(stack.services).flatMap(([service, spec]) =>
    Object.entries(spec.deploy?.labels ?? {})
      .filter(([key]) => /^traefik\.http\.routers\.[^.]+\.rule$/.test(key))
      .map(([key, rule]) => {
        const router = key.split('.')[3]!;
        const priority = spec.deploy?.labels?.[`traefik.http.routers.${router}.priority`];
        return { service, router, rule: unescape(rule), priority: priority === undefined ? undefined : Number(priority) };
      }),
  );
  const compiled = compileRouters(routers.map((router) => ({ name: router.service, rule: router.rule, priority: router.priority })));

  test('has a service for every function, the site, the aggregator, migrate, PostgreSQL, Valkey and Traefik', () => {
    for (const name of [...HTTP_FUNCTIONS, 'site', 'aggregator', 'migrate', 'postgres', 'valkey', 'traefik']) {
      expect(Object.keys(stack.services)).toContain(name);
    }
  });

  test('every route of every function is in exactly one Traefik rule, of its own service, and wins there', () => {
    for (const fn of HTTP_FUNCTIONS) {
      for (const route of FUNCTION_ROUTES[fn]) {
        const request = { method: route.method, path: samplePath(route.path), host };
        const matching = compileRouters(routers.map((router) => ({ name: `${router.service}/${router.router}`, rule: router.rule })))
          .filter((router) => router.match(request))
          .map((router) => router.name);
        // The API's and the site's catch-alls match too, with the lowest priorities.
        expect(
          matching.filter((name) => !name.startsWith('site/') && name !== 'health/flagmeter-api-fallback'),
          `${route.method} ${route.path}`,
        ).toEqual([`${fn}/${routerName(fn)}`]);
        expect(routeRequest(compiled, request), `${route.method} ${route.path}`).toBe(fn);
        expect(routeRequest(compiled, { ...request, path: `${request.path}/` }), `${route.method} ${route.path}/`).toBe(fn);
      }
    }
  });

  test('no rule sends a path to a function that does not serve it', () => {
    const owner = new Map<string, string>();
    for (const [fn, routes] of Object.entries(FUNCTION_ROUTES)) {
      for (const route of routes) {
        owner.set(`${route.method} ${samplePath(route.path)}`, fn);
        if (route.method === 'GET') owner.set(`HEAD ${samplePath(route.path)}`, fn);
      }
    }
    const paths = new Set([
      ...Object.values(FUNCTION_ROUTES)
        .flat()
        .map((route) => samplePath(route.path)),
      '/',
      '/dashboard',
      '/api',
      '/api/unknown',
      '/api/events/extra',
      '/api/usage',
      '/api/usage/acme-1/series/extra',
    ]);
    for (const path of paths) {
      for (const method of METHODS) {
        const target = routeRequest(compiled, { method, path, host });
        // API paths no function takes reach the health function, which answers 405 or 404 as JSON.
        const fallback = /^\/api(\/|$)/.test(path) ? 'health' : 'site';
        expect(target, `${method} ${path}`).toBe(owner.get(`${method} ${path}`) ?? fallback);
        // Another host pointed at Traefik (Grafana's) reaches no FlagMeter router at all.
        expect(
          routeRequest(compiled, { method, path, host: STACK_ENV.GRAFANA_DOMAIN }),
          `${method} ${path} on another host`,
        ).toBeUndefined();
      }
    }
  });

  test('the router labels are the ones generated from the route table (npm run stack:routes)', () => {
    const services = [...new Set(stackRouters().map((router) => router.service))];
    for (const service of services) expect(stack.services[service]?.deploy?.labels, service).toEqual(serviceLabels(service));
    const routed = Object.keys(stack.services).filter((name) => stack.services[name]!.deploy?.labels?.['traefik.enable'] === 'true');
    expect(routed.sort()).toEqual(services.sort());
  });

  test('third-party images are parameters defaulting to tags their registries publish', () => {
    expect(stack.services.traefik!.image).toBe('${TRAEFIK_IMAGE:-traefik:v3.5}');
    expect(stack.services.postgres!.image).toBe('${POSTGRES_IMAGE:-postgres:18-alpine}');
    expect(stack.services.valkey!.image).toBe('${VALKEY_IMAGE:-valkey/valkey:8-alpine}');
    // Docker Hub has the socket proxy's release tags without a `v` (its CI pushes the semver `0.3.0`).
    expect(stack.services['docker-api']!.image).toBe('${DOCKER_API_PROXY_IMAGE:-tecnativa/docker-socket-proxy:0.3.0}');
  });

  test('health checks hit a route each function serves itself, and only a 2xx passes', async () => {
    const { createServer } = await import('node:http');
    let status = 200;
    let asked = '';
    const server = createServer((request, response) => {
      asked = request.url ?? '';
      response.writeHead(status);
      response.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const probe = async (name: string): Promise<number> => {
      const [kind, command, flag, code] = [stack.services[name]!.healthcheck!.test].flat() as string[];
      expect([kind, command, flag], name).toEqual(['CMD', 'node', '-e']);
      const local = code!.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${port}`);
      return run(process.execPath, ['-e', local]).then(
        () => 0,
        (error: { code?: number }) => error.code ?? 1,
      );
    };
    try {
      for (const name of [...HTTP_FUNCTIONS, 'aggregator', 'site']) {
        status = 200;
        expect(await probe(name), `${name}: 200`).toBe(0);
        expect(asked, name).toBe(HTTP_FUNCTIONS.includes(name as never) ? '/healthz' : name === 'aggregator' ? '/metrics' : '/login');
        for (const failing of [404, 500, 503]) {
          status = failing;
          expect(await probe(name), `${name}: ${failing}`).toBe(1);
        }
      }
    } finally {
      server.close();
    }
  });

  test("the migrate jobs run without the image's HTTP health check, which would end a long migration", () => {
    expect(stack.services.migrate!.healthcheck).toEqual({ disable: true });
    expect(readFileSync(join(ROOT, 'scripts/deploy-migrate'), 'utf8')).toMatch(/docker service create [^\n]*--no-healthcheck/);
  });

  test('only Traefik publishes ports, and only 80 and 443: no metrics port leaves the overlay', () => {
    const publishing = Object.entries(stack.services).filter(([, service]) => (service.ports ?? []).length > 0);
    expect(publishing.map(([name]) => name)).toEqual(['traefik']);
    const targets = (stack.services.traefik!.ports ?? []).map((port) => (typeof port === 'string' ? port : port.target));
    expect(targets).toEqual([80, 443]);
  });

  test('every service has a health check, limits, an update and rollback policy, and is placed by node label', () => {
    const placement = (name: string) =>
      name === 'docker-api'
        ? 'node.role == manager'
        : ['postgres', 'valkey'].includes(name)
          ? 'node.labels.flagmeter.data == true'
          : 'node.labels.flagmeter.app == true';
    for (const [name, service] of Object.entries(stack.services)) checkServiceHygiene(name, service, placement(name));
    for (const name of [...HTTP_FUNCTIONS, 'site']) {
      expect(stack.services[name]!.deploy?.update_config?.order, name).toBe('start-first');
    }
    // Two live tasks of one slot would share an AGGREGATOR_ID and take each other's partitions.
    expect(stack.services.aggregator!.deploy?.update_config).toMatchObject({ order: 'stop-first', failure_action: 'rollback' });
    expect(stack.services.aggregator!.deploy?.rollback_config?.order).toBe('stop-first');
  });

  test('secrets reach services only as Docker secrets through *_FILE variables', () => {
    for (const [name, service] of Object.entries(stack.services)) checkSecrets(name, service);
    expect(stack.services.aggregator!.environment).toMatchObject({
      SLACK_WEBHOOK_URL_FILE: '/run/secrets/slack_webhook_url',
      METRICS_PORT: '9465',
    });
    expect(stack.services.postgres!.environment).toMatchObject({ POSTGRES_PASSWORD_FILE: '/run/secrets/postgres_password' });
  });

  test('each service mounts only the secrets it reads: the queue only where it is opened, the admin token only where credentials are checked', () => {
    const expected: Record<string, string[]> = {
      ingest: ['database_url', 'valkey_url', 'admin_token'],
      usage: ['database_url', 'admin_token'],
      health: ['database_url', 'valkey_url'],
      tenants: ['database_url', 'admin_token'],
      aggregator: ['database_url', 'valkey_url', 'slack_webhook_url'],
      site: ['database_url', 'admin_token'],
      migrate: ['database_url'],
    };
    for (const [name, secrets] of Object.entries(expected)) {
      const service = stack.services[name]!;
      const mounted = (service.secrets ?? []).map((secret) => (typeof secret === 'string' ? secret : secret.source));
      expect(mounted.toSorted(), name).toEqual(secrets.toSorted());
      // Every mounted secret is read through a *_FILE variable, and every *_FILE variable has its mount.
      const read = Object.entries(service.environment ?? {})
        .filter(([key]) => key.endsWith('_FILE'))
        .map(([, value]) => /^\/run\/secrets\/(.+)$/.exec(String(value))?.[1]);
      expect(read.toSorted(), `${name}: *_FILE variables`).toEqual(secrets.toSorted());
    }
  });

  test('the site trusts the proxy in front: its login throttle keys on each client, not on Traefik', () => {
    expect(stack.services.site!.environment).toMatchObject({
      TRUST_PROXY: 'true',
      PUBLIC_URL: 'https://${DOMAIN:?set DOMAIN to the public host name}',
    });
  });

  test('PostgreSQL, Valkey and Traefik carry the production settings', () => {
    const postgresArgs = [stack.services.postgres!.command].flat().join(' ');
    for (const setting of ['max_wal_size=', 'checkpoint_timeout=']) expect(postgresArgs).toContain(setting);
    // Commits are durable unless an operator opts out: an admin write (a key shown once) must survive a crash.
    expect(postgresArgs).toContain('synchronous_commit=${POSTGRES_SYNCHRONOUS_COMMIT:-on}');
    const valkeyArgs = [stack.services.valkey!.command].flat().join(' ');
    expect(valkeyArgs).toContain('--appendonly yes');
    expect(valkeyArgs).toMatch(/--appendfsync \$\{VALKEY_APPENDFSYNC:-everysec\}/);
    // The image's own entrypoint (it drops to the valkey user) and the password in a config file from
    // a secret: nothing secret on the command line `docker inspect` and `ps` show.
    expect(stack.services.valkey!.entrypoint).toBeUndefined();
    expect([stack.services.valkey!.command].flat().slice(0, 2)).toEqual(['valkey-server', '/run/secrets/valkey_config']);
    expect(valkeyArgs).not.toMatch(/requirepass|password/i);
    expect(stack.services.valkey!.secrets).toEqual(['valkey_config']);
    const traefikArgs = [stack.services.traefik!.command ?? []].flat();
    expect(traefikArgs.some((arg) => arg.startsWith('--providers.swarm'))).toBe(true);
    expect(traefikArgs).toContain('--entrypoints.web.address=:80');
    expect(traefikArgs).toContain('--entrypoints.websecure.address=:443');
    expect(traefikArgs).toContain('--entrypoints.web.http.redirections.entrypoint.scheme=https');
    expect(traefikArgs.some((arg) => /^--certificatesresolvers\.\$\{ACME_RESOLVER:-letsencrypt\}\.acme\.email=/.test(arg))).toBe(true);
    expect(stack.networks.flagmeter?.driver).toBe('overlay');
  });
});

describe('stacks/lambda/template.yml', () => {
  // CloudFormation's short-form tags (!Ref, !Sub) read as plain values.
  const tags = ['Ref', 'Sub', 'GetAtt'].map((name) => ({ tag: `!${name}`, resolve: (value: string) => value }));
  const template = parse(readFileSync(join(ROOT, 'stacks/lambda/template.yml'), 'utf8'), { customTags: tags }) as {
    Resources: Record<
      string,
      {
        Type: string;
        Properties: { CodeUri?: string; Events?: Record<string, { Type: string; Properties: { Method: string; Path: string } }> };
      }
    >;
  };

  test('one Lambda function per HTTP function, from its bundle, with exactly its routes from the route table', () => {
    const functions = Object.values(template.Resources).filter((resource) => resource.Type === 'AWS::Serverless::Function');
    expect(functions.map((fn) => fn.Properties.CodeUri).sort()).toEqual(HTTP_FUNCTIONS.map((name) => `../../dist/lambda/${name}/`).sort());
    for (const name of HTTP_FUNCTIONS) {
      const fn = functions.find((candidate) => candidate.Properties.CodeUri === `../../dist/lambda/${name}/`)!;
      const routes = Object.values(fn.Properties.Events ?? {}).map((event) => `${event.Properties.Method} ${event.Properties.Path}`);
      const table = FUNCTION_ROUTES[name].map((route) => `${route.method} ${route.path.replace(/:([^/]+)/g, '{$1}')}`);
      expect(routes.sort(), name).toEqual(table.sort());
    }
  });
});

describe('stacks/observability.yml', () => {
  const stack = readStack('stacks/observability.yml');

  test('runs Prometheus, Alertmanager, Grafana and Loki on the manager, on the app overlay network, with the same hygiene', () => {
    expect(Object.keys(stack.services).sort()).toEqual(['alertmanager', 'grafana', 'loki', 'prometheus']);
    for (const [name, service] of Object.entries(stack.services)) {
      checkServiceHygiene(name, service, 'node.role == manager');
      checkSecrets(name, service);
      expect(service.ports ?? [], name).toEqual([]);
    }
    expect(stack.networks.flagmeter).toMatchObject({ external: true });
    expect(readFileSync(join(ROOT, 'stacks/observability.yml'), 'utf8')).toContain('./observability/prometheus.yml');
  });

  test("every config's name carries the hash of its file, so an edit deploys a new config", () => {
    const configs = Object.entries(stack.configs ?? {});
    expect(configs.length).toBeGreaterThanOrEqual(4);
    for (const [key, config] of configs) expect(config.name, key).toMatch(/_\$\{CONFIG_HASH_[A-Z]+:\?/);
    const deploy = readFileSync(join(ROOT, 'scripts/deploy'), 'utf8');
    for (const [, config] of configs) {
      const variable = /\$\{(CONFIG_HASH_[A-Z]+)/.exec(config.name!)![1]!;
      expect(deploy, `scripts/deploy sets ${variable} from ${config.file}`).toMatch(
        new RegExp(`${variable}=\\$\\(config_hash ${config.file!.replace('./', 'stacks/')}\\)`),
      );
    }
  });

  test('Prometheus sends firing alerts to Alertmanager, which routes them to Slack', () => {
    const prometheus = parse(readFileSync(join(ROOT, 'stacks/observability/prometheus.yml'), 'utf8')) as {
      alerting?: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
    };
    expect(prometheus.alerting?.alertmanagers[0]?.static_configs[0]?.targets).toEqual(['alertmanager:9093']);
    const alertmanager = parse(readFileSync(join(ROOT, 'stacks/observability/alertmanager.yml'), 'utf8')) as {
      route: { receiver: string };
      receivers: { name: string; slack_configs?: { api_url_file?: string }[] }[];
    };
    const receiver = alertmanager.receivers.find((entry) => entry.name === alertmanager.route.receiver);
    expect(receiver?.slack_configs?.[0]?.api_url_file).toBe('/run/secrets/alertmanager_slack_webhook_url');
  });
});

describe.skipIf(!servicesAvailable)('npm run stack:local', () => {
  const adminToken = `stack-admin-${randomUUID()}`;
  const keySpace = createKeySpace();
  let outdir: string;
  let database: TestDatabase;
  let stack: NodeProcess;
  let url: string;
  let apiKey: string;

  const events = () => jsonLines(stack.output()).filter((line) => line.service === 'stack-local');
  const startedPid = (fn: string): number | undefined =>
    events()
      .filter((line) => line.msg === 'started' && line.function === fn)
      .at(-1)?.pid as number | undefined;
  const usageTokens = async (tenant: string): Promise<bigint> => {
    const response = await fetch(`${url}/api/usage/${tenant}`, { headers: { authorization: `Bearer ${apiKey}` } });
    if (response.status === 404) return 0n;
    const text = await response.text();
    return BigInt(/"tokens":(\d+)/.exec(text)?.[1] ?? '0');
  };
  const post = (body: unknown) =>
    fetch(`${url}/api/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  beforeAll(async () => {
    [{ outdir }, database] = await Promise.all([buildBundles(), createTestDatabase()]);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    stack = startNode(['run', '-s', 'stack:local', '--', '--dist', outdir], {
      cwd: ROOT,
      command: 'npm',
      group: true,
      env: {
        DATABASE_URL: database.url,
        VALKEY_URL,
        VALKEY_PREFIX: keySpace.prefix,
        ADMIN_TOKEN: adminToken,
        PORT: String(port),
        LOG_LEVEL: 'info',
      },
    });
    await waitFor(
      () => {
        if (stack.child.exitCode !== null) throw new Error(`stack:local exited:\n${stack.output()}`);
        return events().some((line) => line.msg === 'ready');
      },
      { timeoutMs: 60_000, what: 'stack:local to be ready' },
    );
    const created = await fetch(`${url}/api/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'stack test' }),
    });
    expect(created.status).toBe(201);
    apiKey = ((await created.json()) as { key: string }).key;
    // Each function learns new keys on its key-store refresh: wait until ingest and usage know it
    // (an empty batch is a 400 once authenticated; an unknown tenant a 404).
    await waitFor(async () => (await post([])).status === 400, { what: 'ingest to know the new key' });
    await waitFor(async () => (await fetch(`${url}/api/usage/nobody`, { headers: { authorization: `Bearer ${apiKey}` } })).status === 404, {
      what: 'usage to know the new key',
    });
  }, 150_000);

  afterAll(async () => {
    if (stack) {
      const stopped = stack.stop('SIGTERM');
      await Promise.race([stopped, waitFor(() => false, { timeoutMs: 30_000 }).catch(() => stack.stop('SIGKILL'))]);
    }
    await database?.drop();
    await keySpace.clear();
    if (outdir) rmSync(outdir, { recursive: true, force: true });
  }, 60_000);

  test('ingest, aggregation and usage work through the router with each function in its own process', async () => {
    const ready = events().find((line) => line.msg === 'ready') as {
      pid: number;
      functions: Record<string, { pid: number; port: number | null }>;
    };
    const pids = [...HTTP_FUNCTIONS, 'aggregator'].map((fn) => ready.functions[fn]?.pid);
    expect(pids.every((pid) => typeof pid === 'number')).toBe(true);
    expect(new Set([...pids, ready.pid, stack.child.pid]).size).toBe(pids.length + 2);

    // Each HTTP function answers its container health check itself.
    for (const fn of HTTP_FUNCTIONS) expect((await fetch(`http://127.0.0.1:${ready.functions[fn]!.port}/healthz`)).status, fn).toBe(200);
    const health = await fetch(`${url}/api/health`);
    expect(health.status).toBe(200);
    const tenant = uniqueName('stack');
    const accepted = await post([
      { tenant, feature: 'gpt-4o', tokens: 1200 },
      { tenant, feature: 'gpt-4o', tokens: 300 },
      { tenant, feature: 'openai/gpt-4o-mini', tokens: 45 },
    ]);
    expect(accepted.status).toBe(202);
    await waitFor(async () => (await usageTokens(tenant)) === 1545n, { what: 'the events to reach /api/usage' });
    const listed = await fetch(`${url}/api/keys`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(listed.status).toBe(200);
    // Every other path goes to the site, when the site has been built (astro build) before the bundle.
    if (existsSync(join(outdir, 'site'))) {
      const page = await fetch(`${url}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toContain('text/html');
    }
  }, 60_000);

  test('kill -9 of the usage process: ingest and health keep serving, and usage comes back', async () => {
    const pid = startedPid('usage')!;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => events().some((line) => line.msg === 'exited' && line.pid === pid), { what: 'the usage process to die' });

    const tenant = uniqueName('kill9');
    expect((await post({ tenant, feature: 'gpt-4o', tokens: 77 })).status).toBe(202);
    expect((await fetch(`${url}/api/health`)).status).toBe(200);

    await waitFor(() => startedPid('usage') !== pid, { what: 'usage to be restarted' });
    await waitFor(async () => (await usageTokens(tenant)) === 77n, { what: 'usage to answer with the new events' });
  }, 60_000);

  test('SIGTERM of the ingest process during load loses no accepted event', async () => {
    const tenant = uniqueName('sigterm');
    const requests = 240;
    const perRequest = 5;
    const workers = 8;
    const ingestPid = startedPid('ingest')!;
    let next = 0;
    let acceptedRequests = 0;
    let refused = 0;
    let signalled = false;
    const expected = Array.from({ length: requests }, (_, index) => index).reduce((sum, index) => sum + (index % 7) + 1, 0) * perRequest;

    // A well-behaved client: retries a request with the same event ids until it gets its 202.
    const worker = async () => {
      while (next < requests) {
        const index = next++;
        const body = Array.from({ length: perRequest }, (_, n) => ({
          tenant,
          feature: 'gpt-4o',
          tokens: (index % 7) + 1,
          id: `r${index}-${n}`,
        }));
        for (;;) {
          const status = await post(body).then(
            (response) => response.status,
            () => 0,
          );
          if (status === 202) break;
          refused += 1;
          expect([0, 502, 503]).toContain(status);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        acceptedRequests += 1;
        if (!signalled && acceptedRequests >= requests / 4) {
          signalled = true;
          process.kill(ingestPid, 'SIGTERM');
        }
      }
    };
    await Promise.all(Array.from({ length: workers }, worker));

    const exit = events().find((line) => line.msg === 'exited' && line.pid === ingestPid);
    // It drained and exited cleanly, and was replaced; load carried on through the new process.
    expect(exit).toMatchObject({ function: 'ingest', code: 0 });
    expect(startedPid('ingest')).not.toBe(ingestPid);
    process.stdout.write(`ingest SIGTERM under load: ${refused} refused attempts retried\n`);
    await waitFor(async () => (await usageTokens(tenant)) >= BigInt(expected), {
      timeoutMs: 30_000,
      what: 'every accepted event to be counted',
    });
    expect(await usageTokens(tenant)).toBe(BigInt(expected));
  }, 90_000);
});
