import type { Session } from './session.ts';

/**
 * Sessions ended by logout, remembered until they would have expired anyway, so the cookie of a
 * logged-out session opens nothing even if it was copied. Held by the process that serves the site
 * (npm start, or the site's container); bounded, oldest expiry dropped first.
 */
export class RevokedSessions {
  private readonly revoked = new Map<string, number>();

  constructor(private readonly maxEntries = 100_000) {}

  revoke(session: Session, now = Date.now()): void {
    for (const [id, expiresAt] of this.revoked) if (expiresAt <= now) this.revoked.delete(id);
    if (this.revoked.size >= this.maxEntries) {
      const oldest = this.revoked.keys().next().value;
      if (oldest !== undefined) this.revoked.delete(oldest);
    }
    this.revoked.set(session.id, session.expiresAt);
  }

  has(id: string): boolean {
    return this.revoked.has(id);
  }
}
