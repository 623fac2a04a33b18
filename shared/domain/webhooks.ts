import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { promises as dns } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';

export interface WebhookPolicy {
  allowedHosts: readonly string[];
  /** Local testing only: allows http, any host and private addresses. */
  allowInsecure: boolean;
}

const blocked = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 3],
] as const) {
  blocked.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(network, prefix, 'ipv6');
}

/** Loopback, private, link-local (cloud metadata), CGNAT, multicast and unspecified addresses. */
export function isInternalAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 6 && address.toLowerCase().startsWith('::ffff:')) return isInternalAddress(address.slice(7));
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** The problem with a webhook URL under the policy (scheme, host list), or undefined; no DNS. */
export function webhookUrlProblem(raw: string, policy: WebhookPolicy): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be a valid URL';
  }
  if (url.username || url.password) return 'must not contain credentials';
  if (policy.allowInsecure) return url.protocol === 'https:' || url.protocol === 'http:' ? undefined : 'must be an http(s) URL';
  if (url.protocol !== 'https:') return 'must be an https URL';
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  if (isIP(host) && isInternalAddress(host)) return 'must not point at a loopback, private or link-local address';
  if (!policy.allowedHosts.includes(host)) return `host ${host} is not on the allowed list (WEBHOOK_ALLOWED_HOSTS)`;
  return undefined;
}

/** The URL check plus DNS: every address the host resolves to must be public. */
export async function checkWebhookUrl(raw: string, policy: WebhookPolicy): Promise<string | undefined> {
  const problem = webhookUrlProblem(raw, policy);
  if (problem || policy.allowInsecure) return problem;
  const host = new URL(raw).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return undefined;
  try {
    const addresses = await dns.lookup(host, { all: true });
    if (addresses.some((entry) => isInternalAddress(entry.address))) {
      return 'must not resolve to a loopback, private or link-local address';
    }
  } catch {
    return `host ${host} does not resolve`;
  }
  return undefined;
}

export interface WebhookResponse {
  status: number;
  retryAfter: string | undefined;
  body: string;
}

/**
 * POSTs JSON to a webhook. The address is checked at connect time (inside DNS lookup), so a host that
 * re-resolves to an internal address between validation and delivery is refused too.
 */
export function postWebhook(raw: string, payload: unknown, policy: WebhookPolicy, timeoutMs: number): Promise<WebhookResponse> {
  const problem = webhookUrlProblem(raw, policy);
  if (problem) return Promise.reject(new Error(`webhook URL ${problem}`));
  const url = new URL(raw);
  const body = JSON.stringify(payload);
  const guardedLookup: typeof dnsLookup = ((hostname: string, options: object, callback: (...args: unknown[]) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error);
      const usable = policy.allowInsecure ? addresses : addresses.filter((entry) => !isInternalAddress(entry.address));
      if (usable.length === 0) return callback(new Error(`${hostname} resolves only to internal addresses`));
      const wantsAll = (options as { all?: boolean }).all;
      return wantsAll ? callback(null, usable) : callback(null, usable[0]!.address, usable[0]!.family);
    });
  }) as typeof dnsLookup;
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'FlagMeter' },
        lookup: guardedLookup,
        timeout: timeoutMs,
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (text.length < 2_000) text += chunk;
        });
        response.on('end', () => {
          const retryAfter = response.headers['retry-after'];
          resolve({ status: response.statusCode ?? 0, retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter, body: text });
        });
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`no response within ${timeoutMs} ms`)));
    request.on('error', reject);
    request.end(body);
  });
}

/** Retry-After as seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
