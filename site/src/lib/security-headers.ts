/**
 * Headers every site response carries. On-demand pages get them from the middleware; prerendered
 * pages and assets never pass it, so the servers that hand out static files set them too (the
 * mounted site in `npm start`: site/server.ts; the site's own server: astro.config.mjs).
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
};
