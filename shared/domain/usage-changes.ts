/**
 * Which tenants' usage a commit changed, as the aggregator tells the usage functions: a NOTIFY on
 * `USAGE_CHANNEL`, sent inside the rollup transaction, so it arrives exactly when the commit is
 * visible and never for a commit that rolled back. The payload is a bitmap of tenant buckets (a
 * fixed 684 characters whatever the number of tenants, well under NOTIFY's 8,000-byte limit); a
 * cached answer whose tenant falls in a set bucket is read afresh. Another tenant of the same bucket
 * costs one extra read, never a stale answer. PostgreSQL serialises the commits that notify (a lock
 * held until each is flushed): one a round, tens a second, is far below where that shows.
 */
export const USAGE_CHANNEL = 'flagmeter_usage';

export const TENANT_BUCKETS = 4096;

/** FNV-1a (32 bits) over a name's UTF-16 code units. */
export function nameHash(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The tenant's bucket: its name's hash modulo `TENANT_BUCKETS`. */
export function tenantBucket(tenant: string): number {
  return nameHash(tenant) % TENANT_BUCKETS;
}

/** The payload naming the tenants of these name hashes (`nameHash`): their buckets' bits, base64. */
export function changesPayload(nameHashes: Iterable<number>): string {
  const bits = new Uint8Array(TENANT_BUCKETS / 8);
  for (const hash of nameHashes) {
    const bucket = hash % TENANT_BUCKETS;
    bits[bucket >> 3]! |= 1 << (bucket & 7);
  }
  return Buffer.from(bits).toString('base64');
}

/** The buckets a payload names; a payload of another shape names none. */
export function changedBuckets(payload: string): number[] {
  const bits = Buffer.from(payload, 'base64');
  if (bits.length !== TENANT_BUCKETS / 8) return [];
  const buckets: number[] = [];
  for (let byte = 0; byte < bits.length; byte++) {
    const value = bits[byte]!;
    if (value === 0) continue;
    for (let bit = 0; bit < 8; bit++) if (value & (1 << bit)) buckets.push(byte * 8 + bit);
  }
  return buckets;
}
