import type { FastifyInstance } from 'fastify';
import { createApiKey, createKeyBody, keyIdParams, listApiKeys, revokeApiKey } from '../../shared/domain/keys.ts';
import { parseRequest } from '../../shared/platform/http/validate.ts';
import type { TenantsDeps } from './app.ts';

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
