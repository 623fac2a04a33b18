import type { APIRoute } from 'astro';
import { siteDeps } from '../lib/deps.ts';
import { revokeSession } from '../lib/revocations.ts';
import { SESSION_COOKIE } from '../lib/session.ts';

/**
 * POST only (with the CSRF token the middleware checks), so a link elsewhere cannot log you out.
 * The session is ended on the server too: a copy of the cookie opens nothing afterwards.
 */
export const POST: APIRoute = async ({ cookies, locals, redirect }) => {
  if (locals.session) await revokeSession((await siteDeps()).db, locals.session);
  cookies.delete(SESSION_COOKIE, { path: '/' });
  return redirect('/login', 303);
};
