import type { SiteConfig } from './config.ts';

/**
 * The address failed logins are counted against. Behind a trusted proxy (TRUST_PROXY=true) it is
 * the last X-Forwarded-For entry, the one the proxy itself appended; earlier entries are client-made.
 */
export function clientKey(request: Request, clientAddress: string, site: Pick<SiteConfig, 'trustProxy'>): string {
  if (site.trustProxy) {
    const forwarded = request.headers.get('x-forwarded-for')?.split(',').at(-1)?.trim();
    if (forwarded) return forwarded;
  }
  return clientAddress;
}

/**
 * Where to go after login: only our own dashboard paths, never another origin, and only printable
 * ASCII (a CR, LF or U+2028 would make the Location header invalid).
 */
export function safeNext(next: string | null): string {
  return next && next.length <= 2_048 && /^[\x21-\x7e]+$/.test(next) && /^\/dashboard(\/[^/\\]|\/?$|\?)/.test(next) && !next.includes('//')
    ? next
    : '/dashboard';
}
