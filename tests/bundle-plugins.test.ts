import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { afterAll, describe, expect, test } from 'vitest';
import { builtinHttpByRequire, englishZodMessagesOnly, REQUIRE_BANNER } from '../scripts/lib/bundle-plugins.ts';
import { freePort, ROOT } from './helpers/processes.ts';

describe("the build's plugins", () => {
  const dir = mkdtempSync(join(tmpdir(), 'fm-plugins-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Bundles `contents` as the function bundles are made (ESM, node, the plugin) and imports it. */
  const bundle = async (name: string, contents: string): Promise<{ module: Record<string, unknown>; inputs: string[]; text: string }> => {
    const result = await build({
      stdin: { contents, resolveDir: ROOT, loader: 'ts', sourcefile: `${name}.ts` },
      bundle: true,
      platform: 'node',
      target: 'node24',
      format: 'esm',
      banner: { js: REQUIRE_BANNER },
      plugins: [englishZodMessagesOnly, builtinHttpByRequire],
      metafile: true,
      write: false,
      logLevel: 'silent',
    });
    const file = join(dir, `${name}.mjs`);
    const text = result.outputFiles[0]!.text;
    writeFileSync(file, text);
    return {
      module: (await import(pathToFileURL(file).href)) as Record<string, unknown>,
      inputs: Object.keys(result.metafile.inputs),
      text,
    };
  };

  test("the functions' telemetry bundles without gRPC or protobuf and still serves its metrics", async () => {
    const { module, inputs } = await bundle(
      'telemetry',
      "export { startTelemetry } from './shared/platform/telemetry/sdk.ts'; export { flagmeterMeter } from './shared/platform/telemetry/metrics.ts';",
    );
    // A meter provider and the Prometheus exporter: no tracing, logs or OTLP exporters (gRPC, protobuf).
    expect(
      inputs.filter((input) =>
        /node_modules\/(@grpc|protobufjs|@opentelemetry\/(sdk-node|sdk-trace|sdk-logs|exporter-.*otlp))/.test(input),
      ),
    ).toEqual([]);

    const port = await freePort();
    const startTelemetry = module.startTelemetry as typeof import('../shared/platform/telemetry/sdk.ts').startTelemetry;
    const telemetry = await startTelemetry('stub-test', {
      METRICS_HOST: '127.0.0.1',
      METRICS_PORT: port,
      TELEMETRY_ENABLED: true,
      NODE_ENV: 'test',
    });
    try {
      expect(telemetry.metricsUrl).toBe(`http://127.0.0.1:${port}/metrics`);
      const flagmeterMeter = module.flagmeterMeter as typeof import('../shared/platform/telemetry/metrics.ts').flagmeterMeter;
      flagmeterMeter().createCounter('flagmeter_stub_test_total').add(3);
      const text = await (await fetch(telemetry.metricsUrl!)).text();
      expect(text).toMatch(/^flagmeter_stub_test_total\S* 3$/m);
    } finally {
      await telemetry.shutdown();
    }
  });

  test('zod keeps its English messages and no other locale', async () => {
    const { module, inputs } = await bundle(
      'zod',
      "import { z } from 'zod'; export const message = () => z.object({ a: z.number() }).safeParse({ a: 'x' }).error?.issues[0]?.message; export const locales = Object.keys(z.locales);",
    );
    expect((module.message as () => string)()).toBe('Invalid input: expected number, received string');
    expect(module.locales).toEqual(['en']);
    expect(inputs.filter((input) => input.startsWith('node_modules/zod/v4/locales/'))).toEqual(['node_modules/zod/v4/locales/en.js']);
  });

  test('node:http and node:https are taken through require, named and default imports alike, and still serve', async () => {
    const { module, text } = await bundle(
      'http',
      [
        "import { createServer } from 'node:http';",
        "import http from 'http';",
        "import https from 'node:https';",
        'export const parts = { createServer, request: http.request, httpsAgent: https.Agent };',
      ].join('\n'),
    );
    // An ESM import of either would build its facade, and http's loads Node's undici (~45 ms a start).
    expect(text).not.toMatch(/from\s*["'](node:)?https?["']/);
    const { createServer, request, httpsAgent } = module.parts as {
      createServer: typeof import('node:http').createServer;
      request: unknown;
      httpsAgent: unknown;
    };
    expect(typeof request).toBe('function');
    expect(typeof httpsAgent).toBe('function');
    const server = createServer((_request, response) => response.end('served'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('served');
    } finally {
      server.close();
    }
  });
});
