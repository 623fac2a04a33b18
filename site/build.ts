import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SITE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(SITE, '..');
export const SITE_ENTRY = join(SITE, 'dist', 'server', 'entry.mjs');
// Under node_modules/, which git ignores, so an interrupted build never leaves a file to commit.
const LOCK = join(SITE, 'node_modules', '.flagmeter-build-lock');
// What the built site is made of: its own sources and the shared modules it bundles.
const SOURCES = [join(SITE, 'src'), join(SITE, 'public'), join(SITE, 'astro.config.mjs'), join(ROOT, 'shared'), join(ROOT, 'docs', 'benchmarks.md')];

function newestChange(path: string): number {
  if (!existsSync(path)) return 0;
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestChange(join(path, entry)));
  return newest;
}

function isStale(): boolean {
  if (!existsSync(SITE_ENTRY)) return true;
  return SOURCES.some((source) => newestChange(source) > statSync(SITE_ENTRY).mtimeMs);
}

function runBuild(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'node_modules', 'astro', 'bin', 'astro.mjs'), 'build', '--root', SITE], {
      cwd: ROOT,
      env: { ...process.env, ASTRO_TELEMETRY_DISABLED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`astro build failed (${code}):\n${output}`))));
  });
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A lock whose holder died (or died before writing its pid) is taken over. */
function abandoned(): boolean {
  try {
    const holder = Number(readFileSync(join(LOCK, 'pid'), 'utf8'));
    return !(holder > 0 && alive(holder));
  } catch {
    return existsSync(LOCK) && Date.now() - statSync(LOCK).mtimeMs > 10_000;
  }
}

/** Takes the build lock (a directory: creating one is atomic), clearing it if its holder died. */
async function withLock<T>(work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      mkdirSync(dirname(LOCK), { recursive: true });
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch {
      if (abandoned()) rmSync(LOCK, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`site build lock ${LOCK} held for over 3 minutes`);
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    return await work();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/**
 * Builds the site when site/dist is missing or older than its sources, so `npm start` and the tests
 * work straight after `npm install`; concurrent callers (parallel test files) build it once.
 */
export async function ensureSiteBuilt(): Promise<{ built: boolean }> {
  if (!isStale()) return { built: false };
  return withLock(async () => {
    if (!isStale()) return { built: false };
    await runBuild();
    return { built: true };
  });
}
