import { type CreatedKeyResponse, createApiKey, createKeyBody, keyIdParams, revokeApiKey } from '../../../shared/domain/keys.ts';
import { ApiError, zodDetails } from '../../../shared/platform/http/errors.ts';
import type { SiteDeps } from './deps.ts';

export type KeyFormResult =
  | { kind: 'created'; key: CreatedKeyResponse }
  | { kind: 'revoked'; id: string }
  | { kind: 'invalid'; errors: Partial<Record<'name' | 'tenant' | 'form', string>>; values: { name: string; tenant: string } };

/** The keys page's two forms, through the same schemas and functions as POST/DELETE /api/keys. */
export async function applyKeyForm(deps: SiteDeps, form: FormData): Promise<KeyFormResult> {
  const values = { name: String(form.get('name') ?? '').trim(), tenant: String(form.get('tenant') ?? '').trim() };
  if (form.get('intent') === 'revoke') {
    const parsed = keyIdParams.safeParse({ id: form.get('id') });
    if (!parsed.success) return { kind: 'invalid', errors: { form: 'That is not a key id.' }, values };
    try {
      return { kind: 'revoked', id: (await revokeApiKey(deps, parsed.data.id)).id };
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return { kind: 'invalid', errors: { form: error.message }, values };
      throw error;
    }
  }
  const parsed = createKeyBody.safeParse({ name: values.name, tenant: values.tenant || null });
  if (!parsed.success) {
    const errors: Partial<Record<'name' | 'tenant' | 'form', string>> = {};
    for (const detail of zodDetails(parsed.error)) {
      const field = detail.field === 'name' || detail.field === 'tenant' ? detail.field : 'form';
      errors[field] ??= detail.message;
    }
    return { kind: 'invalid', errors, values };
  }
  return { kind: 'created', key: await createApiKey(deps, parsed.data.name, parsed.data.tenant ?? null) };
}
