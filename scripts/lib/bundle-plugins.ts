import type { Plugin } from 'esbuild';
import { dirname, join } from 'node:path';

// Bundled CommonJS dependencies call require(); ESM output has none, so give it one.
export const REQUIRE_BANNER =
  "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

/**
 * The OTLP and Zipkin exporters `@opentelemetry/sdk-node` imports for its environment-driven set-up.
 * FlagMeter hands the SDK its Prometheus reader and empty span and log processor lists, so the SDK
 * never constructs one; yet they were a third of every function bundle (gRPC, protobuf: ~700 kB of
 * 2.8 MB) and their top-level code ran at every start (docs/benchmarks.md, round 6).
 */
export const UNUSED_OTEL_EXPORTERS =
  /^@opentelemetry\/(exporter-(trace|logs|metrics)-otlp-(grpc|http|proto)|exporter-zipkin|otlp-grpc-exporter-base|otlp-exporter-base)$/;

/**
 * Bundles each unused exporter package as a stub with the same export names, every one a function
 * that throws naming the package: anything that did reach one would fail loudly at start, never
 * export nothing in silence.
 */
export const withoutUnusedExporters: Plugin = {
  name: 'flagmeter-without-unused-otel-exporters',
  setup(bundler) {
    bundler.onResolve({ filter: UNUSED_OTEL_EXPORTERS }, (args) => ({ path: args.path, namespace: 'unused-otel-exporter' }));
    bundler.onLoad({ filter: /.*/, namespace: 'unused-otel-exporter' }, async (args) => {
      const names = Object.keys((await import(args.path)) as object).filter(
        (name) => name !== 'default' && /^[A-Za-z_$][\w$]*$/.test(name),
      );
      const message = `${args.path} is not in FlagMeter's bundles: functions export metrics to Prometheus only`;
      return {
        loader: 'js',
        contents: [
          `const unused = (name) => function () { throw new Error(${JSON.stringify(message)} + ' (' + name + ')'); };`,
          ...names.map((name) => `export const ${name} = unused(${JSON.stringify(name)});`),
        ].join('\n'),
      };
    });
  },
};

/**
 * zod's locales: every error-message language (~290 kB, a seventh of a function bundle), reachable
 * only through `z.locales`, which FlagMeter never uses: its messages are zod's English defaults
 * (`en`, which zod loads itself). The namespace keeps `en` alone.
 */
export const englishZodMessagesOnly: Plugin = {
  name: 'flagmeter-english-zod-messages-only',
  setup(bundler) {
    bundler.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]v4[\\/]/.test(args.importer)
        ? { path: join(dirname(args.importer), '..', 'locales', 'en.js'), namespace: 'zod-locales' }
        : undefined,
    );
    bundler.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      loader: 'js',
      contents: `export { default as en } from ${JSON.stringify(args.path)};`,
      resolveDir: dirname(args.path),
    }));
  },
};

/**
 * `import … from 'node:http'` (and https) in ESM makes Node build the module's ESM facade, which reads
 * every export, and `http`'s lazy exports load Node's bundled undici (fetch, WebSocket): ~45 ms of
 * every start on this VM, for a server that never touches them (`require('node:http')`: ~10 ms).
 * Bundles therefore take these two through the banner's `require`, as their CommonJS dependencies do.
 */
export const builtinHttpByRequire: Plugin = {
  name: 'flagmeter-builtin-http-by-require',
  setup(bundler) {
    bundler.onResolve({ filter: /^(node:)?https?$/ }, (args) =>
      args.kind === 'import-statement' || args.kind === 'dynamic-import'
        ? { path: args.path.replace(/^(node:)?/, 'node:'), namespace: 'builtin-by-require' }
        : undefined,
    );
    bundler.onLoad({ filter: /.*/, namespace: 'builtin-by-require' }, (args) => ({
      loader: 'js',
      contents: `module.exports = require(${JSON.stringify(args.path)});`,
    }));
  },
};
