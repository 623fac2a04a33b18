import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { ROOT } from '../helpers/processes.ts';

/** What scripts/swarm-up prints (KEY=value lines), for the scenarios. */
export interface SwarmInfo {
  BASE: string;
  HOST: string;
  ADMIN_TOKEN: string;
  DEPLOY_TO_HEALTHY_MS: string;
  REGISTRY: string;
  TAG: string;
  NODE_IMAGE: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    swarm: SwarmInfo;
  }
}

/** Runs a script of the checkout, its log lines passed through, and resolves with its stdout. */
function runScript(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(script, [], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${script} exited with ${code}`))));
  });
}

const stateDir = (): string =>
  process.env.SWARM_STATE_DIR ?? join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'flagmeter-swarm');

/**
 * Up before the scenarios, down after them, whatever they did. SWARM_ATTACH=1 runs them on the stack
 * a `npm run swarm:up` left running, and leaves it so.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = performance.now();
  const attach = process.env.SWARM_ATTACH === '1';
  let output: string;
  if (attach) {
    output = readFileSync(join(stateDir(), 'up.out'), 'utf8');
  } else {
    try {
      output = await runScript('scripts/swarm-up');
    } catch (error) {
      await runScript('scripts/swarm-down');
      throw error;
    }
  }
  const info = Object.fromEntries(
    output
      .split('\n')
      .map((line) => /^([A-Z_]+)=(.*)$/.exec(line))
      .filter((match): match is RegExpExecArray => match !== null)
      .map((match) => [match[1], match[2]]),
  ) as unknown as SwarmInfo;
  process.stdout.write(
    `swarm:up ${Math.round((performance.now() - started) / 1000)} s; docker stack deploy → all healthy ${info.DEPLOY_TO_HEALTHY_MS} ms\n`,
  );
  project.provide('swarm', info);
  return async () => {
    if (!attach) await runScript('scripts/swarm-down');
  };
}
