import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(check: () => Promise<T> | T, { timeoutMs = 30_000, intervalMs = 50, what = 'condition' } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
}

export interface RunningProcess {
  child: ChildProcess;
  port: number;
  url: string;
  output(): string;
  /** Resolves once the process has exited. */
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts a TypeScript entry point as its own Node process (the way a container runs it) and waits
 * until `ready` says so: by default, until its HTTP port accepts a request.
 */
export async function startProcess(
  entry: string,
  env: Record<string, string | undefined>,
  { ready, port: givenPort }: { ready?: (output: string, url: string) => Promise<boolean> | boolean; port?: number } = {},
): Promise<RunningProcess> {
  const port = givenPort ?? (await freePort());
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, entry)], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info', PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code ?? -1));
  const url = `http://127.0.0.1:${port}`;
  const isReady =
    ready ??
    (async () => {
      const response = await fetch(`${url}/api/health`).catch(() => undefined);
      return response !== undefined;
    });
  await waitFor(
    async () => {
      if (exitCode !== undefined) throw new Error(`${entry} exited with ${exitCode}:\n${output}`);
      return isReady(output, url);
    },
    { timeoutMs: 30_000, what: `${entry} to be ready` },
  ).catch((error: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${error.message}\n--- output ---\n${output}`);
  });
  return {
    child,
    port,
    url,
    output: () => output,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (exitCode === undefined) child.kill(signal);
      return exited;
    },
  };
}

/** The aggregator as its own process (as a container runs it); ready once it logs that it runs. */
export function startAggregatorProcess(env: Record<string, string | undefined>, id?: string): Promise<RunningProcess> {
  return startProcess('functions/aggregator/main.ts', { ...env, ...(id ? { AGGREGATOR_ID: id } : {}), LOG_LEVEL: 'info' }, {
    ready: (output) => output.includes('aggregator running'),
  });
}
