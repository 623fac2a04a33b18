import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type TenantListQuery, listTenants, rollOverUsageSummary, tenantPageQueries } from '../shared/domain/tenants.ts';
import { loadOverview } from '../site/src/lib/overview.ts';
import { connectPostgres } from '../shared/platform/db.ts';
import { type TestDatabase, createTestDatabase, servicesAvailable } from './helpers/services.ts';

const TENANTS = 100_000;
const ZONES = ['UTC', 'America/New_York', 'Asia/Kolkata', 'Pacific/Kiritimati', 'Pacific/Pago_Pago'];

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows': number;
  Plans?: PlanNode[];
}
const nodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodes)];

// The old way, every tenant's current period joined and sorted: the reference the summary must match.
const REFERENCE = `
  SELECT t.name, coalesce(p.tokens, 0) AS tokens, t.monthly_quota
  FROM tenants t
  LEFT JOIN usage_periods p ON p.tenant = t.name AND p.period_start = date_trunc('month', now() AT TIME ZONE t.time_zone)::date`;

describe.skipIf(!servicesAvailable)('the tenant list at 100,000 tenants', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
    // One statement each: the triggers fill the summary as the aggregator's writes would.
    await database.db.query(
      `INSERT INTO tenants (name, monthly_quota, time_zone)
       SELECT 'tenant-' || lpad(i::text, 6, '0'), 1000 + (i * 7919) % 100000, ($1::text[])[1 + i % $2]
       FROM generate_series(1, $3) i`,
      [ZONES, ZONES.length, TENANTS],
    );
    // Two in three tenants used something this period, a few of them in the previous one too.
    await database.db.query(
      `INSERT INTO usage_periods (tenant, period_start, tokens, events, last_event_at)
       SELECT name, date_trunc('month', now() AT TIME ZONE time_zone)::date, (hashtext(name) & 1048575) + 1, 1, now()
       FROM tenants WHERE hashtext(name) % 3 <> 0`,
    );
    await database.db.query(
      `INSERT INTO usage_periods (tenant, period_start, tokens, events, last_event_at)
       SELECT name, (date_trunc('month', now() AT TIME ZONE time_zone) - interval '1 month')::date, 5000000, 1, now() - interval '40 days'
       FROM tenants WHERE hashtext(name) % 10 = 1`,
    );
    // Today's usage of the same tenants by day, where the overview's forecasts read their pace.
    await database.db.query(
      `INSERT INTO usage_daily (tenant, feature, day, tokens, events)
       SELECT tenant, 'gpt-4o', (now() AT TIME ZONE t.time_zone)::date, tokens, 1
       FROM usage_periods p JOIN tenants t ON t.name = p.tenant WHERE p.period_start = date_trunc('month', now() AT TIME ZONE t.time_zone)::date`,
    );
    // As autovacuum leaves a settled table: statistics and the visibility map up to date.
    await database.db.query('VACUUM ANALYZE');
  }, 300_000);

  afterAll(async () => {
    await database?.drop();
  });

  test("the maintained summary holds each tenant's current period, exactly as computing it would", async () => {
    const [mismatch] = await database.db.query<{ total: bigint; wrong: bigint }>(
      `SELECT count(*) AS total, count(*) FILTER (WHERE s.tokens IS DISTINCT FROM r.tokens OR s.monthly_quota <> r.monthly_quota) AS wrong
       FROM (${REFERENCE}) r LEFT JOIN tenant_usage_summary s ON s.tenant = r.name`,
    );
    expect(mismatch).toEqual({ total: BigInt(TENANTS), wrong: 0n });
    // The per-shard counts add up to the tenants there are, and follow a delete and a name filter.
    await database.db.query("INSERT INTO tenants (name, monthly_quota) VALUES ('short-lived', 1)");
    await database.db.query("DELETE FROM tenants WHERE name = 'short-lived'");
    expect((await listTenants(database.db, { limit: 1 })).total).toBe(TENANTS);
    expect((await listTenants(database.db, { limit: 1, search: '-00001' })).total).toBe(10);
  });

  test.each(['name', 'usage', 'percent'] as const)(
    'a page sorted by %s matches the full computation and reads only its rows through an index',
    async (sort) => {
      const referenceOrder = {
        name: 'name ASC',
        usage: 'coalesce(p.tokens, 0) DESC, name ASC',
        percent: 'coalesce(p.tokens, 0)::numeric / t.monthly_quota DESC, name ASC',
      }[sort];
      for (const offset of [0, 500]) {
        const query: TenantListQuery = { sort, limit: 100, offset };
        const expected = await database.db.query<{ name: string }>(`${REFERENCE} ORDER BY ${referenceOrder} LIMIT 100 OFFSET ${offset}`);
        const times: number[] = [];
        let page: Awaited<ReturnType<typeof listTenants>> | undefined;
        for (let run = 0; run < 5; run += 1) {
          const started = performance.now();
          page = await listTenants(database.db, query);
          times.push(performance.now() - started);
        }
        expect(page!.total).toBe(TENANTS);
        expect(page!.tenants.map((tenant) => tenant.tenant)).toEqual(expected.map((row) => row.name));

        const { page: statement, count } = tenantPageQueries(query);
        expect(count.text).toContain('tenant_counts');
        const [explained] = await database.db.query<{ 'QUERY PLAN': [{ Plan: PlanNode; 'Execution Time': number }] }>(
          `EXPLAIN (ANALYZE, FORMAT JSON) ${statement.text}`,
          statement.params,
        );
        const plan = explained!['QUERY PLAN'][0];
        const all = nodes(plan.Plan);
        // No scan of a whole table, and no node handles more rows than the page and the ones it skips.
        expect(all.filter((node) => node['Node Type'] === 'Seq Scan').map((node) => node['Relation Name'])).toEqual([]);
        expect(all.some((node) => node['Index Name']?.startsWith('tenant_usage_summary'))).toBe(true);
        expect(Math.max(...all.map((node) => node['Actual Rows']))).toBeLessThanOrEqual(offset + 100);
        times.sort((a, b) => a - b);
        process.stdout.write(
          `sort=${sort} offset=${offset}: listTenants median ${times[2]!.toFixed(1)} ms (min ${times[0]!.toFixed(1)}), page query ${plan['Execution Time'].toFixed(2)} ms in the database\n`,
        );
      }
    },
  );

  test.each(['percent', 'usage', 'name'] as const)(
    'the overview page sorted by %s, forecasts included, reads a bounded number of rows',
    async (sort) => {
      const times: number[] = [];
      for (let run = 0; run < 5; run += 1) {
        const started = performance.now();
        const overview = await loadOverview(database.db, { q: '', sort, page: 3 });
        times.push(performance.now() - started);
        expect(overview.tenants).toHaveLength(50);
        expect(overview.tenants.every((tenant) => tenant.forecast.tokensAtPeriodEnd >= tenant.usage.tokens)).toBe(true);
      }
      times.sort((a, b) => a - b);
      process.stdout.write(`overview sort=${sort} page 3: median ${times[2]!.toFixed(1)} ms (min ${times[0]!.toFixed(1)})\n`);
    },
  );

  test('a page after a name (keyset paging) is the next names, read from the name index alone, however deep', async () => {
    const after = (await database.db.query<{ name: string }>(`${REFERENCE} ORDER BY name LIMIT 1 OFFSET 90000`))[0]!.name;
    const expected = await database.db.query<{ name: string }>(`SELECT name FROM tenants WHERE name > $1 ORDER BY name LIMIT 100`, [after]);
    const page = await listTenants(database.db, { sort: 'name', limit: 100, after });
    expect(page.tenants.map((tenant) => tenant.tenant)).toEqual(expected.map((row) => row.name));
    expect(page.next).toBe(expected.at(-1)!.name);
    const { page: statement } = tenantPageQueries({ sort: 'name', limit: 100, after });
    const [explained] = await database.db.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${statement.text}`,
      statement.params,
    );
    const all = nodes(explained!['QUERY PLAN'][0].Plan);
    expect(all.filter((node) => node['Node Type'] === 'Seq Scan').map((node) => node['Relation Name'])).toEqual([]);
    // 90,000 tenants in, it still reads the page's own rows only (OFFSET 90000 would read them all).
    expect(Math.max(...all.map((node) => node['Actual Rows']))).toBeLessThanOrEqual(100);
  });

  test('a summary row whose period has ended is rolled into the current period before a page is read', async () => {
    await database.db.query(
      `UPDATE tenant_usage_summary SET period_start = (period_start - interval '1 month')::date, tokens = 5000000,
         period_end = period_start::timestamp AT TIME ZONE time_zone
       WHERE tenant IN ('tenant-000001', 'tenant-000002', 'tenant-000003')`,
    );
    const [top] = (await listTenants(database.db, { sort: 'usage', limit: 1 })).tenants;
    expect(top!.usage.tokens).toBeLessThan(5_000_000n);
    expect(await rollOverUsageSummary(database.db)).toBe(0);
    const [mismatch] = await database.db.query<{ wrong: bigint }>(
      `SELECT count(*) AS wrong FROM (${REFERENCE}) r JOIN tenant_usage_summary s ON s.tenant = r.name WHERE s.tokens <> r.tokens`,
    );
    expect(mismatch!.wrong).toBe(0n);
  });

  test("a page holds one of the pool's connections, so a fresh function opens no second one for its first list", async () => {
    const name = `fm-list-${process.pid}-${Date.now()}`;
    const url = new URL(database.url);
    url.searchParams.set('application_name', name);
    const fresh = connectPostgres(url.toString(), { max: 10 });
    try {
      const page = await listTenants(fresh, { sort: 'usage', limit: 5 });
      expect(page.tenants).toHaveLength(5);
      expect(page.total).toBe(TENANTS);
      const [opened] = await database.db.query<{ count: number }>(
        'SELECT count(*)::int AS count FROM pg_stat_activity WHERE application_name = $1',
        [name],
      );
      expect(opened!.count).toBe(1);
    } finally {
      await fresh.close();
    }
  });
});
