import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Runtime } from '../shared/runtime/runtime.ts';
import { SITE_ENTRY, ensureSiteBuilt } from './build.ts';
import { loadSiteConfig } from './src/lib/config.ts';
import { provideSiteDeps } from './src/lib/deps.ts';
import { SECURITY_HEADERS } from './src/lib/security-headers.ts';
import { FailureThrottle } from '../shared/domain/throttle.ts';

type NodeHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Paths the site answers on the shared port; everything else (the API) stays Fastify's. */
export const SITE_ROUTES = ['/', '/favicon.svg', '/login', '/logout', '/docs/api', '/dashboard', '/dashboard/*', '/_astro/*'] as const;

/**
 * Serves the Astro site from the same Fastify app as the API (`npm start`): builds it if needed,
 * hands it this process's database, key store and config, and routes the site's paths to it.
 * Throws ConfigError naming the variable when a site setting (ADMIN_PASSWORD, SESSION_SECRET) is bad.
 */
export async function mountSite(app: FastifyInstance, runtime: Runtime): Promise<void> {
  const site = loadSiteConfig(runtime.config);
  provideSiteDeps({
    db: runtime.db, auth: runtime.auth, config: runtime.config, logger: runtime.logger, site, throttle: new FailureThrottle(),
  });
  const { built } = await ensureSiteBuilt();
  if (built) runtime.logger.info('site built into site/dist');
  // The standalone entry starts its own server on import unless told not to; here Fastify serves it.
  process.env.ASTRO_NODE_AUTOSTART = 'disabled';
  const { handler } = (await import(pathToFileURL(SITE_ENTRY).href)) as { handler: NodeHandler };

  await app.register(async (scope) => {
    // Astro reads form bodies itself; Fastify must leave the request stream untouched here.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    for (const url of SITE_ROUTES) {
      scope.route({
        method: ['GET', 'POST'],
        url,
        handler: (request, reply) => {
          reply.hijack();
          // Static pages and assets are answered without passing the site's middleware.
          for (const [name, value] of Object.entries(SECURITY_HEADERS)) reply.raw.setHeader(name, value);
          handler(request.raw, reply.raw);
        },
      });
    }
  });
}
