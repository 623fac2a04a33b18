-- Fewer index entries per counted key (issue 18): a period's per-feature totals are summed from its
-- days at read time instead of being upserted per commit, and the hourly and daily keys lead with
-- (tenant, time) so that their primary keys also serve the series reads the secondary indexes served.
DROP TABLE "usage_period_features" CASCADE;--> statement-breakpoint
DROP INDEX "usage_daily_tenant_day_idx";--> statement-breakpoint
DROP INDEX "usage_hourly_tenant_hour_idx";--> statement-breakpoint
ALTER TABLE "usage_daily" DROP CONSTRAINT "usage_daily_tenant_feature_day_pk";--> statement-breakpoint
ALTER TABLE "usage_hourly" DROP CONSTRAINT "usage_hourly_tenant_feature_hour_pk";--> statement-breakpoint
ALTER TABLE "usage_daily" ADD CONSTRAINT "usage_daily_tenant_day_feature_pk" PRIMARY KEY("tenant","day","feature");--> statement-breakpoint
ALTER TABLE "usage_hourly" ADD CONSTRAINT "usage_hourly_tenant_hour_feature_pk" PRIMARY KEY("tenant","hour","feature");