import { writeFile } from 'node:fs/promises';
import node from '@astrojs/node';
import { defineConfig } from 'astro/config';
import { SECURITY_HEADERS } from './src/lib/security-headers.ts';

/**
 * Prerendered pages never pass the middleware: the adapter's own server serves them with the headers
 * listed in dist/_headers.json (staticHeaders below), which this writes for every prerendered page.
 * (`npm start` sets the same headers where it hands requests to the site: site/server.ts.)
 */
function staticSecurityHeaders() {
  let outDir;
  return {
    name: 'flagmeter-static-security-headers',
    hooks: {
      'astro:config:done': ({ config }) => {
        outDir = config.outDir;
      },
      'astro:build:done': async ({ pages }) => {
        const headers = Object.entries(SECURITY_HEADERS).map(([key, value]) => ({ key, value }));
        const routes = pages.map(({ pathname }) => ({ pathname: `/${pathname}`.replace(/(.)\/$/, '$1'), headers }));
        await writeFile(new URL('_headers.json', outDir), JSON.stringify(routes));
      },
    },
  };
}

// Behind Traefik the site is reached as http://<task>:3000, and Astro ignores the Host and
// X-Forwarded-Proto headers of hosts it was not told about (it builds the request URL as
// http://localhost:3000, and its Origin check then refuses every form as cross-site). The public
// origin is PUBLIC_URL at build time (stacks/Dockerfile and scripts/swarm-images pass it): requests
// for that host, over that protocol as the proxy forwards it, get their real URL. Without PUBLIC_URL
// (npm start) no forwarded header is trusted.
const publicUrl = process.env.PUBLIC_URL ? new URL(process.env.PUBLIC_URL) : undefined;

// One build serves both ways: `node site/dist/server/entry.mjs` (the site's own container) and
// `npm start`, which imports the same entry with autostart off and routes requests to its handler.
export default defineConfig({
  output: 'server',
  adapter: node({ mode: 'standalone', bodySizeLimit: 64 * 1024, staticHeaders: true }),
  integrations: [staticSecurityHeaders()],
  devToolbar: { enabled: false },
  // Astro's own Origin check stays on in front of our CSRF tokens.
  security: {
    checkOrigin: true,
    allowedDomains: publicUrl ? [{ hostname: publicUrl.hostname, protocol: publicUrl.protocol.slice(0, -1) }] : [],
  },
  vite: {
    // Client scripts as files, never inlined, so the CSP can say script-src 'self'.
    build: { assetsInlineLimit: 0 },
  },
});
