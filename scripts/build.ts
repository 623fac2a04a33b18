/**
 * `npm run build`: bundles each function (its container entry), the aggregator, the migrate job and —
 * when it has been built — the site server with esbuild into `dist/<name>/`, one self-contained
 * folder each: `index.mjs` plus only what cannot be bundled (migrations, the site's static files).
 * Prints each bundle's size. `--outdir <dir>` builds elsewhere (tests use their own folder).
 * Each function bundle also gets its V8 compile cache in `dist/<name>/.compile-cache/` (see writeCompileCache).
 */
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type BuildOptions, type Plugin } from 'esbuild';
import { builtinHttpByRequire, englishZodMessagesOnly, REQUIRE_BANNER } from './lib/bundle-plugins.ts';

const ROOT = resolve(import.meta.dirname, '..');

/** Container entries: what `node dist/<name>/index.mjs` runs. */
const BUNDLES = {
  ingest: 'functions/ingest/server.ts',
  usage: 'functions/usage/server.ts',
  health: 'functions/health/server.ts',
  tenants: 'functions/tenants/server.ts',
  aggregator: 'functions/aggregator/main.ts',
  migrate: 'scripts/migrate.ts',
} as const;

type BundleName = keyof typeof BUNDLES;

/** HTTP functions also ship as AWS Lambda handlers (same app, through @fastify/aws-lambda). */
const LAMBDA_HANDLERS = ['ingest', 'usage', 'health', 'tenants'] as const;

const SITE_SERVER = 'site/dist/server/entry.mjs';

const common: BuildOptions = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'esm',
  // Whitespace and syntax only: identifiers keep their names, so function and class names (error
  // types in logs, stack traces, Fastify's plugin names) stay readable without esbuild's keepNames,
  // which wraps every function created at run time in a `name` definition — on the request path too
  // (Fastify's per-request closures, every handler's), about 3-5 µs per request (docs/benchmarks.md).
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: false,
  legalComments: 'external',
  logLevel: 'warning',
  // Function bundles always run on real PostgreSQL; PGlite (a 10 MB WebAssembly build) is only for
  // `npm start`, loaded by a dynamic import the container path never reaches.
  external: ['@electric-sql/pglite'],
  banner: { js: REQUIRE_BANNER },
  absWorkingDir: ROOT,
  plugins: [englishZodMessagesOnly, builtinHttpByRequire],
};

function folderSize(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .reduce((sum, entry) => sum + statSync(join(entry.parentPath, entry.name)).size, 0);
}

const formatSize = (bytes: number): string =>
  bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(2)} MB` : `${(bytes / 1024).toFixed(1)} kB`;

async function bundleEntry(name: BundleName, outdir: string): Promise<void> {
  const dir = join(outdir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const migrate = name === 'migrate';
  await build({
    ...common,
    entryPoints: [join(ROOT, BUNDLES[name])],
    outfile: join(dir, 'index.mjs'),
    // shared/platform/migrate.ts finds migrations at `<its folder>/../../migrations`; in the bundle the
    // migrations sit beside index.mjs, so its folder is presented as two levels below the bundle's.
    ...(migrate
      ? {
          define: { 'import.meta.dirname': '__bundleModuleDir' },
          banner: { js: `${REQUIRE_BANNER} const __bundleModuleDir = import.meta.dirname + '/lib/platform';` },
        }
      : {}),
  });
  if (migrate) cpSync(join(ROOT, 'migrations'), join(dir, 'migrations'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: `flagmeter-${name}`, private: true, type: 'module' }, null, 2)}\n`);
  if (!migrate) await writeCompileCache(dir);
}

/** Where each bundle's V8 compile cache sits; the image sets NODE_COMPILE_CACHE to it (with NODE_COMPILE_CACHE_PORTABLE=1). */
const COMPILE_CACHE_DIR = '.compile-cache';

/**
 * Loads a bundle once in a child process so that Node writes its V8 compile cache beside it: a
 * started function then skips parsing and compiling its 2 MB bundle (measured in docs/benchmarks.md).
 * The child has no configuration, so the entry stops at its config check, after every module of the
 * bundle has been compiled and initialised; its exit is intercepted to write the cache first. The
 * cache is portable (keyed by the path relative to the cache folder), so it stays valid when the
 * folder is copied to /app in the image, and it is only used by the same Node version.
 */
