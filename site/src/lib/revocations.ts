import { eq, lt } from 'drizzle-orm';
import type { Queryable } from '../../../shared/platform/db.ts';
import { orm } from '../../../shared/platform/orm.ts';
import { revokedSessions } from '../../../shared/schema.ts';
import type { Session } from './session.ts';

/**
 * Ends a session server-side (logout). It is remembered in PostgreSQL until it would have expired
 * anyway, so every site replica refuses its cookie, after restarts too; expired entries go on the way.
 */
export async function revokeSession(db: Queryable, session: Session): Promise<void> {
  await orm(db).delete(revokedSessions).where(lt(revokedSessions.expiresAt, new Date()));
  await orm(db)
    .insert(revokedSessions)
    .values({ id: session.id, expiresAt: new Date(session.expiresAt) })
    .onConflictDoNothing();
}

export async function isSessionRevoked(db: Queryable, id: string): Promise<boolean> {
  const rows = await orm(db).select({ id: revokedSessions.id }).from(revokedSessions).where(eq(revokedSessions.id, id));
  return rows.length > 0;
}
