import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { type Config, ConfigError } from '../../../shared/platform/config.ts';

/**
 * Variables only the site reads. They live here, not in shared/platform/config.ts, because no function
 * needs them; they are checked with the same strictness and a bad one names itself.
 */
const siteSchema = z.object({
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  SESSION_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  SESSION_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 30)
    .default(12),
  // Behind Traefik every request comes from the proxy; then the login throttle keys on X-Forwarded-For.
  TRUST_PROXY: z
    .enum(['true', 'false'], { message: 'must be true or false' })
    .default('false')
    .transform((value) => value === 'true'),
});

export interface SiteConfig {
  adminPassword: string | undefined;
  /** HMAC key for session cookies and CSRF tokens. */
  sessionKey: Buffer;
  sessionTtlMs: number;
  trustProxy: boolean;
}

/** Site settings on top of the shared config; throws ConfigError naming the bad variable. */
export function loadSiteConfig(config: Pick<Config, 'ADMIN_TOKEN'>, env: NodeJS.ProcessEnv = process.env): SiteConfig {
  const resolved = Object.fromEntries(Object.entries(env).map(([name, value]) => [name, value === '' ? undefined : value]));
  const parsed = siteSchema.safeParse(resolved);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid site configuration: ${problems.join('; ')}`);
  }
  const site = parsed.data;
  const credential = config.ADMIN_TOKEN ?? site.ADMIN_PASSWORD;
  if (!credential) throw new ConfigError('ADMIN_TOKEN: required by the dashboard login (or set ADMIN_PASSWORD)');
  // Without SESSION_SECRET the key is derived from the admin credential: every replica agrees on it,
  // and rotating the credential ends every session.
  const sessionKey = createHmac('sha256', 'flagmeter-site-session')
    .update(site.SESSION_SECRET ?? credential)
    .digest();
  return {
    adminPassword: site.ADMIN_PASSWORD,
    sessionKey,
    sessionTtlMs: site.SESSION_TTL_HOURS * 3_600_000,
    trustProxy: site.TRUST_PROXY,
  };
}
