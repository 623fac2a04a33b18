/**
 * Child processes and ports for the scripts that run FlagMeter as separate processes (bench, soak,
 * stack-local) and for the tests, which import it from here: one way to find a port, spawn a Node
 * process, keep its output and stop it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');

/** A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  { timeoutMs = 30_000, intervalMs = 50, what = 'condition' } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    await new Promise((done) => setTimeout(done, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
}

export interface NodeProcess {
  child: ChildProcess;
  /** Its stdout and stderr interleaved (the last `outputLimit` characters). */
  output(): string;
  /** Resolves with the exit code (null when a signal ended it) once the process has exited. */
  exited: Promise<number | null>;
  /** Whether it has not exited yet. */
  running(): boolean;
  /** Sends `signal` unless the process is gone, and resolves with its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGTERM, then SIGKILL if it is still running after `graceMs`. */
  terminate(graceMs?: number): Promise<number | null>;
}

export interface SpawnOptions {
  cwd?: string;
  /** The whole environment but PATH and HOME, which are passed on unless given: nothing else leaks in. */
  env?: Record<string, string | undefined>;
  /** Its own process group, so stopping it reaches every process it started. */
  group?: boolean;
  command?: string;
  /** Characters of output kept (all by default); older output is dropped. */
  outputLimit?: number;
  /** Called with each complete output line (newline included), e.g. to forward logs. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** Children still running; whatever the caller forgot (a failed setup, a crashed test) dies with us. */
const live = new Set<() => void>();
process.once('exit', () => {
  for (const kill of live) kill();
});

/** Runs `node <args>` (or `command <args>`) with piped output. */
export function spawnNode(
  args: string[],
  { cwd = ROOT, env = {}, group = false, command = process.execPath, outputLimit = Number.POSITIVE_INFINITY, onLine }: SpawnOptions = {},
): NodeProcess {
  const child = spawn(command, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  let output = '';
  const keep = (stream: 'stdout' | 'stderr') => {
    let partial = '';
    return (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      if (output.length > outputLimit) output = output.slice(-outputLimit);
      if (!onLine) return;
      partial += text;
      let newline = partial.indexOf('\n');
      while (newline >= 0) {
        onLine(partial.slice(0, newline + 1), stream);
        partial = partial.slice(newline + 1);
        newline = partial.indexOf('\n');
      }
    };
  };
  child.stdout!.on('data', keep('stdout'));
  child.stderr!.on('data', keep('stderr'));
  let code: number | null | undefined;
  const killOnExit = (): void => {
    try {
      if (child.pid !== undefined) process.kill(group ? -child.pid : child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  };
  live.add(killOnExit);
  const exited = new Promise<number | null>((done) =>
    child.once('exit', (exitCode) => {
      live.delete(killOnExit);
      done((code = exitCode));
    }),
  );
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (code === undefined && child.pid !== undefined) {
      try {
        process.kill(group ? -child.pid : child.pid, signal);
      } catch {
        // Already gone between the check and the signal.
      }
    }
    return exited;
  };
  return {
    child,
    output: () => output,
    exited,
    running: () => code === undefined,
    stop,
    async terminate(graceMs = 5_000) {
      const kill = setTimeout(() => void stop('SIGKILL'), graceMs);
      const exitCode = await stop('SIGTERM');
      clearTimeout(kill);
      return exitCode;
    },
  };
}
