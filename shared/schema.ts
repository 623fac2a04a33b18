import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  date,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

/** The one schema every function shares. Hot paths query it with raw SQL; the shape lives here only. */

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();
const tokens = () => bigint('tokens', { mode: 'bigint' }).notNull().default(sql`0`);
const events = () => bigint('events', { mode: 'bigint' }).notNull().default(sql`0`);

export const tenants = pgTable('tenants', {
  name: text('name').primaryKey(),
  monthlyQuota: bigint('monthly_quota', { mode: 'bigint' }).notNull(),
  timeZone: text('time_zone').notNull().default('UTC'),
  slackWebhookUrl: text('slack_webhook_url'),
  thresholds: integer('thresholds').array().notNull().default(sql`'{80,100}'::integer[]`),
  createdAt: createdAt(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    tenant: text('tenant'),
    keyHash: text('key_hash').notNull(),
    keyPrefix: text('key_prefix').notNull(),
    createdAt: createdAt(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (table) => [uniqueIndex('api_keys_key_hash_idx').on(table.keyHash), index('api_keys_created_at_idx').on(table.createdAt, table.id)],
);

/**
 * Hourly buckets are the hours of the tenant's zone (`localHourStart`: UTC hours where its offset is
 * a whole number of hours; starting :30 past in India, :15 past in Nepal). The key leads with (tenant,
 * hour) so that one index serves both the aggregator's upsert and a tenant's series over a time
 * range, with or without a feature.
 */
export const usageHourly = pgTable(
  'usage_hourly',
  {
    tenant: text('tenant').notNull(),
    feature: text('feature').notNull(),
    hour: timestamp('hour', { withTimezone: true }).notNull(),
    tokens: tokens(),
    events: events(),
  },
  (table) => [primaryKey({ columns: [table.tenant, table.hour, table.feature] })],
);

/**
 * Daily buckets are calendar days in the tenant's time zone; a period's per-feature totals are the sum
 * of its days (at most 31 rows a feature). Keyed (tenant, day, feature) like the hourly table.
 */
export const usageDaily = pgTable(
  'usage_daily',
  {
    tenant: text('tenant').notNull(),
    feature: text('feature').notNull(),
    day: date('day', { mode: 'string' }).notNull(),
    tokens: tokens(),
    events: events(),
  },
  (table) => [primaryKey({ columns: [table.tenant, table.day, table.feature] })],
);

/** One row per tenant and period: the O(1) quota check. */
export const usagePeriods = pgTable(
  'usage_periods',
  {
    tenant: text('tenant').notNull(),
    periodStart: date('period_start', { mode: 'string' }).notNull(),
    tokens: tokens(),
    events: events(),
    lastEventAt: timestamp('last_event_at', { withTimezone: true }),
  },
  (table) => [primaryKey({ columns: [table.tenant, table.periodStart] })],
);

/** Which aggregator owns a queue partition, under which fence, and the last stream id applied. */
export const partitionCheckpoints = pgTable('partition_checkpoints', {
  partition: integer('partition').primaryKey(),
  lastId: text('last_id').notNull().default('0-0'),
  /** The epoch of the stream `last_id` belongs to (null until the partition's stream was seen with one). */
  streamEpoch: text('stream_epoch'),
  /**
   * The partition stream's other epoch names: `{names, lastId: null}`, the older names of the stream
   * being read; `{names, lastId}`, each stream left (newest last) with the last id applied in it.
   */
  earlierEpochs: jsonb('earlier_epochs').$type<{ names: string[]; lastId: string | null }[]>().notNull().default(sql`'[]'::jsonb`),
  owner: text('owner'),
  fence: bigint('fence', { mode: 'bigint' }).notNull().default(sql`0`),
  leaseUntil: timestamp('lease_until', { withTimezone: true }),
  appliedEvents: bigint('applied_events', { mode: 'bigint' }).notNull().default(sql`0`),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Alert outbox: one row per crossing of a threshold in a period. At most one live (not re-armed) row
 * per tenant, period and threshold, enforced by a partial unique index, so concurrent aggregators
 * and restarts cannot create a second. A quota change that takes usage back under a threshold sets
 * `rearmed_at`, which lets the next crossing create a new row.
 */
export const alerts = pgTable(
  'alerts',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    tenant: text('tenant').notNull(),
    periodStart: date('period_start', { mode: 'string' }).notNull(),
    threshold: integer('threshold').notNull(),
    usedTokens: bigint('used_tokens', { mode: 'bigint' }).notNull(),
    quota: bigint('quota', { mode: 'bigint' }).notNull(),
    createdAt: createdAt(),
    rearmedAt: timestamp('rearmed_at', { withTimezone: true }),
    /** pending, delivered, failed (gave up) or no_webhook (nowhere to send it). */
    status: text('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
  },
  (table) => [
    uniqueIndex('alerts_live_crossing_idx').on(table.tenant, table.periodStart, table.threshold).where(sql`rearmed_at IS NULL`),
    index('alerts_due_idx').on(table.nextAttemptAt).where(sql`status = 'pending'`),
    index('alerts_tenant_created_idx').on(table.tenant, table.createdAt),
  ],
);

/** Live aggregator replicas, so partitions are shared fairly even with ones that own none yet. */
export const aggregatorMembers = pgTable('aggregator_members', {
  owner: text('owner').primaryKey(),
  seenAt: timestamp('seen_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Each tenant's current period at a glance, kept by triggers on `tenants` and `usage_periods` (see
 * migration 0004), so a sorted page of tenants reads an index instead of every tenant's usage. A
 * row whose `period_end` has passed still holds the last period; readers roll it over first.
 */
export const tenantUsageSummary = pgTable(
  'tenant_usage_summary',
  {
    tenant: text('tenant').primaryKey(),
    monthlyQuota: bigint('monthly_quota', { mode: 'bigint' }).notNull(),
    timeZone: text('time_zone').notNull(),
    periodStart: date('period_start', { mode: 'string' }).notNull(),
    periodEnd: timestamp('period_end', { withTimezone: true }).notNull(),
    tokens: tokens(),
    lastEventAt: timestamp('last_event_at', { withTimezone: true }),
  },
  (table) => [
    index('tenant_usage_summary_tokens_idx').on(table.tokens.desc(), table.tenant),
    index('tenant_usage_summary_percent_idx').on(
      sql`(${table.tokens}::numeric / nullif(${table.monthlyQuota}, 0)) DESC NULLS LAST`,
      table.tenant,
    ),
    index('tenant_usage_summary_period_end_idx').on(table.periodEnd),
  ],
);

/**
 * The number of tenants in 16 shards, kept by statement triggers on `tenants` (migration 0006), so a
 * page's total is 16 rows instead of a count over every tenant. Shards keep two transactions that
 * create tenants from waiting on one counter row.
 */
export const tenantCounts = pgTable('tenant_counts', {
  shard: smallint('shard').primaryKey(),
  tenants: bigint('tenants', { mode: 'bigint' }).notNull().default(sql`0`),
});

/**
 * Dashboard sessions ended by logout, kept until they would have expired anyway: a copied cookie of
 * a logged-out session opens nothing on any site replica, after restarts too.
 */
export const revokedSessions = pgTable(
  'revoked_sessions',
  {
    id: text('id').primaryKey(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [index('revoked_sessions_expires_at_idx').on(table.expiresAt)],
);
