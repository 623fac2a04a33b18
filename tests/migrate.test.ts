import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, servicesAvailable, type TestDatabase } from './helpers/services.ts';
import { connectPostgres, type Db } from '../shared/platform/db.ts';
import { migrate } from '../shared/platform/migrate.ts';

describe.skipIf(!servicesAvailable)('migrations (real PostgreSQL)', () => {
  let database: TestDatabase;
  let db: Db;
  const dir = mkdtempSync(join(tmpdir(), 'flagmeter-migrations-'));

  beforeAll(async () => {
    database = await createTestDatabase();
    // Statements may run 300 ms here: the migration below takes longer.
    db = connectPostgres(database.url, { max: 1, statementTimeoutMs: 300 });
  });
  afterAll(async () => {
    await db?.close();
    await database?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a migration statement longer than the statement timeout (cancelled, it was retried for ever)', async () => {
    mkdirSync(join(dir, 'meta'));
    writeFileSync(join(dir, 'meta', '_journal.json'), JSON.stringify({ entries: [{ idx: 0, tag: '9000_slow' }] }));
    writeFileSync(join(dir, '9000_slow.sql'), 'SELECT pg_sleep(1.2);\n--> statement-breakpoint\nCREATE TABLE slow_done (id int);\n');
    expect(await migrate(db, dir)).toEqual(['9000_slow']);
    expect(await db.query(`SELECT to_regclass('slow_done') IS NOT NULL AS made`)).toEqual([{ made: true }]);
    // The timeout still holds for everything else on the connection.
    await expect(db.query('SELECT pg_sleep(1.2)')).rejects.toThrow(/statement timeout|no answer/);
  });
});
