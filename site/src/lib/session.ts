import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'fm_session';
/** Pre-login nonce the login form's CSRF token is bound to (there is no session yet). */
export const LOGIN_COOKIE = 'fm_login';
export const CSRF_FIELD = '_csrf';

export interface Session {
  id: string;
  expiresAt: number;
}

const mac = (key: Buffer, text: string): string => createHmac('sha256', key).update(text).digest('base64url');

function equalSecrets(a: string, b: string): boolean {
  // Hashing first gives equal lengths, so the comparison time says nothing about the content.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** A new session and its cookie value: `<id>.<expiresAt>.<hmac>`; nothing is stored server-side. */
export function issueSession(key: Buffer, ttlMs: number, now = Date.now()): { session: Session; value: string } {
  const session = { id: randomBytes(18).toString('base64url'), expiresAt: now + ttlMs };
  return { session, value: `${session.id}.${session.expiresAt}.${mac(key, `session|${session.id}|${session.expiresAt}`)}` };
}

/** The session a cookie value proves, or undefined when it is forged, malformed or expired. */
export function verifySession(key: Buffer, value: string | undefined, now = Date.now()): Session | undefined {
  const match = value ? /^([A-Za-z0-9_-]{24})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(value) : null;
  if (!match) return undefined;
  const [, id, expires, signature] = match as unknown as [string, string, string, string];
  if (!equalSecrets(signature, mac(key, `session|${id}|${expires}`))) return undefined;
  const expiresAt = Number(expires);
  return expiresAt > now ? { id, expiresAt } : undefined;
}

/** A CSRF token bound to a session id (or a login nonce): a forged form cannot know it. */
export function csrfToken(key: Buffer, boundTo: string): string {
  return mac(key, `csrf|${boundTo}`);
}

export function validCsrfToken(key: Buffer, boundTo: string | undefined, token: unknown): boolean {
  if (!boundTo || typeof token !== 'string' || token.length === 0 || token.length > 128) return false;
  return equalSecrets(token, csrfToken(key, boundTo));
}

export function newLoginNonce(): string {
  return randomBytes(18).toString('base64url');
}

/** True when `given` is the admin token or the admin password; constant time either way. */
export function validCredential(given: string, accepted: readonly (string | undefined)[]): boolean {
  let ok = false;
  for (const secret of accepted) if (secret !== undefined && equalSecrets(given, secret)) ok = true;
  return ok;
}
