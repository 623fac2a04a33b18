import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { generateApiKey } from '../../shared/auth.ts';
import { ApiError } from '../../shared/http/errors.ts';
import { parseRequest } from '../../shared/http/validate.ts';
import type { TenantsDeps } from './app.ts';
import { type ApiKeyView, type CreatedKeyResponse, createKeyBody, keyIdParams } from './schema.ts';

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

/**
 * Creates a key; the secret is returned once and only its hash is stored. Pass `generated` to make a
 * retry idempotent: the same secret inserted again (after an answer that was lost) finds its own row.
 */
export async function createApiKey(
  deps: TenantsDeps,
  name: string,
  tenant: string | null,
  generated: { key: string; hash: string; prefix: string } = generateApiKey(),
): Promise<CreatedKeyResponse> {
  const { key, hash, prefix } = generated;
  const [row] = await deps.db.query<KeyRow>(
    `INSERT INTO api_keys (id, name, tenant, key_hash, key_prefix) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (key_hash) DO UPDATE SET name = api_keys.name
     RETURNING id, name, tenant, key_prefix, created_at, revoked_at`,
    [`key_${randomBytes(9).toString('base64url')}`, name, tenant, hash, prefix],
  );
  deps.auth.keys.add(hash, { id: row!.id, tenant: row!.tenant });
  return { id: row!.id, name: row!.name, tenant: row!.tenant, key, createdAt: new Date(row!.created_at).toISOString() };
}

export async function listApiKeys(deps: TenantsDeps): Promise<ApiKeyView[]> {
  const rows = await deps.db.query<KeyRow>(
    'SELECT id, name, tenant, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at DESC, id',
  );
  return rows.map(toView);
}

/** Revokes a key; every instance stops accepting it on its next key refresh (within 2 s). */
export async function revokeApiKey(deps: TenantsDeps, id: string): Promise<ApiKeyView> {
  const [row] = await deps.db.query<KeyRow>(
    `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
     RETURNING id, name, tenant, key_prefix, created_at, revoked_at`,
    [id],
  );
  if (!row) throw new ApiError('not_found', `no API key "${id}"`);
  deps.auth.keys.revoke(id);
  return toView(row);
}

export function registerKeyRoutes(app: FastifyInstance, deps: TenantsDeps): void {
  const onRequest = deps.auth.requireAdmin;
  app.post('/api/keys', { onRequest }, async (request, reply) => {
    const body = parseRequest(createKeyBody, request.body, 'body');
    reply.code(201);
    return createApiKey(deps, body.name, body.tenant ?? null);
  });
  app.get('/api/keys', { onRequest }, async () => ({ keys: await listApiKeys(deps) }));
  app.delete('/api/keys/:id', { onRequest }, async (request) => {
    const { id } = parseRequest(keyIdParams, request.params, 'path');
    return revokeApiKey(deps, id);
  });
}
