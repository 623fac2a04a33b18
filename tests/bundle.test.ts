import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectPostgres } from '../shared/platform/db.ts';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { ensureSiteBuilt } from '../site/build.ts';
import { holdRequest } from './helpers/held-request.ts';
import { freePort, waitFor } from './helpers/processes.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, VALKEY_URL } from './helpers/services.ts';
import { buildBundles, createEmptyDatabase, jsonLines, startNode, waitForHttp } from './helpers/stack.ts';

const HTTP_FUNCTIONS = Object.keys(FUNCTION_ROUTES) as (keyof typeof FUNCTION_ROUTES)[];
const BUNDLES = [...HTTP_FUNCTIONS, 'aggregator', 'migrate'];
// A route of each function that needs no credentials to answer: the bundle's own app must answer it.
const UNAUTHENTICATED_PROBE: Record<string, { method: string; path: string; status: number }> = {
  ingest: { method: 'POST', path: '/api/events', status: 401 },
  usage: { method: 'GET', path: '/api/usage/acme', status: 401 },
  health: { method: 'GET', path: '/api/health', status: 200 },
  tenants: { method: 'GET', path: '/api/keys', status: 401 },
};
// Functions that never touch the event queue: they start without VALKEY_URL.
const QUEUELESS = new Set(['usage', 'tenants']);

