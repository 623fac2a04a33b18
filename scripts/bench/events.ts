/**
 * The bench's traffic, generated the same way in the orchestrator and in the load processes: a load
 * process reports how many times each body was answered 202, and the orchestrator turns those counts
 * back into the tokens every (tenant, feature) must hold once the aggregator has drained.
 */

export const TENANT_COUNT = 1_000;
export const FEATURES = [
  'gpt-4o',
  'openai/gpt-4o-mini',
  'claude-sonnet-4',
  'claude-haiku-4',
  'gemini-2.5-pro',
  'gemini-2.5-flash',
  'mistral-large',
  'llama-3.3-70b',
  'text-embedding-3-small',
  'o3-mini',
] as const;

export interface BenchEvent {
  tenant: string;
  feature: string;
  tokens: number;
}

/** (tenant, feature) → tokens that were answered 202 and must appear in the rollups. */
export type Expected = Map<string, bigint>;

/** Tenant names of a grid of `tenants` (default 1,000): `t0000`…`t0999`; a larger grid has longer names, so grids never share a tenant. */
export const tenantName = (index: number, tenants = TENANT_COUNT): string =>
  `t${String(index % tenants).padStart(String(tenants - 1).length, '0')}`;
export const comboKey = (tenant: string, feature: string): string => `${tenant}\t${feature}`;

/** The k-th event of the `tenants` × 10 features grid: every combination once per `tenants` × 10 events. */
export function gridEvent(k: number, tenants = TENANT_COUNT): BenchEvent {
  const combo = k % (tenants * FEATURES.length);
  return {
    tenant: tenantName(combo, tenants),
    feature: FEATURES[Math.floor(combo / tenants)]!,
    tokens: 1 + ((k * 7_919) % 4_999),
  };
}

/** One body per request for the single-event scenario (a rotation over 100 tenants). */
export function singleEventBodies(count = 100): BenchEvent[][] {
  return Array.from({ length: count }, (_, i) => [gridEvent(i * 1_001)]);
}

/** Batches of `size` events that together cover the grid of `tenants` once (1,000 tenants: 100 × 100 = 10,000 events). */
export function batchedBodies(size = 100, tenants = TENANT_COUNT): BenchEvent[][] {
  const count = Math.ceil((tenants * FEATURES.length) / size);
  return Array.from({ length: count }, (_, i) => Array.from({ length: size }, (_, j) => gridEvent(i * size + j, tenants)));
}

/** Adds `times` copies of every event in `events` to `expected`. */
export function addExpected(expected: Expected, events: readonly BenchEvent[], times = 1): void {
  if (times === 0) return;
  for (const event of events) {
    const key = comboKey(event.tenant, event.feature);
    expected.set(key, (expected.get(key) ?? 0n) + BigInt(event.tokens) * BigInt(times));
  }
}

export const sumExpected = (expected: Expected): bigint => [...expected.values()].reduce((sum, tokens) => sum + tokens, 0n);
