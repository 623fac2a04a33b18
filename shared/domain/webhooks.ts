import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { promises as dns } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { ApiError } from '../platform/http/errors.ts';

export interface WebhookPolicy {
  allowedHosts: readonly string[];
  /** Local testing only: allows http and private addresses; the host allow list still applies. */
  allowInsecure: boolean;
}

/** How much of a webhook's answer is read (for the error message); the rest is never downloaded. */
export const MAX_RESPONSE_BYTES = 4_096;

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
  // Teredo carries an obfuscated IPv4 address; nothing legitimate posts webhooks over it.
  ['2001::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(network, prefix, 'ipv6');
}

/** The 16 bytes of a valid IPv6 address (a trailing dotted IPv4 part and a zone id allowed). */
function ipv6Bytes(address: string): number[] {
  let text = address.split('%')[0]!.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  const groups = tail === undefined ? front : [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  return groups.flatMap((group) => {
    const value = Number.parseInt(group, 16);
    return [value >> 8, value & 0xff];
  });
}

/**
 * The IPv4 address an IPv6 address carries and a network would route to: IPv4-compatible (::/96),
 * IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96), NAT64 (64:ff9b::/96) and 6to4
 * (2002::/16). Undefined for every other IPv6 address.
 */
export function embeddedIpv4(address: string): string | undefined {
  const bytes = ipv6Bytes(address);
  const zeros = (from: number, to: number): boolean => bytes.slice(from, to).every((byte) => byte === 0);
  const quad = (at: number): string => bytes.slice(at, at + 4).join('.');
  if (zeros(0, 10) && ((bytes[10] === 0 && bytes[11] === 0) || (bytes[10] === 0xff && bytes[11] === 0xff))) return quad(12);
  if (zeros(0, 8) && bytes[8] === 0xff && bytes[9] === 0xff && zeros(10, 12)) return quad(12);
  if (bytes[0] === 0 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeros(4, 12)) return quad(12);
  if (bytes[0] === 0x20 && bytes[1] === 0x02) return quad(2);
  return undefined;
}

/** Loopback, private, link-local (cloud metadata), CGNAT, multicast and unspecified addresses. */
export function isInternalAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 6) {
    // An IPv6 form that carries an IPv4 address reaches that IPv4 address: judge it by that.
    const ipv4 = embeddedIpv4(address);
    if (ipv4 !== undefined) return isInternalAddress(ipv4);
  }
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** The problem with a webhook URL under the policy (scheme, host list), or undefined; no DNS. */
export function webhookUrlProblem(raw: string, policy: WebhookPolicy): string | undefined {
  // The URL parser drops or escapes control characters, so the string as given would differ from the
  // URL checked; a NUL would also reach PostgreSQL, whose text cannot hold it.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(raw)) return 'must not contain control characters';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be a valid URL';
  }
  if (url.username || url.password) return 'must not contain credentials';
  if (policy.allowInsecure) {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an http(s) URL';
  } else if (url.protocol !== 'https:') {
    return 'must be an https URL';
  }
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  if (!policy.allowInsecure && isIP(host) && isInternalAddress(host)) return 'must not point at a loopback, private or link-local address';
  if (!policy.allowedHosts.includes(host)) return `host ${host} is not on the allowed list (WEBHOOK_ALLOWED_HOSTS)`;
  return undefined;
}

/** DNS answers that say the name does not exist, as opposed to a lookup that failed for now. */
const NO_SUCH_HOST = new Set(['ENOTFOUND', 'ENODATA', 'EAI_NONAME', 'EAI_NODATA']);

/**
 * The URL check plus DNS: every address the host resolves to must be public. A host that does not
 * exist is the caller's mistake (a problem to report); a lookup that failed for now (a resolver
 * timeout, EAI_AGAIN) is not, and is a 503 to retry rather than a 400 blaming the URL.
 */
export async function checkWebhookUrl(
  raw: string,
  policy: WebhookPolicy,
  lookup: (host: string) => Promise<LookupAddress[]> = (host) => dns.lookup(host, { all: true }),
): Promise<string | undefined> {
  const problem = webhookUrlProblem(raw, policy);
  if (problem || policy.allowInsecure) return problem;
  const host = new URL(raw).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return undefined;
  let addresses: LookupAddress[];
  try {
    addresses = await lookup(host);
  } catch (error) {
    if (NO_SUCH_HOST.has(String((error as NodeJS.ErrnoException).code))) return `host ${host} does not resolve`;
    throw new ApiError('service_unavailable', `the webhook host ${host} could not be looked up just now; retry shortly`, undefined, 2);
  }
  if (addresses.some((entry) => isInternalAddress(entry.address))) {
    return 'must not resolve to a loopback, private or link-local address';
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
 * re-resolves to an internal address between validation and delivery is refused too. `timeoutMs` is
 * a deadline for the whole attempt, connect to answer: a server that trickles a byte at a time cannot
 * hold a delivery slot past it. Of the answer only the status, Retry-After and the first
 * MAX_RESPONSE_BYTES are read; once the status is in, the deadline ends the attempt with what came.
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
    let answer: WebhookResponse | undefined;
    const settle = (error?: Error): void => {
      clearTimeout(deadline);
      request.destroy();
      if (answer) resolve(answer);
      else reject(error ?? new Error('webhook closed the connection without an answer'));
    };
    const request = transport.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'FlagMeter' },
        lookup: guardedLookup,
      },
      (response) => {
        const retryAfter = response.headers['retry-after'];
        answer = { status: response.statusCode ?? 0, retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter, body: '' };
        const chunks: Buffer[] = [];
        let received = 0;
        const finish = (): void => {
          answer!.body = Buffer.concat(chunks).subarray(0, MAX_RESPONSE_BYTES).toString('utf8');
          settle();
        };
        response.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          received += chunk.length;
          if (received >= MAX_RESPONSE_BYTES) finish();
        });
        response.on('end', finish);
        response.on('error', finish);
      },
    );
    const deadline = setTimeout(() => {
      if (answer) answer.body ||= '(answer cut off at the deadline)';
      settle(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    request.on('error', (error) => settle(error));
    request.end(body);
  });
}

/**
 * Retry-After as whole seconds or an HTTP date, in ms from now; undefined when absent or unreadable.
 * Anything else ("1.5", "-1") is unreadable, not a date: Date.parse reads "1.5" as a day in 2001.
 */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  const text = header?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // An HTTP date names its weekday or month: letters, which no number has.
  if (!/[A-Za-z]/.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
