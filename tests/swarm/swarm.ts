import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from '../helpers/processes.ts';
import type { SwarmInfo } from './setup.ts';

const run = promisify(execFile);

export const STACK = 'flagmeter';

/** `docker <args>`: its trimmed stdout; throws with stderr when it fails. */
export async function docker(args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
  return stdout.trim();
}

/** Runs a script of the checkout with extra environment; resolves with its exit code and output. */
export async function script(path: string, args: string[], env: Record<string, string>): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(path, args, { cwd: ROOT, env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : 1, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One HTTP request to the stack's entrypoint, with the Host header of its public name (a TLS proxy
 * in front forwards it unchanged). Network errors resolve as status 0, for retrying clients.
 */
export function entrypoint(swarm: SwarmInfo) {
  const base = new URL(swarm.BASE);
  return (
    method: string,
    path: string,
    { headers = {}, body }: { headers?: Record<string, string>; body?: string } = {},
  ): Promise<Answer> =>
    new Promise((resolve) => {
      const request = httpRequest(
        {
          host: base.hostname,
          port: base.port,
          method,
          path,
          headers: { host: swarm.HOST, ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }), ...headers },
          timeout: 30_000,
        },
        (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }));
          response.on('error', () => resolve({ status: 0, headers: {}, body: '' }));
        },
      );
      request.on('timeout', () => request.destroy(new Error('timeout')));
      request.on('error', () => resolve({ status: 0, headers: {}, body: '' }));
      request.end(body);
    });
}

export interface Task {
  id: string;
  image: string;
  state: string;
  desired: string;
  createdAt: number;
}

/** The tasks of one stack service (all of its history Swarm keeps), newest first. */
export async function tasks(service: string): Promise<Task[]> {
  const ids = (await docker(['service', 'ps', '-q', '--no-trunc', `${STACK}_${service}`])).split('\n').filter(Boolean);
  if (ids.length === 0) return [];
  const raw = JSON.parse(await docker(['inspect', ...ids])) as {
    ID: string;
    CreatedAt: string;
    Spec: { ContainerSpec: { Image: string } };
    Status: { State: string };
    DesiredState: string;
  }[];
  return raw
    .map((task) => ({
      id: task.ID,
      image: task.Spec.ContainerSpec.Image,
      state: task.Status.State,
      desired: task.DesiredState,
      createdAt: Date.parse(task.CreatedAt),
    }))
    .sort((a, b) => b.createdAt - a.createdAt);
}

export const running = async (service: string): Promise<Task[]> =>
  (await tasks(service)).filter((task) => task.state === 'running' && task.desired === 'running');

/** The image a service's spec names (the digest Swarm may append is dropped). */
export async function serviceImage(service: string): Promise<string> {
  return (await docker(['service', 'inspect', '--format', '{{.Spec.TaskTemplate.ContainerSpec.Image}}', `${STACK}_${service}`])).split(
    '@',
  )[0]!;
}

export async function updateState(service: string): Promise<string> {
  return docker(['service', 'inspect', '--format', '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}', `${STACK}_${service}`]);
}

/** The id of one running container of a service. */
export async function containerOf(service: string): Promise<string> {
  const id = (await docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${STACK}_${service}`]))
    .split('\n')
    .filter(Boolean)[0];
  if (!id) throw new Error(`no running container of ${service}`);
  return id;
}

/** A SQL query run by psql inside the PostgreSQL container; rows as lines. */
export async function sql(query: string): Promise<string> {
  return docker(['exec', await containerOf('postgres'), 'psql', '-U', 'flagmeter', '-d', 'flagmeter', '-tAc', query]);
}

/** Builds an image from a Dockerfile given as text, with no build context beyond `files`. */
export async function buildImage(tag: string, dockerfile: string, files: Record<string, string> = {}): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fm-swarm-image-'));
  try {
    writeFileSync(join(dir, 'Dockerfile'), dockerfile);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), content);
    }
    await run('docker', ['build', '-q', '-t', tag, dir], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
