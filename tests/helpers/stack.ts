import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import type { NodeProcess } from '../../scripts/lib/processes.ts';
import { ROOT, waitFor } from './processes.ts';
import { ADMIN_DATABASE_URL } from './services.ts';

const run = promisify(execFile);

/** `npm run build` into a folder of this test's own, so parallel test files never share a dist/. */
export async function buildBundles(): Promise<{ outdir: string; report: string }> {
  const outdir = mkdtempSync(join(tmpdir(), 'fm-dist-'));
  const { stdout } = await run('npm', ['run', '-s', 'build', '--', '--outdir', outdir, '--no-lambda'], {
    cwd: ROOT,
    env: { ...process.env },
    timeout: 120_000,
  });
  return { outdir, report: stdout };
}

/** An empty database (no migrations applied), for the migrate job to fill. */
export async function createEmptyDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `fm_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 1 });
    },
  };
}

export { type NodeProcess, spawnNode as startNode } from '../../scripts/lib/processes.ts';

/** The JSON objects among a process's output lines (pino and stack-local log one object a line). */
export function jsonLines(output: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line cut by the read in progress; the next read completes it.
    }
  }
  return lines;
}

/** Waits until `url` answers any HTTP response; returns the ms since `startedAt`. */
export async function waitForHttp(url: string, startedAt: number, process: NodeProcess, timeoutMs = 30_000): Promise<number> {
  await waitFor(
    async () => {
      if (process.child.exitCode !== null) throw new Error(`exited with ${process.child.exitCode}:\n${process.output()}`);
      return fetch(url).then(
        () => true,
        () => false,
      );
    },
    { timeoutMs, intervalMs: 5, what: `${url} to answer` },
  );
  return Math.round(performance.now() - startedAt);
}
