import type { KeyAdminDeps } from '../../../shared/domain/keys.ts';
import { type Config, ConfigError, loadConfig } from '../../../shared/platform/config.ts';
import { connectPostgres, type Db } from '../../../shared/platform/db.ts';
import { createLogger, type Logger } from '../../../shared/platform/logger.ts';
import { type SiteConfig, loadSiteConfig } from './config.ts';
import { FailureThrottle } from '../../../shared/domain/throttle.ts';

/**
 * What the pages need: the same database and config the API functions use. The site authenticates
 * no API keys (the dashboard takes the admin token), so it keeps no key store of its own; mounted in
 * `npm start`, it is handed the process's store so a key made on the keys page works at once.
 */
export interface SiteDeps {
  db: Db;
  auth?: KeyAdminDeps['auth'];
  config: Config;
  logger: Logger;
  site: SiteConfig;
  throttle: FailureThrottle;
}

// The built site is a separate bundle with its own copies of these modules, so `npm start` hands
// its runtime over through a process-wide symbol (the standalone handler takes no locals).
const MOUNTED = Symbol.for('flagmeter.site.deps');
type Registry = { [MOUNTED]?: SiteDeps };

export function provideSiteDeps(deps: SiteDeps): void {
  (globalThis as Registry)[MOUNTED] = deps;
}

let standalone: Promise<SiteDeps> | undefined;

/**
 * The mounted runtime under `npm start`; in the site's own container, its own connections, opened
 * on the first on-demand request (the container health check makes it at start): a bad variable
 * then stops the process with a message naming it.
 */
export function siteDeps(): Promise<SiteDeps> {
  const mounted = (globalThis as Registry)[MOUNTED];
  if (mounted) return Promise.resolve(mounted);
  standalone ??= openStandalone().catch((error: Error) => {
    process.stderr.write(`${JSON.stringify({ level: 'fatal', service: 'site', msg: error.message })}\n`);
    process.exit(78);
  });
  return standalone;
}

async function openStandalone(): Promise<SiteDeps> {
  const config = loadConfig();
  if (!config.DATABASE_URL) throw new ConfigError('DATABASE_URL: required by the site (only npm start runs without it)');
  const site = loadSiteConfig(config);
  const logger = createLogger('site', config);
  const db = connectPostgres(config.DATABASE_URL, {
    max: config.DATABASE_POOL_SIZE,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT,
  });
  return { db, config, logger, site, throttle: new FailureThrottle() };
}
