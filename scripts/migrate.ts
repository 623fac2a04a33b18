/** `npm run migrate`: applies the committed migrations to DATABASE_URL (the Swarm one-shot job runs this). */
import { loadConfigOrExit } from '../shared/platform/config.ts';
import { connectPostgres, retryUntilDone } from '../shared/platform/db.ts';
import { createLogger } from '../shared/platform/logger.ts';
import { migrate } from '../shared/platform/migrate.ts';

const config = loadConfigOrExit();
const logger = createLogger('migrate', config);
if (!config.DATABASE_URL) {
  logger.fatal('DATABASE_URL: required for npm run migrate');
  process.exit(78);
}
const db = connectPostgres(config.DATABASE_URL, { max: 1, statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT });
try {
  // A one-shot job that starts before PostgreSQL is steady keeps trying rather than failing the deploy.
  const applied = await retryUntilDone('migrations', logger, () => migrate(db), { attemptTimeoutMs: Number.POSITIVE_INFINITY });
  logger.info({ applied }, applied.length ? 'migrations applied' : 'database is up to date');
} finally {
  await db.close();
}
