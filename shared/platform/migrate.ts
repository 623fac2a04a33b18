import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from './db.ts';

const MIGRATIONS_DIR = join(import.meta.dirname, '..', '..', 'migrations');
const LOCK_KEY = 0x466c61674d;

interface Journal {
  entries: { idx: number; tag: string }[];
}

/** Applies the drizzle-kit migrations in `migrations/` that this database has not seen, in order. */
export async function migrate(db: Db, dir: string = MIGRATIONS_DIR): Promise<string[]> {
  const journal = JSON.parse(readFileSync(join(dir, 'meta', '_journal.json'), 'utf8')) as Journal;
  return db.transaction(
    async (tx) => {
      // A migration's DDL may take longer than DATABASE_STATEMENT_TIMEOUT on a big table: cancelled,
      // it would roll back and be retried for ever.
      await tx.query('SET LOCAL statement_timeout = 0');
      // Two processes migrating at once (replicas starting together) take turns, however long.
      await tx.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
      // A DDL statement waiting for its table lock holds up every later query on that table: it waits
      // at most 10 s, then the attempt fails and is retried, so traffic waits at most that long at a time.
      await tx.query(`SET LOCAL lock_timeout = '10s'`);
      await tx.query(
        'CREATE TABLE IF NOT EXISTS flagmeter_migrations (tag text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
      );
      const done = new Set((await tx.query<{ tag: string }>('SELECT tag FROM flagmeter_migrations')).map((r) => r.tag));
      const applied: string[] = [];
      for (const { tag } of [...journal.entries].sort((a, b) => a.idx - b.idx)) {
        if (done.has(tag)) continue;
        const text = readFileSync(join(dir, `${tag}.sql`), 'utf8');
        for (const statement of text.split('--> statement-breakpoint')) {
          if (statement.trim()) await tx.query(statement);
        }
        await tx.query('INSERT INTO flagmeter_migrations (tag) VALUES ($1)', [tag]);
        applied.push(tag);
      }
      // Data repair, not schema: zones saved before names were enforced (offsets such as "+0530",
      // which the tenants and usage queries cannot read, or read as the opposite sign) become UTC.
      await tx.query(
        `UPDATE tenants SET time_zone = 'UTC', updated_at = now()
       WHERE time_zone !~ '^[A-Za-z]' OR time_zone NOT IN (SELECT name FROM pg_timezone_names)`,
      );
      // CET, EET, MET and WET, saved before they were refused: PostgreSQL reads them as fixed
      // abbreviations, Node (which counts) as the zones they link to, with summer time. The zone
      // Node reads becomes the tenant's, so its counting is unchanged and the usage reads agree.
      await tx.query(
        `UPDATE tenants SET time_zone = CASE time_zone WHEN 'EET' THEN 'Europe/Athens' WHEN 'WET' THEN 'Europe/Lisbon'
                                       ELSE 'Europe/Brussels' END, updated_at = now()
       WHERE time_zone IN ('CET', 'EET', 'MET', 'WET')`,
      );
      return applied;
    },
    { unbounded: true },
  );
}
