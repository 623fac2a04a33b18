-- API keys page newest first by (created_at, id), a cursor at a time (GET /api/keys?before=).
CREATE INDEX "api_keys_created_at_idx" ON "api_keys" USING btree ("created_at","id");