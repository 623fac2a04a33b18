/**
 * `npm start`: the whole of FlagMeter in one process — every function on its route, the aggregator,
 * and the site — on embedded PostgreSQL and an in-process queue unless DATABASE_URL / VALKEY_URL are set.
 */
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startAggregator } from '../functions/aggregator/service.ts';
import { registerAllFunctions } from '../functions/api.ts';
import { allowedMethods } from '../functions/routes.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import { generateAdminToken, generateApiKey, hashSecret } from '../shared/domain/auth.ts';
import { loadConfigOrExit } from '../shared/platform/config.ts';
import { retryUntilDone } from '../shared/platform/db.ts';
import { mountSite } from '../site/server.ts';
import { createHttpApp } from '../shared/platform/http/app.ts';
import { migrate } from '../shared/platform/migrate.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { observeRuntime } from '../shared/runtime/observed.ts';
import { stopOnSignal } from '../shared/runtime/shutdown.ts';
import { startTelemetry } from '../shared/platform/telemetry/sdk.ts';

if (Number(process.versions.node.split('.')[0]) < 24) {
  process.stderr.write(`FlagMeter needs Node.js 24 or newer; this is ${process.version}.\n`);
  process.exit(1);
}

const config = loadConfigOrExit();
// The embedded database, the admin token and the API key live here: this user only (an existing
// folder is tightened too; PGlite creates its files world-readable inside it).
mkdirSync(config.DATA_DIR, { recursive: true, mode: 0o700 });
chmodSync(config.DATA_DIR, 0o700);

/**
 * One `npm start` per embedded database: PGlite takes no lock of its own, and two processes writing
 * one data folder corrupt it. The lock file holds the owner's pid and appears whole (linked from a
 * file already written); one left by a process that is gone is moved aside and taken over.
 */
function lockDataDir(): void {
  const path = join(config.DATA_DIR, 'npm-start.pid');
  const mine = `${path}.${process.pid}`;
  const ownerOf = (file: string): number | undefined => {
    try {
      return Number.parseInt(readFileSync(file, 'utf8'), 10);
    } catch {
      return undefined;
    }
  };
  /** A live npm start: the process exists and, where /proc tells, runs Node (a reused pid does not). */
  const isLiveStart = (pid: number): boolean => {
    if (!(pid > 0) || pid === process.pid) return false;
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
    }
    const cmdline = `/proc/${pid}/cmdline`;
    return !existsSync(cmdline) || /node/i.test(readFileSync(cmdline, 'utf8'));
  };
  writeFileSync(mine, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (;;) {
      try {
        linkSync(mine, path);
        process.once('exit', () => ownerOf(path) === process.pid && rmSync(path, { force: true }));
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const owner = ownerOf(path);
      if (owner === undefined) continue;
      if (isLiveStart(owner)) {
        process.stderr.write(
          `${JSON.stringify({ level: 'fatal', msg: `DATA_DIR: ${config.DATA_DIR} holds the embedded database of another npm start (pid ${owner}); stop that one, or give this one its own DATA_DIR` })}\n`,
        );
        process.exit(78);
      }
      // Stale. Moved aside first, so that of two starts taking it over only one removes it; a lock
      // that turns out to be another start's fresh one is put back.
      const aside = `${path}.${process.pid}.stale`;
      try {
        renameSync(path, aside);
      } catch {
        continue;
      }
      if (ownerOf(aside) !== owner) {
        try {
          linkSync(aside, path);
        } catch {
          // A third start linked its own meanwhile: the loop judges that one.
        }
      }
      rmSync(aside, { force: true });
    }
  } finally {
    rmSync(mine, { force: true });
  }
}
if (!config.DATABASE_URL) lockDataDir();

/** Writes a file whole or not at all (a crash mid-write must not leave half a secret). */
function writeWhole(path: string, text: string): void {
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, text, { mode: 0o600 });
  renameSync(partial, path);
}

