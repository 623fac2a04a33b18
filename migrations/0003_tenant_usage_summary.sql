CREATE TABLE "tenant_usage_summary" (
	"tenant" text PRIMARY KEY NOT NULL,
	"monthly_quota" bigint NOT NULL,
	"time_zone" text NOT NULL,
	"period_start" date NOT NULL,
	"period_end" timestamp with time zone NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"last_event_at" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "tenant_usage_summary_tokens_idx" ON "tenant_usage_summary" USING btree ("tokens" DESC NULLS LAST,"tenant");--> statement-breakpoint
CREATE INDEX "tenant_usage_summary_percent_idx" ON "tenant_usage_summary" USING btree (("tokens"::numeric / nullif("monthly_quota", 0)) DESC NULLS LAST,"tenant");--> statement-breakpoint
CREATE INDEX "tenant_usage_summary_period_end_idx" ON "tenant_usage_summary" USING btree ("period_end");