/**
 * The site's own container entry, bundled by `npm run build` as `dist/site/server/entry.mjs` with
 * Astro's standalone server inside. Astro's entry alone dies at once on SIGTERM (Node's default): a
 * page being answered is cut off, and Traefik, which learns that a task stopped only at its next poll,
 * sends requests to the closed port until then. Here the site stops the way the API functions do
 * (shared/runtime/serve.ts): it serves on for SHUTDOWN_DELAY, then stops listening, finishes what is in
 * flight and exits 0. A bad variable in the shared config stops it at start, naming the variable.
 */
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigOrExit } from '../shared/platform/config.ts';
import { createLogger } from '../shared/platform/logger.ts';
import { stopOnSignal } from '../shared/runtime/shutdown.ts';

const config = loadConfigOrExit();
const logger = createLogger('site', config);

// Loaded only now: Astro's entry starts its server as it is evaluated unless told not to.
process.env.ASTRO_NODE_AUTOSTART = 'disabled';
const { startServer } = await import('flagmeter:astro-entry');
const { server } = startServer();

/**
 * Stops listening and resolves once the answers in flight are sent. Keep-alive connections are not
 * left to idle out (5 s each, which could outlast the forced exit): answers from here on close theirs,
 * and connections that go idle after an answer begun earlier are closed as they do.
 */
function closeServer(http: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    http.prependListener('request', (_request, response) => response.setHeader('connection', 'close'));
    const sweep = setInterval(() => http.closeIdleConnections(), 50);
    http.close((error) => {
      clearInterval(sweep);
      if (error) reject(error);
      else resolve();
    });
  });
}

stopOnSignal(logger, 'draining', [() => sleep(config.SHUTDOWN_DELAY), () => closeServer(server.server)]);
