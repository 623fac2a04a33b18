CREATE TABLE "aggregator_members" (
	"owner" text PRIMARY KEY NOT NULL,
	"seen_at" timestamp with time zone DEFAULT now() NOT NULL
);
