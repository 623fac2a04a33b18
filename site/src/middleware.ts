import type { APIContext, MiddlewareHandler } from 'astro';
import { isSessionRevoked } from './lib/revocations.ts';
import { siteDeps } from './lib/deps.ts';
import { SECURITY_HEADERS } from './lib/security-headers.ts';
import { CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, csrfToken, newLoginNonce, validCsrfToken, verifySession } from './lib/session.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD']);

const isDashboard = (path: string): boolean => path === '/dashboard' || path.startsWith('/dashboard/');

const FORM_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data']);

function plain(status: 400 | 403 | 415, message: string): Response {
  const reason = { 400: 'Bad Request', 403: 'Forbidden', 415: 'Unsupported Media Type' }[status];
  return new Response(`${status} ${reason}: ${message}\n`, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });
}

/**
 * The submitted form, read from a copy of the body so the page can still read the original: every
 * state-changing request here is one of the site's forms. Anything else, or a body that cannot be
 * read as one (malformed, over the 64 KB body limit), would make the page's own read throw (a 500).
 */
async function submittedForm(context: APIContext): Promise<FormData | 'not a form' | 'unreadable'> {
  const type = (context.request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (!FORM_TYPES.has(type)) return 'not a form';
  return context.request
    .clone()
    .formData()
    .catch(() => 'unreadable' as const);
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
  if (!SAFE_METHODS.has(context.request.method)) {
    const form = await submittedForm(context);
    // Before the CSRF check: the token of a browser's form is in the body, so an unreadable body
    // (over 64 KB, say) would otherwise read as a missing token and get a misleading 403.
    if (form === 'unreadable') return plain(400, 'the form could not be read (malformed, or over 64 KB)');
    const token = context.request.headers.get('x-csrf-token') || (form instanceof FormData ? form.get(CSRF_FIELD) : undefined);
    if (!validCsrfToken(site.sessionKey, boundTo, token)) return plain(403, 'missing or invalid CSRF token; reload the page and try again');
    if (form === 'not a form') return plain(415, 'send a form (application/x-www-form-urlencoded or multipart/form-data)');
  }

  const response = await next();
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.headers.set(name, value);
  // Dashboard pages show live numbers and secrets: never cache them anywhere.
  if (isDashboard(path) || path === '/login') response.headers.set('cache-control', 'no-store');
  return response;
};
