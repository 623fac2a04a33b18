CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"tenant" text,
	"key_hash" text NOT NULL,
	"key_prefix" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "partition_checkpoints" (
	"partition" integer PRIMARY KEY NOT NULL,
	"last_id" text DEFAULT '0-0' NOT NULL,
	"owner" text,
	"fence" bigint DEFAULT 0 NOT NULL,
	"lease_until" timestamp with time zone,
	"applied_events" bigint DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tenants" (
	"name" text PRIMARY KEY NOT NULL,
	"monthly_quota" bigint NOT NULL,
	"time_zone" text DEFAULT 'UTC' NOT NULL,
	"slack_webhook_url" text,
	"thresholds" integer[] DEFAULT '{80,100}'::integer[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "usage_daily" (
	"tenant" text NOT NULL,
	"feature" text NOT NULL,
	"day" date NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"events" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_daily_tenant_feature_day_pk" PRIMARY KEY("tenant","feature","day")
);
--> statement-breakpoint
CREATE TABLE "usage_hourly" (
	"tenant" text NOT NULL,
	"feature" text NOT NULL,
	"hour" timestamp with time zone NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"events" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_hourly_tenant_feature_hour_pk" PRIMARY KEY("tenant","feature","hour")
);
--> statement-breakpoint
CREATE TABLE "usage_period_features" (
	"tenant" text NOT NULL,
	"period_start" date NOT NULL,
	"feature" text NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"events" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_period_features_tenant_period_start_feature_pk" PRIMARY KEY("tenant","period_start","feature")
);
--> statement-breakpoint
CREATE TABLE "usage_periods" (
	"tenant" text NOT NULL,
	"period_start" date NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"events" bigint DEFAULT 0 NOT NULL,
	"last_event_at" timestamp with time zone,
	CONSTRAINT "usage_periods_tenant_period_start_pk" PRIMARY KEY("tenant","period_start")
);
--> statement-breakpoint
CREATE UNIQUE INDEX "api_keys_key_hash_idx" ON "api_keys" USING btree ("key_hash");--> statement-breakpoint
CREATE INDEX "usage_daily_tenant_day_idx" ON "usage_daily" USING btree ("tenant","day");--> statement-breakpoint
CREATE INDEX "usage_hourly_tenant_hour_idx" ON "usage_hourly" USING btree ("tenant","hour");