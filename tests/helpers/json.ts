/** Fields the API writes as exact 64-bit integers. */
const EXACT_FIELDS = new Set(['tokens', 'quota', 'remaining', 'monthlyQuota', 'usedTokens', 'tokensAtPeriodEnd']);

/** JSON.parse that reads those fields from their source digits as bigints, so nothing is rounded. */
export function parseExact(text: string): unknown {
  return JSON.parse(text, function reviver(this: unknown, key: string, value: unknown, context?: { source?: string }) {
    if (EXACT_FIELDS.has(key) && typeof value === 'number' && context?.source) return BigInt(context.source);
    return value;
  } as never);
}
