import { drizzle, type PgRemoteDatabase } from 'drizzle-orm/pg-proxy';
import type { Queryable } from './db.ts';

const orms = new WeakMap<Queryable, PgRemoteDatabase>();

/**
 * Drizzle's query builder over our own connection (postgres.js or PGlite), for the cold paths where
 * it reads better than SQL text. It runs through `Queryable`, so a query takes part in the caller's
 * transaction and the drivers keep the type parsers every raw query relies on (`drizzle(client)`
 * would replace postgres.js's). Hot paths stay hand-written SQL.
 */
export function orm(db: Queryable): PgRemoteDatabase {
  let built = orms.get(db);
  if (!built) {
    built = drizzle(async (text, params, method) => {
      const rows = await db.query<Record<string, unknown>>(text, params);
      // Selects want each row as its values in column order, which is the order both drivers keep.
      return { rows: method === 'all' ? rows.map((row) => Object.values(row)) : rows };
    });
    orms.set(db, built);
  }
  return built;
}
