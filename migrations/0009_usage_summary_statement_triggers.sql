-- The tenant-summary triggers of 0004, per statement instead of per row (issue 18): one set-based
-- write per commit over the batch's tenants, through transition tables, instead of a plpgsql call per
-- row. The zone check's exception block (a subtransaction per call) runs only for zones other than
-- UTC, which every auto-created tenant has.
DROP TRIGGER usage_periods_usage_summary ON usage_periods;
--> statement-breakpoint
DROP TRIGGER tenants_usage_summary ON tenants;
--> statement-breakpoint
DROP FUNCTION flagmeter_summary_from_usage();
--> statement-breakpoint
DROP FUNCTION flagmeter_summary_from_tenant();
--> statement-breakpoint
CREATE FUNCTION flagmeter_summary_from_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tenant_usage_summary AS s (tenant, monthly_quota, time_zone, period_start, period_end, tokens, last_event_at)
  SELECT t.name, t.monthly_quota, z.zone, c.start_day,
         (c.start_day + interval '1 month')::timestamp AT TIME ZONE z.zone,
         coalesce(p.tokens, 0), p.last_event_at
  FROM changed t
  CROSS JOIN LATERAL (SELECT CASE WHEN t.time_zone = 'UTC' THEN 'UTC' ELSE flagmeter_readable_zone(t.time_zone) END AS zone) z
  CROSS JOIN LATERAL (SELECT date_trunc('month', now() AT TIME ZONE z.zone)::date AS start_day) c
  LEFT JOIN usage_periods p ON p.tenant = t.name AND p.period_start = c.start_day
  ORDER BY t.name
  ON CONFLICT (tenant) DO UPDATE SET
    monthly_quota = excluded.monthly_quota, time_zone = excluded.time_zone, period_start = excluded.period_start,
    period_end = excluded.period_end, tokens = excluded.tokens, last_event_at = excluded.last_event_at;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- Transition tables allow neither column lists nor several events in one trigger: one trigger each.
CREATE TRIGGER tenants_usage_summary_insert AFTER INSERT ON tenants REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_summary_from_tenants();
--> statement-breakpoint
CREATE TRIGGER tenants_usage_summary_update AFTER UPDATE ON tenants REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_summary_from_tenants();
--> statement-breakpoint
-- A late event for a past period never replaces the current one, nor does a clock-skewed future one;
-- of several periods of one tenant in a statement, the latest that qualifies wins. The rows written are
-- those whose usage_periods rows this transaction has just locked, so concurrent commits cannot
-- deadlock here.
CREATE FUNCTION flagmeter_summary_from_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tenant_usage_summary s SET
    period_start = n.period_start,
    period_end = (n.period_start + interval '1 month')::timestamp AT TIME ZONE s.time_zone,
    tokens = n.tokens,
    last_event_at = n.last_event_at
  FROM (SELECT DISTINCT ON (c.tenant) c.tenant, c.period_start, c.tokens, c.last_event_at
        FROM changed c JOIN tenant_usage_summary cur ON cur.tenant = c.tenant
        WHERE c.period_start >= cur.period_start
          AND c.period_start <= date_trunc('month', now() AT TIME ZONE cur.time_zone)::date
        ORDER BY c.tenant, c.period_start DESC) n
  WHERE s.tenant = n.tenant;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER usage_periods_usage_summary_insert AFTER INSERT ON usage_periods REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_summary_from_usage();
--> statement-breakpoint
CREATE TRIGGER usage_periods_usage_summary_update AFTER UPDATE ON usage_periods REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_summary_from_usage();
