import type { APIRoute } from 'astro';
import { SESSION_COOKIE } from '../lib/session.ts';

/** POST only (with the CSRF token the middleware checks), so a link elsewhere cannot log you out. */
export const POST: APIRoute = ({ cookies, redirect }) => {
  cookies.delete(SESSION_COOKIE, { path: '/' });
  return redirect('/login', 303);
};
