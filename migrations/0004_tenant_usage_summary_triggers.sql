-- Keeps tenant_usage_summary in step with tenants and usage_periods inside the writing transaction,
-- so the sorted tenant list reads one index instead of computing every tenant's usage per page.
-- A tenant's current period is the calendar month in its zone, by the database clock.
-- A zone PostgreSQL cannot read (stored before zone names were enforced; the migrator then repairs
-- it to UTC, which fires the tenants trigger again) counts as UTC here, so no write or migration fails.
CREATE FUNCTION flagmeter_readable_zone(zone text) RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
  PERFORM now() AT TIME ZONE zone;
  RETURN zone;
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN 'UTC';
END $$;
--> statement-breakpoint
CREATE FUNCTION flagmeter_summary_from_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  zone text := flagmeter_readable_zone(NEW.time_zone);
  start_day date := date_trunc('month', now() AT TIME ZONE zone)::date;
BEGIN
  INSERT INTO tenant_usage_summary AS s (tenant, monthly_quota, time_zone, period_start, period_end, tokens, last_event_at)
  SELECT NEW.name, NEW.monthly_quota, zone, start_day,
         (start_day + interval '1 month')::timestamp AT TIME ZONE zone,
         coalesce(p.tokens, 0), p.last_event_at
  FROM (SELECT 1) AS one
  LEFT JOIN usage_periods p ON p.tenant = NEW.name AND p.period_start = start_day
  ON CONFLICT (tenant) DO UPDATE SET
    monthly_quota = excluded.monthly_quota, time_zone = excluded.time_zone, period_start = excluded.period_start,
    period_end = excluded.period_end, tokens = excluded.tokens, last_event_at = excluded.last_event_at;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER tenants_usage_summary AFTER INSERT OR UPDATE OF monthly_quota, time_zone ON tenants
  FOR EACH ROW EXECUTE FUNCTION flagmeter_summary_from_tenant();
--> statement-breakpoint
CREATE FUNCTION flagmeter_summary_drop_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM tenant_usage_summary WHERE tenant = OLD.name;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER tenants_usage_summary_drop AFTER DELETE ON tenants
  FOR EACH ROW EXECUTE FUNCTION flagmeter_summary_drop_tenant();
--> statement-breakpoint
-- A late event for a past period never replaces the current one, nor does a clock-skewed future one.
CREATE FUNCTION flagmeter_summary_from_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tenant_usage_summary s SET
    period_start = NEW.period_start,
    period_end = (NEW.period_start + interval '1 month')::timestamp AT TIME ZONE s.time_zone,
    tokens = NEW.tokens,
    last_event_at = NEW.last_event_at
  WHERE s.tenant = NEW.tenant AND NEW.period_start >= s.period_start
    AND NEW.period_start <= date_trunc('month', now() AT TIME ZONE s.time_zone)::date;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER usage_periods_usage_summary AFTER INSERT OR UPDATE ON usage_periods
  FOR EACH ROW EXECUTE FUNCTION flagmeter_summary_from_usage();
--> statement-breakpoint
INSERT INTO tenant_usage_summary (tenant, monthly_quota, time_zone, period_start, period_end, tokens, last_event_at)
SELECT t.name, t.monthly_quota, z.zone, c.start_day,
       (c.start_day + interval '1 month')::timestamp AT TIME ZONE z.zone,
       coalesce(p.tokens, 0), p.last_event_at
FROM tenants t
CROSS JOIN LATERAL (SELECT flagmeter_readable_zone(t.time_zone) AS zone) z
CROSS JOIN LATERAL (SELECT date_trunc('month', now() AT TIME ZONE z.zone)::date AS start_day) c
LEFT JOIN usage_periods p ON p.tenant = t.name AND p.period_start = c.start_day;
