import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort, ROOT, spawnNode, waitFor } from '../../scripts/lib/processes.ts';

export { freePort, ROOT, waitFor } from '../../scripts/lib/processes.ts';

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
  const node = spawnNode(['--import', 'tsx', join(ROOT, entry)], {
    env: { LOG_LEVEL: 'info', PORT: String(port), HOST: '127.0.0.1', ...env },
  });
  const { child, exited } = node;
  const url = `http://127.0.0.1:${port}`;
  const isReady =
    ready ??
    (async () => {
      const response = await fetch(`${url}/api/health`).catch(() => undefined);
      return response !== undefined;
    });
  await waitFor(
    async () => {
      if (!node.running()) throw new Error(`${entry} exited with ${child.exitCode ?? child.signalCode}:\n${node.output()}`);
      return isReady(node.output(), url);
    },
    { timeoutMs: 30_000, what: `${entry} to be ready` },
  ).catch((error: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${error.message}\n--- output ---\n${node.output()}`);
  });
  return {
    child,
    port,
    url,
    output: node.output,
    exited,
    kill: (signal: NodeJS.Signals = 'SIGKILL') => node.stop(signal),
  };
}

/** The aggregator as its own process (as a container runs it); ready once it logs that it runs. */
export function startAggregatorProcess(env: Record<string, string | undefined>, id?: string): Promise<RunningProcess> {
  return startProcess(
    'functions/aggregator/main.ts',
    { ...env, ...(id ? { AGGREGATOR_ID: id } : {}), LOG_LEVEL: 'info' },
    {
      ready: (output) => output.includes('aggregator running'),
    },
  );
}
