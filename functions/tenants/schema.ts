import { z } from 'zod';
import { tenantName } from '../../shared/events.ts';

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
