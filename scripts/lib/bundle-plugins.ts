import type { Plugin } from 'esbuild';
import { dirname, join } from 'node:path';

// Bundled CommonJS dependencies call require(); ESM output has none, so give it one.
export const REQUIRE_BANNER =
  "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

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
