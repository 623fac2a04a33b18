import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Queryable } from '../platform/db.ts';
import { ApiError } from '../platform/http/errors.ts';
import { type KeyStore, generateApiKey } from './auth.ts';
import { tenantName } from './events.ts';

export const createKeyBody = z.strictObject({
  name: z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters'),
  tenant: tenantName.nullable().optional(),
});

export const keyIdParams = z.object({ id: z.string().regex(/^key_[A-Za-z0-9_-]{1,64}$/, 'must be a key id such as key_…') });

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

interface KeyRow {
  id: string;
  name: string;
  tenant: string | null;
  key_prefix: string;
  created_at: Date;
  revoked_at: Date | null;
}

const toView = (row: KeyRow): ApiKeyView => ({
  id: row.id,
  name: row.name,
  tenant: row.tenant,
  prefix: row.key_prefix,
  createdAt: new Date(row.created_at).toISOString(),
  revokedAt: row.revoked_at ? new Date(row.revoked_at).toISOString() : null,
});

/** Creates a key; the secret is returned once and only its hash is stored. */
export async function createApiKey(deps: KeyAdminDeps, name: string, tenant: string | null): Promise<CreatedKeyResponse> {
  const id = `key_${randomBytes(9).toString('base64url')}`;
  const { key, hash, prefix } = generateApiKey();
  const [row] = await deps.db.query<KeyRow>(
    `INSERT INTO api_keys (id, name, tenant, key_hash, key_prefix) VALUES ($1, $2, $3, $4, $5)
     RETURNING id, name, tenant, key_prefix, created_at, revoked_at`,
    [id, name, tenant, hash, prefix],
  );
  deps.auth?.keys.add(hash, { id, tenant });
  return { id, name, tenant, key, createdAt: new Date(row!.created_at).toISOString() };
}

export async function listApiKeys(deps: KeyAdminDeps): Promise<ApiKeyView[]> {
  const rows = await deps.db.query<KeyRow>(
    'SELECT id, name, tenant, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at DESC, id',
  );
  return rows.map(toView);
}

/** Revokes a key; every instance stops accepting it on its next key refresh (within 2 s). */
export async function revokeApiKey(deps: KeyAdminDeps, id: string): Promise<ApiKeyView> {
  const [row] = await deps.db.query<KeyRow>(
    `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
     RETURNING id, name, tenant, key_prefix, created_at, revoked_at`,
    [id],
  );
  if (!row) throw new ApiError('not_found', `no API key "${id}"`);
  deps.auth?.keys.revoke(id);
  return toView(row);
}
