/**
 * `npm run stack:local`: the Swarm stack without Docker. Runs the migrate bundle once, then each
 * built bundle (`npm run build`) as its own process on its own port, restarting any that exits the way
 * Swarm's restart policy would, and puts a router on PORT (default 3000) in front. The router
 * evaluates the very rules that become the Traefik labels of stacks/app.yml (scripts/lib/traefik.ts).
 *
 * Needs DATABASE_URL and VALKEY_URL. `--dist <dir>` runs bundles from another build folder.
 * Prints one JSON line per event (`started`, `exited`, `ready`), after the children's own log lines.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FUNCTION_ROUTES } from '../functions/routes.ts';
import { freePort, ROOT, spawnNode } from './lib/processes.ts';
import { createRouterProxy } from './lib/router.ts';
import { compileRouters, routeRequest, stackRouters } from './lib/traefik.ts';

const { values } = parseArgs({ options: { dist: { type: 'string', default: 'dist' } } });
const dist = resolve(ROOT, values.dist);

function log(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ level: 'info', time: new Date().toISOString(), service: 'stack-local', ...fields })}\n`);
}

function fail(message: string): never {
  process.stderr.write(`${JSON.stringify({ level: 'fatal', service: 'stack-local', msg: message })}\n`);
  process.exit(78);
}

for (const name of ['DATABASE_URL', 'VALKEY_URL']) {
  if (!process.env[name] && !process.env[`${name}_FILE`]) fail(`${name}: required (the functions run on real PostgreSQL and Valkey)`);
}
const listenPort = Number(process.env.PORT ?? 3000);
const listenHost = process.env.HOST ?? '127.0.0.1';

interface Unit {
  name: string;
  entry: string;
  /** The HTTP port the router forwards to; the aggregator has none. */
  port?: number;
  /** Readiness for units without an HTTP port: a log message the process prints once it runs. */
  readyMessage?: string;
  env: Record<string, string>;
  child?: ChildProcess;
  restarts: number;
}

const httpNames = Object.keys(FUNCTION_ROUTES);
const units: Unit[] = [];
for (const name of httpNames) {
  units.push({ name, entry: join(dist, name, 'index.mjs'), port: await freePort(), env: {}, restarts: 0 });
}
units.push({ name: 'aggregator', entry: join(dist, 'aggregator', 'index.mjs'), readyMessage: 'aggregator running', env: {}, restarts: 0 });
const siteEntry = join(dist, 'site', 'server', 'entry.mjs');
if (existsSync(siteEntry)) units.push({ name: 'site', entry: siteEntry, port: await freePort(), env: {}, restarts: 0 });
for (const unit of units) {
  if (!existsSync(unit.entry)) fail(`${unit.entry} not found: run npm run build first`);
  // Every process gets its own metrics port, as each container has its own network namespace on Swarm.
  unit.env = {
    HOST: '127.0.0.1',
    METRICS_HOST: '127.0.0.1',
    METRICS_PORT: String(await freePort()),
    ...(unit.port ? { PORT: String(unit.port) } : {}),
  };
}

let stopping = false;

/** Runs a bundle with this process's environment; its output is forwarded line by line so JSON logs stay one object per line. */
function spawnUnit(unit: Unit, onLine?: (line: string) => void): ChildProcess {
  return spawnNode([unit.entry], {
    cwd: join(unit.entry, '..'),
    env: { ...process.env, ...unit.env },
    // Forwarded as it comes; only a little is kept here.
    outputLimit: 64 * 1024,
    onLine: (line, stream) => {
      (stream === 'stdout' ? process.stdout : process.stderr).write(line);
      onLine?.(line);
    },
  }).child;
}

async function waitReady(unit: Unit, child: ChildProcess, sawReadyMessage: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${unit.name} exited during start-up`);
    if (unit.port) {
      const answered = await fetch(`http://127.0.0.1:${unit.port}/api/health`).then(
        () => true,
        () => false,
      );
      if (answered) return;
    } else if (sawReadyMessage()) {
      return;
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 25));
  }
  throw new Error(`${unit.name} was not ready within 30 s`);
}

/** Starts a unit and restarts it whenever it exits, with backoff, until the stack stops. */
async function run(unit: Unit): Promise<void> {
  let readySeen = false;
  const started = performance.now();
  const child = spawnUnit(unit, (line) => {
    if (unit.readyMessage && line.includes(`"msg":"${unit.readyMessage}"`)) readySeen = true;
  });
  unit.child = child;
  child.once('exit', (code, signal) => {
    if (stopping) return;
    log({ msg: 'exited', function: unit.name, pid: child.pid, code, signal });
    unit.restarts += 1;
    // Like Swarm's restart policy: come back, but do not spin on a process that cannot start.
    const delay = Math.min(2_000, 100 * 2 ** Math.min(unit.restarts - 1, 5));
    setTimeout(() => {
      if (!stopping) run(unit).catch((error: Error) => log({ level: 'error', msg: error.message, function: unit.name }));
    }, delay);
  });
  await waitReady(unit, child, () => readySeen);
  log({ msg: 'started', function: unit.name, pid: child.pid, port: unit.port ?? null, readyMs: Math.round(performance.now() - started) });
}

async function migrate(): Promise<void> {
  const child = spawnUnit({ name: 'migrate', entry: join(dist, 'migrate', 'index.mjs'), env: {}, restarts: 0 });
  const code = await new Promise<number | null>((resolveExit) => child.once('exit', resolveExit));
  if (code !== 0) fail(`migrate exited with ${code}`);
}

const ports = new Map(units.filter((unit) => unit.port).map((unit) => [unit.name, unit.port!]));
const routers = compileRouters(
  stackRouters().map((router) => ({ name: router.service as string, rule: router.rule, priority: router.priority })),
);
const { server: router, agent } = createRouterProxy({
  route: (request, path) => {
    const target = routeRequest(routers, { method: request.method ?? 'GET', path });
    const port = target ? ports.get(target) : undefined;
    return target && port ? { name: target, host: '127.0.0.1', port } : undefined;
  },
  forwarded: (request) => ({ for: request.socket.remoteAddress ?? '', proto: 'http' }),
});

async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log({ msg: 'stopping', signal });
  router.close();
  router.closeIdleConnections();
  const children = units.map((unit) => unit.child).filter((child): child is ChildProcess => child !== undefined);
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolveExit) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolveExit();
          const force = setTimeout(() => child.kill('SIGKILL'), 20_000);
          child.once('exit', () => {
            clearTimeout(force);
            resolveExit();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
  agent.destroy();
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

await migrate();
await Promise.all(units.map((unit) => run(unit))).catch((error: Error) => {
  void stop('start-up failure');
  fail(error.message);
});
await new Promise<void>((resolveListen, reject) => {
  router.once('error', reject);
  router.listen(listenPort, listenHost, resolveListen);
});
const address = router.address();
log({
  msg: 'ready',
  url: `http://${listenHost}:${typeof address === 'object' && address ? address.port : listenPort}`,
  pid: process.pid,
  functions: Object.fromEntries(units.map((unit) => [unit.name, { pid: unit.child?.pid, port: unit.port ?? null }])),
});
