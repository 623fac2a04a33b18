import { randomBytes } from 'node:crypto';
import { desc, eq, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Queryable } from '../platform/db.ts';
import { ApiError } from '../platform/http/errors.ts';
import { orm } from '../platform/orm.ts';
import { apiKeys } from '../schema.ts';
import { type KeyStore, generateApiKey } from './auth.ts';
import { postgresText, tenantName } from './events.ts';

export const createKeyBody = z.strictObject({
  name: postgresText(z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters')),
  tenant: tenantName.nullable().optional(),
});

export const keyId = z.string().regex(/^key_[A-Za-z0-9_-]{1,64}$/, 'must be a key id such as key_…');

export const keyIdParams = z.object({ id: keyId });

export const apiKeyView = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string().nullable(),
  prefix: z.string(),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});
export type ApiKeyView = z.infer<typeof apiKeyView>;

export const createdKeyResponse = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string().nullable(),
  key: z.string().meta({ description: 'the secret; shown only in this response' }),
  createdAt: z.string(),
});
export type CreatedKeyResponse = z.infer<typeof createdKeyResponse>;

/**
 * What key administration needs: the database, and this process's key store when it authenticates
 * requests itself (so a new key works, and a revoked one stops, here at once; elsewhere on refresh).
 */
export interface KeyAdminDeps {
  db: Queryable;
  auth?: { keys: Pick<KeyStore, 'add' | 'revoke'> };
}

type ApiKeyRow = typeof apiKeys.$inferSelect;

const toView = (row: ApiKeyRow): ApiKeyView => ({
  id: row.id,
  name: row.name,
  tenant: row.tenant,
  prefix: row.keyPrefix,
  createdAt: row.createdAt.toISOString(),
  revokedAt: row.revokedAt?.toISOString() ?? null,
});

/**
 * Creates a key; the secret is returned once and only its hash is stored. Pass `generated` to make a
 * retry idempotent: the same secret inserted again (after an answer that was lost) finds its own row.
 */
export async function createApiKey(
  deps: KeyAdminDeps,
  name: string,
  tenant: string | null,
  generated: { key: string; hash: string; prefix: string } = generateApiKey(),
): Promise<CreatedKeyResponse> {
  const { key, hash, prefix } = generated;
  const [row] = await orm(deps.db)
    .insert(apiKeys)
    .values({ id: `key_${randomBytes(9).toString('base64url')}`, name, tenant, keyHash: hash, keyPrefix: prefix })
    .onConflictDoUpdate({ target: apiKeys.keyHash, set: { name: sql`${apiKeys.name}` } })
    .returning();
  deps.auth?.keys.add(hash, { id: row!.id, tenant: row!.tenant });
  return { id: row!.id, name: row!.name, tenant: row!.tenant, key, createdAt: row!.createdAt.toISOString() };
}

/**
 * Keys newest first, `limit` at a time; `before` (a key id: the previous page's `next`) starts after
 * that key. The order is (creation time, id) and the cursor a key, so keys created meanwhile never
 * shift a page, and a page deep down costs what the first does.
 */
export async function listApiKeys(
  deps: KeyAdminDeps,
  query: { limit?: number; before?: string } = {},
): Promise<{ keys: ApiKeyView[]; next: string | null }> {
  const limit = query.limit ?? 100;
  if (query.before !== undefined) {
    const [known] = await orm(deps.db).select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.id, query.before));
    if (!known)
      throw new ApiError('invalid_request', 'before is not a key', [
        { field: 'before', message: "must be the id of a key (the previous page's next)" },
      ]);
  }
  const rows = await orm(deps.db)
    .select()
    .from(apiKeys)
    .where(
      query.before === undefined
        ? undefined
        : sql`(${apiKeys.createdAt}, ${apiKeys.id}) < (SELECT k.created_at, k.id FROM api_keys k WHERE k.id = ${query.before})`,
    )
    .orderBy(desc(apiKeys.createdAt), desc(apiKeys.id))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  return { keys: page.map(toView), next: rows.length > limit ? page.at(-1)!.id : null };
}

/** Revokes a key; every instance stops accepting it on its next key refresh (within 2 s). */
export async function revokeApiKey(deps: KeyAdminDeps, id: string): Promise<ApiKeyView> {
  const [row] = await orm(deps.db)
    .update(apiKeys)
    .set({ revokedAt: sql`coalesce(${apiKeys.revokedAt}, now())` })
    .where(eq(apiKeys.id, id))
    .returning();
  if (!row) throw new ApiError('not_found', `no API key "${id}"`);
  deps.auth?.keys.revoke(id);
  return toView(row);
}