describe.skipIf(!servicesAvailable)('function bundles (npm run build)', () => {
  let outdir: string;
  let report: string;
  let database: TestDatabase;
  const keySpace = createKeySpace();
  const sandboxes: string[] = [];
  const startUpMs: Record<string, number> = {};

  /** A copy of one bundle in an empty folder outside the repository: no node_modules anywhere above. */
  const sandbox = (name: string): string => {
    const dir = mkdtempSync(join(tmpdir(), `fm-${name}-`));
    cpSync(join(outdir, name), dir, { recursive: true });
    sandboxes.push(dir);
    return dir;
  };

  beforeAll(async () => {
    // The site is bundled only once `astro build` has run.
    [{ outdir, report }, database] = await Promise.all([ensureSiteBuilt().then(buildBundles), createTestDatabase()]);
  }, 180_000);

  afterAll(async () => {
    process.stdout.write(`bundle start-up (spawn to first answer): ${JSON.stringify(startUpMs)}\n${report}`);
    for (const dir of [...sandboxes, outdir]) if (dir) rmSync(dir, { recursive: true, force: true });
    await database?.drop();
    await keySpace.clear();
  });

  test('the build writes one self-contained folder per function and reports each size', () => {
    for (const name of BUNDLES) {
      expect(report).toMatch(new RegExp(`^${name}\\s+[\\d.]+ (kB|MB)`, 'm'));
      const files = readdirSync(join(outdir, name), { recursive: true }).map(String);
      expect(files).toContain('index.mjs');
      expect(files.some((file) => file.includes('node_modules') || file.endsWith('.wasm'))).toBe(false);
      const entry = readFileSync(join(outdir, name, 'index.mjs'), 'utf8');
      // Bundled CommonJS calls require(); the ESM bundle defines it first.
      expect(entry.startsWith("import { createRequire as __createRequire } from 'node:module'")).toBe(true);
      // PGlite (npm start only) stays out: a 10 MB WebAssembly build would dwarf the function.
      expect(statSync(join(outdir, name, 'index.mjs')).size).toBeLessThan(4 * 1024 * 1024);
      // So do the OTLP exporters the OpenTelemetry SDK imports but FlagMeter never uses (gRPC, protobuf).
      expect(entry).not.toMatch(/node_modules\/(@grpc\/grpc-js|protobufjs)\//);
    }
    expect(readdirSync(join(outdir, 'migrate', 'migrations'))).toContain('meta');
  });

  test.each(HTTP_FUNCTIONS)('the %s bundle starts with only node and its folder, and answers', async (name) => {
    const dir = sandbox(name);
    const port = await freePort();
    const started = performance.now();
    const fn = startNode(['index.mjs'], {
      cwd: dir,
      env: {
        DATABASE_URL: database.url,
        ...(QUEUELESS.has(name) ? {} : { VALKEY_URL, VALKEY_PREFIX: keySpace.prefix }),
        PORT: String(port),
        METRICS_PORT: String(await freePort()),
        ADMIN_TOKEN: 'bundle-test-admin-token-0123456789',
      },
    });
    try {
      startUpMs[name] = await waitForHttp(`http://127.0.0.1:${port}/api/health`, started, fn);
      const probe = UNAUTHENTICATED_PROBE[name]!;
      const response = await fetch(`http://127.0.0.1:${port}${probe.path}`, { method: probe.method });
      expect(response.status).toBe(probe.status);
      expect(response.headers.get('content-type')).toContain('application/json');
      if (name === 'health') expect(await response.json()).toMatchObject({ status: 'ok' });
      // SIGTERM drains and exits cleanly, as `docker stop` and rolling updates expect.
      expect(await fn.stop('SIGTERM')).toBe(0);
    } finally {
      await fn.stop('SIGKILL');
    }
  });

  test('the site bundle serves on for SHUTDOWN_DELAY after SIGTERM, then finishes the request in flight and exits 0', async () => {
    const dir = sandbox('site');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const site = startNode(['server/entry.mjs'], {
      cwd: dir,
      env: {
        DATABASE_URL: database.url,
        ADMIN_TOKEN: 'bundle-test-admin-token-0123456789',
        HOST: '127.0.0.1',
        PORT: String(port),
        SHUTDOWN_DELAY: '2s',
      },
    });
    try {
      await waitForHttp(`${url}/login`, performance.now(), site);
      expect((await fetch(`${url}/login`)).status).toBe(200);
      // A login form whose body is held back: the site is in the middle of it when the signal comes.
      const body = 'token=wrong&csrf=wrong';
      // On a keep-alive connection, as Traefik's are: left open, it would idle for 5 s after its answer.
      const keepAlive = new Agent({ keepAlive: true });
      const held = holdRequest(`${url}/login`, body, {
        agent: keepAlive,
        headers: { origin: url, 'content-type': 'application/x-www-form-urlencoded' },
      });
      await held.received;

      const signalledAt = Date.now();
      process.kill(site.child.pid!, 'SIGTERM');
      // New connections, as a proxy that has not polled yet opens them: refused at once before.
      const statuses: number[] = [];
      while (Date.now() - signalledAt < 1_500) statuses.push((await fetch(`${url}/login`, { headers: { connection: 'close' } })).status);
      expect(statuses.length).toBeGreaterThan(0);
      expect(statuses.every((status) => status === 200)).toBe(true);
      // Past the delay the listener is closed, but the request in flight still gets its answer.
      await waitFor(
        () =>
          fetch(`${url}/login`).then(
            () => false,
            () => true,
          ),
        { timeoutMs: 5_000, what: 'the listener to close' },
      );
      expect(site.running()).toBe(true);
      expect((await held.finish()).status).toBe(403);
      // Its connection is closed once idle, not left to the 5 s keep-alive timeout.
      expect(await Promise.race([site.exited, sleep(3_000).then(() => 'still running')])).toBe(0);
      keepAlive.destroy();
      expect(Date.now() - signalledAt).toBeGreaterThanOrEqual(2_000);
      expect(jsonLines(site.output()).some((line) => line.msg === 'draining' && line.service === 'site')).toBe(true);
    } finally {
      await site.stop('SIGKILL');
    }
  });

  test('the aggregator bundle starts with only node and its folder, and takes its partitions', async () => {
    const dir = sandbox('aggregator');
    const started = performance.now();
    const aggregator = startNode(['index.mjs'], {
      cwd: dir,
      env: { DATABASE_URL: database.url, VALKEY_URL, VALKEY_PREFIX: keySpace.prefix, METRICS_PORT: String(await freePort()) },
    });
    try {
      await waitFor(() => jsonLines(aggregator.output()).some((line) => line.msg === 'aggregator running'), {
        what: `the aggregator to run:\n${aggregator.output()}`,
      });
      startUpMs.aggregator = Math.round(performance.now() - started);
      await waitFor(() => jsonLines(aggregator.output()).some((line) => line.msg === 'partitions acquired'), { what: 'partitions' });
      expect(await aggregator.stop('SIGTERM')).toBe(0);
    } finally {
      await aggregator.stop('SIGKILL');
    }
  });

  test('the migrate bundle applies the migrations it carries to an empty database', async () => {
    const empty = await createEmptyDatabase();
    const dir = sandbox('migrate');
    const migrate = startNode(['index.mjs'], { cwd: dir, env: { DATABASE_URL: empty.url } });
    const db = connectPostgres(empty.url, { max: 1 });
    try {
      expect(await migrate.exited, migrate.output()).toBe(0);
      const journal = JSON.parse(readFileSync(join(dir, 'migrations', 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string }[] };
      const applied = await db.query<{ tag: string }>('SELECT tag FROM flagmeter_migrations ORDER BY tag');
      expect(applied.map((row) => row.tag)).toEqual(journal.entries.map((entry) => entry.tag).sort());
      const [tenants] = await db.query<{ table: string | null }>("SELECT to_regclass('public.tenants')::text AS table");
      expect(tenants?.table).toBe('tenants');
    } finally {
      await migrate.stop('SIGKILL');
      await db.close();
      await empty.drop();
    }
  });
});
