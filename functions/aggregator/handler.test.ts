import type { Context } from 'aws-lambda';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, servicesAvailable, type TestDatabase, uniqueName } from '../../tests/helpers/services.ts';
import type { Db } from '../../shared/platform/db.ts';
import { type AggregatorEvent, applyBatch, KnownTenants, StaleOwnerError } from './apply.ts';
import { createAggregatorHandler } from './handler.ts';

const context = {} as Context;

describe.skipIf(!servicesAvailable)('aggregator function (its middy handler, real PostgreSQL)', () => {
  let database: TestDatabase;
  const logged: { level: number; msg: string; partitions?: number[] }[] = [];
  const durations: number[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line)) });
  let handler: ReturnType<typeof createAggregatorHandler>;

  const checkpoint = async (partition: number): Promise<{ fence: string; last_id: string }> => {
    const [row] = await database.db.query<{ fence: bigint; last_id: string }>(
      'SELECT fence, last_id FROM partition_checkpoints WHERE partition = $1',
      [partition],
    );
    return { fence: row!.fence.toString(), last_id: row!.last_id };
  };
  const event = (partition: number, fence: string, afterId: string, tenant: string, tokens: number): AggregatorEvent => ({
    batches: [
      {
        partition,
        fence,
        afterId,
        entries: [{ id: '1-0', receivedAt: Date.now(), events: [{ tenant, feature: 'f', tokens, timestamp: Date.now() }] }],
      },
    ],
  });
  const periodTokens = async (tenant: string): Promise<bigint> => {
    const rows = await database.db.query<{ tokens: bigint }>(
      'SELECT coalesce(sum(tokens), 0)::int8 AS tokens FROM usage_periods WHERE tenant = $1',
      [tenant],
    );
    return rows[0]!.tokens;
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    await database.db.query('INSERT INTO partition_checkpoints (partition) SELECT generate_series(0, 1) ON CONFLICT DO NOTHING');
    handler = createAggregatorHandler({
      db: database.db,
      defaultQuota: 1_000n,
      logger,
      onCommitDuration: (seconds) => durations.push(seconds),
    });
  });
  afterAll(() => database?.drop());

  it('applies a batch, advances the checkpoint and times the commit', async () => {
    const tenant = uniqueName('mid');
    const before = await checkpoint(0);
    const result = await handler(event(0, before.fence, before.last_id, tenant, 7), context);
    expect(result).toMatchObject({ events: 1, lastIds: { 0: '1-0' } });
    expect(await periodTokens(tenant)).toBe(7n);
    expect((await checkpoint(0)).last_id).toBe('1-0');
    expect(durations).toHaveLength(1);
  });

  it('sums the groups into the hours, days and periods of each tenant zone, exactly past 2^53', async () => {
    const [utc, berlin, kolkata] = [uniqueName('utc'), uniqueName('berlin'), uniqueName('kolkata')];
    await database.db.query(
      `INSERT INTO tenants (name, monthly_quota, time_zone) VALUES ($1, 1000, 'Europe/Berlin'), ($2, 1000, 'Asia/Kolkata')`,
      [berlin, kolkata],
    );
    const at = (iso: string) => Date.parse(iso);
    const big = 1_000_000_000_000;
    const events = [
      // Two quarter hours of one UTC hour; then 10,000 events of 10^12 tokens in the next hour (10^16 > 2^53).
      { tenant: utc, feature: 'f', tokens: 3, timestamp: at('2026-05-10T10:05:00Z') },
      { tenant: utc, feature: 'f', tokens: 4, timestamp: at('2026-05-10T10:50:00Z') },
      ...Array.from({ length: 10_000 }, () => ({ tenant: utc, feature: 'g', tokens: big, timestamp: at('2026-05-10T11:10:00Z') })),
      // 00:30 on 1 June in Berlin.
      { tenant: berlin, feature: 'f', tokens: 5, timestamp: at('2026-05-31T22:30:00Z') },
      // One UTC hour, two hours, days and periods in Kolkata (UTC+05:30): 23:45 on 31 May and 00:00 on 1 June.
      { tenant: kolkata, feature: 'f', tokens: 6, timestamp: at('2026-05-31T18:15:00Z') },
      { tenant: kolkata, feature: 'f', tokens: 7, timestamp: at('2026-05-31T18:30:00Z') },
    ];
    const { fence, last_id } = await checkpoint(0);
    const batch: AggregatorEvent = {
      batches: [{ partition: 0, fence, afterId: last_id, entries: [{ id: '2-0', receivedAt: Date.now(), events }] }],
    };
    expect((await applyBatch({ db: database.db, defaultQuota: 1_000n }, batch)).events).toBe(events.length);
    const tenants = [utc, berlin, kolkata];
    const rows = (table: string, time: string, extra = '') =>
      database.db.query(
        `SELECT tenant, ${time}, tokens, events${extra} FROM ${table} WHERE tenant = ANY ($1::text[]) ORDER BY array_position($1::text[], tenant), 2, 3`,
        [`{${tenants.join(',')}}`],
      );
    expect(await rows('usage_hourly', `to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI') AS hour, feature`)).toEqual([
      { tenant: utc, hour: '2026-05-10T10:00', feature: 'f', tokens: 7n, events: 2n },
      { tenant: utc, hour: '2026-05-10T11:00', feature: 'g', tokens: 10_000n * BigInt(big), events: 10_000n },
      { tenant: berlin, hour: '2026-05-31T22:00', feature: 'f', tokens: 5n, events: 1n },
      // Kolkata's hours start at :30 UTC: 23:00 on 31 May and 00:00 on 1 June, one in each period.
      { tenant: kolkata, hour: '2026-05-31T17:30', feature: 'f', tokens: 6n, events: 1n },
      { tenant: kolkata, hour: '2026-05-31T18:30', feature: 'f', tokens: 7n, events: 1n },
    ]);
    expect(await rows('usage_daily', 'day, feature')).toEqual([
      { tenant: utc, day: '2026-05-10', feature: 'f', tokens: 7n, events: 2n },
      { tenant: utc, day: '2026-05-10', feature: 'g', tokens: 10_000n * BigInt(big), events: 10_000n },
      { tenant: berlin, day: '2026-06-01', feature: 'f', tokens: 5n, events: 1n },
      { tenant: kolkata, day: '2026-05-31', feature: 'f', tokens: 6n, events: 1n },
      { tenant: kolkata, day: '2026-06-01', feature: 'f', tokens: 7n, events: 1n },
    ]);
    expect(
      await rows('usage_periods', 'period_start', `, to_char(last_event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') AS last`),
    ).toEqual([
      { tenant: utc, period_start: '2026-05-01', tokens: 10_000n * BigInt(big) + 7n, events: 10_002n, last: '2026-05-10T11:10:00.000' },
      { tenant: berlin, period_start: '2026-06-01', tokens: 5n, events: 1n, last: '2026-05-31T22:30:00.000' },
      { tenant: kolkata, period_start: '2026-05-01', tokens: 6n, events: 1n, last: '2026-05-31T18:15:00.000' },
      { tenant: kolkata, period_start: '2026-06-01', tokens: 7n, events: 1n, last: '2026-05-31T18:30:00.000' },
    ]);
  });

  it('leaves a taken-over partition to the runner: throws StaleOwnerError, applies nothing, logs no error, still times it', async () => {
    const tenant = uniqueName('stale');
    const { last_id } = await checkpoint(1);
    logged.length = 0;
    durations.length = 0;
    await expect(handler(event(1, '999', last_id, tenant, 5), context)).rejects.toBeInstanceOf(StaleOwnerError);
    expect(await periodTokens(tenant)).toBe(0n);
    expect(logged.filter((line) => line.level >= 50)).toEqual([]);
    expect(durations).toHaveLength(1);
  });

  it('creates, inside the commit, a tenant deleted after the round created it and before the commit', async () => {
    const tenant = uniqueName('gone');
    const { fence, last_id } = await checkpoint(0);
    // The real database; the tenant is deleted right after the round's own creation of it.
    const db: Db = Object.create(database.db, {
      query: {
        value: async (text: string, params?: unknown[]) => {
          const rows = await database.db.query(text, params);
          if (text.startsWith('INSERT INTO tenants')) await database.db.query('DELETE FROM tenants WHERE name = $1', [tenant]);
          return rows;
        },
      },
    });
    const result = await applyBatch({ db, defaultQuota: 1_000n }, event(0, fence, last_id, tenant, 9));
    expect(result.events).toBe(1);
    expect(await periodTokens(tenant)).toBe(9n);
    const [row] = await database.db.query<{ monthly_quota: bigint; tokens: bigint }>(
      'SELECT t.monthly_quota, s.tokens FROM tenants t JOIN tenant_usage_summary s ON s.tenant = t.name WHERE t.name = $1',
      [tenant],
    );
    expect(row).toEqual({ monthly_quota: 1_000n, tokens: 9n });
  });

  it('skips creating tenants an earlier commit found, and still creates one deleted since', async () => {
    const tenant = uniqueName('known');
    const creations: string[][] = [];
    // The real database, recording the rounds' creations before their commits.
    const db: Db = Object.create(database.db, {
      query: {
        value: (text: string, params?: unknown[]) => {
          if (text.startsWith('INSERT INTO tenants')) creations.push(JSON.parse(params![0] as string) as string[]);
          return database.db.query(text, params);
        },
      },
    });
    const deps = { db, defaultQuota: 1_000n, knownTenants: new KnownTenants() };
    const round = async (tokens: number) => {
      const { fence, last_id } = await checkpoint(0);
      await applyBatch(deps, event(0, fence, last_id, tenant, tokens));
    };
    await round(1);
    await round(2);
    expect(creations).toEqual([[tenant]]);
    await database.db.query('DELETE FROM tenants WHERE name = $1', [tenant]);
    await round(4);
    expect(creations).toEqual([[tenant]]);
    const [row] = await database.db.query<{ monthly_quota: bigint; tokens: bigint }>(
      'SELECT t.monthly_quota, s.tokens FROM tenants t JOIN tenant_usage_summary s ON s.tenant = t.name WHERE t.name = $1',
      [tenant],
    );
    expect(row).toEqual({ monthly_quota: 1_000n, tokens: 7n });
  });

  it('logs an unexpected failure with the batch it concerns, and applies nothing of it', async () => {
    const tenant = uniqueName('bad');
    const { fence, last_id } = await checkpoint(1);
    logged.length = 0;
    // Tokens past int8's range make the upsert fail inside the transaction.
    const failing = event(1, fence, last_id, tenant, 1);
    failing.batches[0]!.entries[0]!.events[0]!.tokens = Number.MAX_VALUE;
    await expect(handler(failing, context)).rejects.toThrow();
    expect(await periodTokens(tenant)).toBe(0n);
    expect((await checkpoint(1)).last_id).toBe(last_id);
    expect(logged.filter((line) => line.level >= 50)).toEqual([
      expect.objectContaining({ msg: 'aggregator commit failed; nothing of the batch was applied', partitions: [1] }),
    ]);
  });
});
