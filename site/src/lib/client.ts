import { lastForwardedFor } from '../../../shared/domain/throttle.ts';
import type { SiteConfig } from './config.ts';

/** The one throttle key of every request that carries X-Forwarded-For when no proxy is trusted. */
export const UNTRUSTED_FORWARDED = 'untrusted X-Forwarded-For';

/**
 * The address failed logins are counted against. Behind a trusted proxy (TRUST_PROXY=true) it is
 * the last X-Forwarded-For entry, the one the proxy itself appended; earlier entries are client-made.
 * Without one, Astro itself gives the first X-Forwarded-For entry as the client address whenever the
 * Host matches the PUBLIC_URL the site was built for, so a client could name a new address for every
 * guess: requests carrying the header then share one key.
 */
export function clientKey(request: Request, clientAddress: string, site: Pick<SiteConfig, 'trustProxy'>): string {
  const forwarded = request.headers.get('x-forwarded-for');
  if (site.trustProxy) {
    const last = lastForwardedFor(forwarded);
    if (last) return last;
  } else if (forwarded !== null) {
    return UNTRUSTED_FORWARDED;
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
