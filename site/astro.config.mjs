import node from '@astrojs/node';
import { defineConfig } from 'astro/config';

// One build serves both ways: `node site/dist/server/entry.mjs` (the site's own container) and
// `npm start`, which imports the same entry with autostart off and routes requests to its handler.
export default defineConfig({
  output: 'server',
  adapter: node({ mode: 'standalone', bodySizeLimit: 64 * 1024 }),
  devToolbar: { enabled: false },
  // Astro's own Origin check stays on in front of our CSRF tokens.
  security: { checkOrigin: true },
  vite: {
    // Client scripts as files, never inlined, so the CSP can say script-src 'self'.
    build: { assetsInlineLimit: 0 },
  },
});