/** A secret generated once and kept in the data folder, so restarts print the same one. */
function rememberedSecret(file: string, generate: () => string): string {
  const path = join(config.DATA_DIR, file);
  const saved = existsSync(path) ? readFileSync(path, 'utf8').trim() : '';
  // An empty or cut-short file (a crash or a full disk while an older version wrote it) is made anew.
  if (saved.length >= 16) return saved;
  const secret = generate();
  writeWhole(path, `${secret}\n`);
  return secret;
}

const generatedAdmin = !config.ADMIN_TOKEN;
config.ADMIN_TOKEN ??= rememberedSecret('admin-token', generateAdminToken);

// Before any app exists: instruments made earlier would stay no-ops.
const telemetry = await startTelemetry('flagmeter', config);
// The key store starts after the migrations: its first load would otherwise query a missing table.
const runtime = await createRuntime('flagmeter', { config, embedded: true, withoutKeys: true });
telemetry.announce(runtime.logger);
observeRuntime(runtime);
const { db, queue, logger } = runtime;
// Every start-up step is retried until the database is steady: a flaky connection delays start-up
// instead of ending it. Each step may run again after an attempt whose outcome was unknown.
await retryUntilDone('migrations', logger, () => migrate(db), { attemptTimeoutMs: Number.POSITIVE_INFINITY });
await retryUntilDone('loading API keys', logger, () => runtime.keys.refresh());
// Keeps them fresh from here on (its own first load repeats the one above).
await runtime.keys.start();

const keyFile = join(config.DATA_DIR, 'api-key');
const savedKey = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() : undefined;
const savedActive =
  savedKey !== undefined &&
  (
    await retryUntilDone('checking the saved API key', logger, () =>
      db.query('SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashSecret(savedKey)]),
    )
  ).length > 0;
let apiKey: string;
if (savedKey !== undefined && savedActive) {
  apiKey = savedKey;
} else {
  // Generated once, outside the retries: an insert whose answer was lost is repeated with the same key.
  const generated = generateApiKey();
  apiKey = (await retryUntilDone('creating the API key', logger, () => createApiKey(runtime, 'npm start', null, generated))).key;
  writeWhole(keyFile, `${apiKey}\n`);
}

const app = createHttpApp(logger, { methodsFor: allowedMethods });
registerAllFunctions(app, runtime);
await mountSite(app, runtime);

const aggregator = await startAggregator(runtime);
await app.listen({ port: config.PORT, host: config.HOST });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : config.PORT;
const base = `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${port}`;

const lines = [
  '',
  `FlagMeter is running on ${base}`,
  `  database: ${db.kind === 'pglite' ? `embedded PostgreSQL (PGlite) in ${config.DATA_DIR}/pglite` : 'PostgreSQL at DATABASE_URL'}`,
  `  queue:    ${queue.kind === 'memory' ? 'in-process (set VALKEY_URL for a durable Valkey queue)' : 'Valkey at VALKEY_URL'}`,
  generatedAdmin
    ? `  admin token (generated, kept in ${config.DATA_DIR}/admin-token): ${config.ADMIN_TOKEN}`
    : '  admin token: from ADMIN_TOKEN',
  `  API key (kept in ${keyFile}): ${apiKey}`,
  `  metrics:  ${telemetry.metricsUrl ?? 'off'}`,
  `  dashboard: ${base}/dashboard (log in with the admin token)`,
  '',
  'Try it:',
  `  curl -s -X POST ${base}/api/events -H 'Authorization: Bearer ${apiKey}' -H 'Content-Type: application/json' -d '{"tenant":"acme","feature":"gpt-4o","tokens":1200}'`,
  `  curl -s ${base}/api/usage/acme -H 'Authorization: Bearer ${apiKey}'`,
  '',
];
process.stdout.write(`${lines.join('\n')}\n`);

stopOnSignal(logger, 'stopping: draining requests and the aggregator', [() => app.close(), () => aggregator.stop(), () => runtime.close()]);
