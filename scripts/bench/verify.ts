import type { Db } from '../../shared/platform/db.ts';
import { comboKey, type Expected, sumExpected } from './events.ts';

export interface Verification {
  ok: boolean;
  detail: string;
}

/**
 * Nothing lost, nothing doubled: every (tenant, feature) in the rollups holds exactly the tokens that
 * were answered 202 (summed from the daily rollups, as usage reads sum a period's features), and the
 * hourly and per-period tables agree on the total. The database is
 * the bench's own, so "every row" is exactly what the bench sent.
 */
export async function verifyRollups(db: Db, expected: Expected): Promise<Verification> {
  const rows = await db.query<{ tenant: string; feature: string; tokens: bigint }>(
    'SELECT tenant, feature, sum(tokens)::bigint AS tokens FROM usage_daily GROUP BY tenant, feature',
  );
  const actual = new Map(rows.map((row) => [comboKey(row.tenant, row.feature), row.tokens]));
  const wrong: string[] = [];
  for (const [key, tokens] of expected) {
    const found = actual.get(key) ?? 0n;
    if (found !== tokens) wrong.push(`${key.replace('\t', '/')}: ${found} ≠ ${tokens}`);
  }
  for (const key of actual.keys()) if (!expected.has(key)) wrong.push(`${key.replace('\t', '/')}: unexpected row`);
  const [totals] = await db.query<{ hourly: bigint | null; periods: bigint | null }>(
    `SELECT (SELECT sum(tokens)::bigint FROM usage_hourly) AS hourly, (SELECT sum(tokens)::bigint FROM usage_periods) AS periods`,
  );
  const total = sumExpected(expected);
  for (const table of ['hourly', 'periods'] as const) {
    if ((totals?.[table] ?? 0n) !== total) wrong.push(`usage_${table} total ${totals?.[table] ?? 0n} ≠ ${total}`);
  }
  if (wrong.length > 0) return { ok: false, detail: `${wrong.length} mismatches, e.g. ${wrong.slice(0, 3).join('; ')}` };
  return { ok: true, detail: `${expected.size.toLocaleString('en-US')} tenant×feature sums, ${total.toLocaleString('en-US')} tokens` };
}
