-- Counts tenants per shard in the transaction that creates or deletes them. Statement triggers add a
-- whole batch per shard at once, shards in ascending order, so two such transactions never wait on
-- each other in opposite orders.
CREATE FUNCTION flagmeter_count_tenants_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta record;
BEGIN
  FOR delta IN SELECT hashtext(name) & 15 AS shard, count(*) AS n FROM added GROUP BY 1 ORDER BY 1 LOOP
    UPDATE tenant_counts SET tenants = tenants + delta.n WHERE shard = delta.shard;
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER tenants_count_added AFTER INSERT ON tenants REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_count_tenants_added();
--> statement-breakpoint
CREATE FUNCTION flagmeter_count_tenants_removed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta record;
BEGIN
  FOR delta IN SELECT hashtext(name) & 15 AS shard, count(*) AS n FROM removed GROUP BY 1 ORDER BY 1 LOOP
    UPDATE tenant_counts SET tenants = tenants - delta.n WHERE shard = delta.shard;
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER tenants_count_removed AFTER DELETE ON tenants REFERENCING OLD TABLE AS removed
  FOR EACH STATEMENT EXECUTE FUNCTION flagmeter_count_tenants_removed();
--> statement-breakpoint
INSERT INTO tenant_counts (shard, tenants)
SELECT shard, (SELECT count(*) FROM tenants WHERE hashtext(name) & 15 = shard) FROM generate_series(0, 15) AS shard;
