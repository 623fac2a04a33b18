CREATE TABLE "tenant_counts" (
	"shard" smallint PRIMARY KEY NOT NULL,
	"tenants" bigint DEFAULT 0 NOT NULL
);