async function writeCompileCache(dir: string): Promise<void> {
  const generator = `
    import module from 'node:module';
    module.enableCompileCache({ directory: ${JSON.stringify(join(dir, COMPILE_CACHE_DIR))}, portable: true });
    const exit = process.exit;
    process.exit = () => { module.flushCompileCache(); exit(0); };
    process.stdout.write = process.stderr.write = () => true;
    await import(${JSON.stringify(pathToFileURL(join(dir, 'index.mjs')).href)}).catch(() => undefined);
    module.flushCompileCache();
    exit(0);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', generator], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '' },
    stdio: 'ignore',
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((done) => child.once('exit', done));
  clearTimeout(killer);
  if (code !== 0 || !existsSync(join(dir, COMPILE_CACHE_DIR))) throw new Error(`writing the compile cache of ${dir} failed (exit ${code})`);
}

async function bundleLambda(name: (typeof LAMBDA_HANDLERS)[number], outdir: string): Promise<void> {
  const dir = join(outdir, 'lambda', name);
  rmSync(dir, { recursive: true, force: true });
  await build({ ...common, entryPoints: [join(ROOT, `functions/${name}/handler.ts`)], outfile: join(dir, 'index.mjs') });
}

/** Where site/container.ts imports Astro's server entry from: the `astro build` output. */
const astroEntry: Plugin = {
  name: 'flagmeter-astro-entry',
  setup(build) {
    build.onResolve({ filter: /^flagmeter:astro-entry$/ }, () => ({ path: join(ROOT, SITE_SERVER) }));
  },
};

/**
 * The site's container entry (site/container.ts, which stops on SIGTERM as the functions do) with the
 * Astro node server (`astro build` output) inside, bundled the same way; the client folder is copied
 * beside it so the adapter finds its static files at the same relative path.
 */
async function bundleSite(outdir: string): Promise<boolean> {
  if (!existsSync(join(ROOT, SITE_SERVER))) return false;
  const dir = join(outdir, 'site');
  rmSync(dir, { recursive: true, force: true });
  await build({
    ...common,
    entryPoints: [join(ROOT, 'site/container.ts')],
    outfile: join(dir, 'server', 'entry.mjs'),
    plugins: [...(common.plugins ?? []), astroEntry],
  });
  const client = join(ROOT, 'site/dist/client');
  if (existsSync(client)) cpSync(client, join(dir, 'client'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: 'flagmeter-site', private: true, type: 'module' }, null, 2)}\n`);
  return true;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { outdir: { type: 'string', default: 'dist' }, 'no-lambda': { type: 'boolean', default: false } },
  });
  const outdir = resolve(ROOT, values.outdir);
  mkdirSync(outdir, { recursive: true });
  const started = performance.now();
  const names = Object.keys(BUNDLES) as BundleName[];
  const [siteBuilt] = await Promise.all([
    bundleSite(outdir),
    ...names.map((name) => bundleEntry(name, outdir)),
    ...(values['no-lambda'] ? [] : LAMBDA_HANDLERS.map((name) => bundleLambda(name, outdir))),
  ]);
  const rows = [...names, ...(siteBuilt ? ['site'] : [])].map((name) => {
    const entry = name === 'site' ? 'server/entry.mjs' : 'index.mjs';
    return [name, formatSize(statSync(join(outdir, name, entry)).size), formatSize(folderSize(join(outdir, name)))];
  });
  if (!values['no-lambda']) {
    for (const name of LAMBDA_HANDLERS)
      rows.push([`lambda/${name}`, formatSize(statSync(join(outdir, 'lambda', name, 'index.mjs')).size), '']);
  }
  const widths = [0, 1, 2].map((column) => Math.max(...[['bundle', 'entry file', 'folder'], ...rows].map((row) => row[column]!.length)));
  const line = (row: string[]) =>
    row.map((cell, column) => (column === 0 ? cell.padEnd(widths[0]!) : cell.padStart(widths[column]!))).join('  ');
  process.stdout.write(`${line(['bundle', 'entry file', 'folder'])}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
  if (!siteBuilt) process.stdout.write(`site: ${SITE_SERVER} not found (run the site's astro build first); not bundled\n`);
  process.stdout.write(`built into ${relative(ROOT, outdir) || '.'} in ${Math.round(performance.now() - started)} ms\n`);
}

await main();
