/**
 * `@flagmeter/client` as a user gets it: packed by `npm run pack:client`, installed from the tarball
 * alone (offline) into an empty project, run by plain `node` (no loader, no flags) against a running
 * FlagMeter, `require()`d, and type-checked by a TypeScript consumer.
 *
 * It runs on every Node binary it finds: this one (24), /usr/bin/node (20 on the development machine)
 * and any listed in CLIENT_TEST_NODES (colon-separated paths, e.g. a Node 22).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_PACKAGE_DIR, packClient, type PackedClient } from '../scripts/pack-client.ts';
import { type RunningProcess, startAggregatorProcess, waitFor } from './helpers/processes.ts';
import { buildApi, createTestStack, type TestStack } from './helpers/runtime.ts';
import { servicesAvailable, uniqueName } from './helpers/services.ts';

const execFileAsync = promisify(execFile);
const EVENTS = 1_000;
const FEATURES = ['gpt-4o', 'claude-sonnet-4', 'text-embedding-3-small', 'whisper-1'];
/** The oldest Node the package declares: AbortSignal.any arrived in 20.3. */
const MIN_NODE = [20, 3];

/** The consumer program, exactly as a user would write it: plain ESM JavaScript. */
const SEND_SCRIPT = `
import { createMeter } from '@flagmeter/client';

const [url, apiKey, tenant] = process.argv.slice(2);
const features = ${JSON.stringify(FEATURES)};
const errors = [];
const meter = createMeter({ url, apiKey, onError: (error) => errors.push(error) });
for (let index = 0; index < ${EVENTS}; index++) {
  void meter.track({ tenant, feature: features[index % features.length], tokens: 1 + ((index * 7919) % 1000) });
}
await meter.close({ timeoutMs: 30000 });
process.stdout.write(JSON.stringify({ node: process.version, stats: meter.stats(), errors: errors.map((error) => error.message) }));
`;

/** What SEND_SCRIPT sends, per feature. */
function expectedTokens(): Map<string, number> {
  const expected = new Map<string, number>();
  for (let index = 0; index < EVENTS; index++) {
    const feature = FEATURES[index % FEATURES.length]!;
    expected.set(feature, (expected.get(feature) ?? 0) + 1 + ((index * 7919) % 1_000));
  }
  return expected;
}

const REQUIRE_SCRIPT = `
const client = require('@flagmeter/client');
const meter = client.createMeter({ url: 'http://127.0.0.1:9', apiKey: 'fm_unused' });
process.stdout.write(JSON.stringify({ exports: Object.keys(client).sort(), isMeter: meter instanceof client.Meter, tokens: client.tokensFromUsage({ inputTokens: 2, outputTokens: 3 }) }));
`;

const CONSUMER_TS = `
import { createMeter, FlagMeterError, type Meter, type MeterStats, type ModelResponse, tokensFromAnthropic } from '@flagmeter/client';

const meter: Meter = createMeter({ url: 'https://meter.example.com', apiKey: 'fm_key', onBufferFull: 'block' });
const id: Promise<string> = meter.track({ tenant: 'acme', feature: 'gpt-4o', tokens: 42 });
const response: ModelResponse = { id: 'msg_1', model: 'claude-sonnet-4', usage: { input_tokens: 1, output_tokens: 2 } };
const tracked: Promise<string | undefined> = meter.trackResponse(response, { tenant: 'acme', includeCache: true });
const stats: MeterStats = meter.stats();
const tokens: number = tokensFromAnthropic({ input_tokens: 1, output_tokens: 2 });
const isError = (error: unknown): boolean => error instanceof FlagMeterError && error.status === 403;
// @ts-expect-error tokens must be a number
void meter.track({ tenant: 'acme', feature: 'gpt-4o', tokens: '42' });
export { id, isError, stats, tokens, tracked };
`;

