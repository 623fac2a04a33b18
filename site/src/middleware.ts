import type { APIContext, MiddlewareHandler } from 'astro';
import { isSessionRevoked } from './lib/revocations.ts';
import { siteDeps } from './lib/deps.ts';
import { SECURITY_HEADERS } from './lib/security-headers.ts';
import { CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, csrfToken, newLoginNonce, validCsrfToken, verifySession } from './lib/session.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD']);

const isDashboard = (path: string): boolean => path === '/dashboard' || path.startsWith('/dashboard/');

function forbidden(message: string): Response {
  return new Response(`403 Forbidden: ${message}\n`, { status: 403, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}

/** The form's CSRF token, read from a copy of the body so the page can still read the original. */
async function submittedToken(context: APIContext): Promise<unknown> {
  const header = context.request.headers.get('x-csrf-token');
  if (header) return header;
  try {
    return (await context.request.clone().formData()).get(CSRF_FIELD);
  } catch {
    return undefined;
  }
}

/**
 * Every on-demand page passes here: sessions are verified, dashboard pages need one, and every
 * state-changing request must carry the CSRF token bound to the session (or, for the login form,
 * to the pre-login nonce cookie).
 */
export const onRequest: MiddlewareHandler = async (context, next) => {
  // Prerendered pages run this at build time, where there is no database and no visitor.
  if (context.isPrerendered) return next();
  const { site, db, config } = await siteDeps();
  const path = context.url.pathname;
  const verified = verifySession(site.sessionKey, context.cookies.get(SESSION_COOKIE)?.value);
  // A signed cookie is not enough: a session ended by logout stays ended.
  const session = verified && !(await isSessionRevoked(db, verified.id)) ? verified : undefined;
  context.locals.session = session;

  let boundTo = session?.id;
  if (!boundTo && path === '/login') {
    boundTo = context.cookies.get(LOGIN_COOKIE)?.value;
    if (!boundTo && SAFE_METHODS.has(context.request.method)) {
      boundTo = newLoginNonce();
      context.cookies.set(LOGIN_COOKIE, boundTo, {
        httpOnly: true,
        sameSite: 'strict',
        path: '/login',
        maxAge: 3_600,
        secure: context.url.protocol === 'https:' || config.PUBLIC_URL.startsWith('https:'),
      });
    }
  }
  context.locals.csrf = boundTo ? csrfToken(site.sessionKey, boundTo) : '';

  if (path === '/logout' && !session) return context.redirect('/login', 303);
  if (isDashboard(path) && !session) {
    const back = `${path}${context.url.search}`;
    return context.redirect(`/login?next=${encodeURIComponent(back)}`, 303);
  }
  if (!SAFE_METHODS.has(context.request.method) && !validCsrfToken(site.sessionKey, boundTo, await submittedToken(context))) {
    return forbidden('missing or invalid CSRF token; reload the page and try again');
  }

  const response = await next();
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.headers.set(name, value);
  // Dashboard pages show live numbers and secrets: never cache them anywhere.
  if (isDashboard(path) || path === '/login') response.headers.set('cache-control', 'no-store');
  return response;
};
