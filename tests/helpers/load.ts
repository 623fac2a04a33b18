import type { Db } from '../../shared/platform/db.ts';

export type Totals = Map<string, bigint>;

const key = (tenant: string, feature: string) => `${tenant}\t${feature}`;

export function addTo(totals: Totals, tenant: string, feature: string, tokens: number | bigint): void {
  totals.set(key(tenant, feature), (totals.get(key(tenant, feature)) ?? 0n) + BigInt(tokens));
}

export interface SentEvent {
  tenant: string;
  feature: string;
  tokens: number;
  id?: string;
  timestamp?: string;
}

// The idempotency keys already acknowledged, per `accepted` table: several calls may share one.
const acknowledgedIds = new WeakMap<Totals, Set<string>>();

/**
 * Sends batches to the ingest endpoint with `concurrency` requests in flight and adds to `accepted`
 * what the client knows must be counted: every event in a batch answered 202, except one whose
 * `(tenant, id)` was already acknowledged. The server's own duplicate report is not trusted, so a
 * server that wrongly calls an event a duplicate (and drops it) fails the comparison with the rollups.
 */
export async function sendBatches(
  url: string,
  apiKey: string,
  batches: SentEvent[][],
  accepted: Totals,
  { concurrency = 8, retryOn503 = true } = {},
): Promise<{ sent: number; rejected: number }> {
  const acknowledged = acknowledgedIds.get(accepted) ?? new Set<string>();
  acknowledgedIds.set(accepted, acknowledged);
  let next = 0;
  let sent = 0;
  let rejected = 0;
  const worker = async () => {
    while (next < batches.length) {
      const batch = batches[next++]!;
      for (;;) {
        const response = await fetch(`${url}/api/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify(batch),
        }).catch(() => undefined);
        if (response?.status === 202) {
          await response.body?.cancel();
          for (const event of batch) {
            const idempotencyKey = event.id === undefined ? undefined : `${event.tenant}\t${event.id}`;
            if (idempotencyKey !== undefined && acknowledged.has(idempotencyKey)) continue;
            if (idempotencyKey !== undefined) acknowledged.add(idempotencyKey);
            addTo(accepted, event.tenant, event.feature, event.tokens);
          }
          sent += batch.length;
          break;
        }
        await response?.body?.cancel();
        rejected++;
        if (!retryOn503 || (response && response.status !== 503)) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { sent, rejected };
}

/** What the rollups hold, per tenant and feature, summed over every period (and checked across tables). */
export async function rolledUp(
  db: Db,
  tenants: readonly string[],
): Promise<{ hourly: Totals; daily: Totals; periods: Map<string, bigint> }> {
  const names = JSON.stringify(tenants);
  const read = async (table: string) => {
    const rows = await db.query<{ tenant: string; feature: string; tokens: bigint }>(
      `SELECT tenant, feature, sum(tokens)::bigint AS tokens FROM ${table}
       WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) GROUP BY tenant, feature`,
      [names],
    );
    const totals: Totals = new Map();
    for (const row of rows) addTo(totals, row.tenant, row.feature, row.tokens);
    return totals;
  };
  const periodRows = await db.query<{ tenant: string; tokens: bigint }>(
    `SELECT tenant, sum(tokens)::bigint AS tokens FROM usage_periods
     WHERE tenant IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) GROUP BY tenant`,
    [names],
  );
  return {
    hourly: await read('usage_hourly'),
    daily: await read('usage_daily'),
    periods: new Map(periodRows.map((row) => [row.tenant, row.tokens])),
  };
}

export function byTenant(totals: Totals): Map<string, bigint> {
  const result = new Map<string, bigint>();
  for (const [k, tokens] of totals) {
    const tenant = k.split('\t')[0]!;
    result.set(tenant, (result.get(tenant) ?? 0n) + tokens);
  }
  return result;
}

export const sortedEntries = <V>(map: Map<string, V>): [string, V][] => [...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