/** Every Node binary at hand, one per version; the test verifies the package on each. */
function nodeBinaries(): { path: string; version: string }[] {
  const candidates = [process.execPath, '/usr/bin/node', ...(process.env.CLIENT_TEST_NODES?.split(':').filter(Boolean) ?? [])];
  const found = new Map<string, string>();
  for (const path of candidates) {
    if (!existsSync(path)) continue;
    const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
    if (!found.has(version)) found.set(version, path);
  }
  return [...found].map(([version, path]) => ({ path, version }));
}

const atLeast = (version: string, [major, minor]: number[]): boolean => {
  const [actualMajor, actualMinor] = version.slice(1).split('.').map(Number) as [number, number];
  return actualMajor > major! || (actualMajor === major && actualMinor >= minor!);
};

/**
 * Runs plain `node <file> ...args` in the consumer project: no loader, no flags, no inherited
 * NODE_OPTIONS. Asynchronous, because the FlagMeter it talks to serves from this very process.
 */
async function runNode(node: string, cwd: string, file: string, args: string[] = []): Promise<string> {
  const { stdout } = await execFileAsync(node, [file, ...args], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
    timeout: 60_000,
  });
  return stdout;
}

describe('the @flagmeter/client tarball', () => {
  let packed: PackedClient;
  let workDir: string;
  let consumer: string;
  const nodes = nodeBinaries();

  beforeAll(() => {
    workDir = mkdtempSync(join(tmpdir(), 'flagmeter-client-'));
    packed = packClient(join(workDir, 'pack'));
    consumer = join(workDir, 'consumer');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', packed.tarball], {
      cwd: consumer,
      stdio: 'pipe',
    });
    writeFileSync(join(consumer, 'send.mjs'), SEND_SCRIPT);
    writeFileSync(join(consumer, 'require.cjs'), REQUIRE_SCRIPT);
  });

  afterAll(() => {
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('holds compiled JavaScript, declarations, README and LICENSE, and nothing else', () => {
    const compiled = ['buffer', 'http', 'index', 'meter', 'model-usage', 'types'].flatMap((name) => [
      `dist/${name}.d.ts`,
      `dist/${name}.js`,
    ]);
    expect(packed.files).toEqual(['LICENSE', 'README.md', ...compiled, 'package.json'].sort());
    expect(packed.tarball.endsWith('.tgz')).toBe(true);
  });

  it('installs offline as the only package, with no dependencies, ESM exports with types and engines', () => {
    expect(readdirSync(join(consumer, 'node_modules')).filter((name) => !name.startsWith('.'))).toEqual(['@flagmeter']);
    const manifest = JSON.parse(readFileSync(join(consumer, 'node_modules', '@flagmeter', 'client', 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(manifest).toMatchObject({
      name: '@flagmeter/client',
      type: 'module',
      license: 'Apache-2.0',
      sideEffects: false,
      engines: { node: `>=${MIN_NODE.join('.')}.0` },
      exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    });
    expect(manifest.dependencies).toBeUndefined();
  });

  it('imports no Node-only module, so it runs wherever fetch and Web Crypto exist', () => {
    const dist = join(consumer, 'node_modules', '@flagmeter', 'client', 'dist');
    for (const file of readdirSync(dist).filter((name) => name.endsWith('.js'))) {
      // Comments may well mention process.env; only code counts.
      const source = readFileSync(join(dist, file), 'utf8').replace(/\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm, '');
      const imports = [...source.matchAll(/from '([^']+)'/g)].map((match) => match[1]);
      expect(
        imports.every((specifier) => specifier!.startsWith('./')),
        `${file} imports ${imports.join(', ')}`,
      ).toBe(true);
      expect(source, file).not.toMatch(/\bprocess\.|\brequire\(|\bBuffer\b/);
    }
  });

  it.each(nodes)('is require()d by plain node $version', async ({ path, version }) => {
    // require() of an ES module needs Node 20.19 or 22.12; older Node gets no CommonJS build.
    if (!atLeast(version, [20, 19])) return;
    const result = JSON.parse(await runNode(path, consumer, 'require.cjs')) as { exports: string[]; isMeter: boolean; tokens: number };
    expect(result).toEqual({
      exports: [
        'FlagMeterError',
        'Meter',
        'createMeter',
        'parseRetryAfter',
        'retryDelay',
        'tokensFromAISDK',
        'tokensFromAnthropic',
        'tokensFromOpenAI',
        'tokensFromUsage',
      ],
      isMeter: true,
      tokens: 5,
    });
  });

  it('has source that plain node 24 runs by type stripping, as the tests and scripts here import it', async () => {
    const script = `import('${join(CLIENT_PACKAGE_DIR, 'src', 'index.ts')}').then((client) => process.stdout.write(String(client.createMeter({ url: 'http://127.0.0.1:9', apiKey: 'k' }) instanceof client.Meter)))`;
    const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: workDir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
    });
    expect(stdout).toBe('true');
  });

  it.each(['node16', 'bundler'])('type-checks a TypeScript consumer with moduleResolution %s, without @types/node', (resolution) => {
    writeFileSync(join(consumer, 'consumer.ts'), CONSUMER_TS);
    const config = {
      compilerOptions: {
        module: resolution === 'node16' ? 'node16' : 'esnext',
        moduleResolution: resolution,
        target: 'ES2022',
        lib: ['ES2022', 'DOM'],
        types: [],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
      },
      files: ['consumer.ts'],
    };
    writeFileSync(join(consumer, `tsconfig.${resolution}.json`), JSON.stringify(config));
    const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
    const check = (): string =>
      execFileSync(process.execPath, [tsc, '-p', `tsconfig.${resolution}.json`], { cwd: consumer, encoding: 'utf8' });
    expect(check).not.toThrow();
  });

  describe.skipIf(!servicesAvailable)('against a running FlagMeter', () => {
    let stack: TestStack;
    let api: ReturnType<typeof buildApi>;
    let aggregator: RunningProcess;
    let url: string;

    beforeAll(async () => {
      stack = await createTestStack();
      api = buildApi(stack.runtime);
      await api.listen({ port: 0, host: '127.0.0.1' });
      url = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
      aggregator = await startAggregatorProcess(stack.env);
    });

    afterAll(async () => {
      await aggregator?.kill();
      await api?.close();
      await stack?.close();
    });

    async function usageOf(tenant: string): Promise<{ tokens: number; features: { feature: string; tokens: number }[] } | undefined> {
      const response = await fetch(`${url}/api/usage/${tenant}`, { headers: { authorization: `Bearer ${stack.apiKey}` } });
      return response.status === 200
        ? ((await response.json()) as { tokens: number; features: { feature: string; tokens: number }[] })
        : undefined;
    }

    it.each(nodes)('plain node $version sends 1,000 events that FlagMeter counts exactly once', async ({ path, version }) => {
      expect(atLeast(version, MIN_NODE), `${path} is ${version}, older than the package's engines`).toBe(true);
      const tenant = uniqueName(`package-${version.split('.')[0]}`);
      const output = JSON.parse(await runNode(path, consumer, 'send.mjs', [url, stack.apiKey, tenant])) as {
        node: string;
        stats: { tracked: number; accepted: number; duplicates: number; buffered: number };
        errors: string[];
      };
      expect(output).toMatchObject({ node: version, errors: [], stats: { tracked: EVENTS, accepted: EVENTS, duplicates: 0, buffered: 0 } });

      const expected = expectedTokens();
      const total = [...expected.values()].reduce((sum, tokens) => sum + tokens, 0);
      // Polled until the aggregator has applied at least everything, then compared exactly.
      const report = await waitFor(
        async () => {
          const usage = await usageOf(tenant);
          return usage && usage.tokens >= total ? usage : undefined;
        },
        { timeoutMs: 45_000, intervalMs: 100, what: `the aggregator to apply ${tenant}'s events` },
      );
      expect(report.tokens).toBe(total);
      expect(new Map(report.features.map((row) => [row.feature, row.tokens]))).toEqual(expected);
    });
  });
});
