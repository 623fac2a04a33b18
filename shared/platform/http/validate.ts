import type { z } from 'zod';
import { ApiError, zodDetails } from './errors.ts';

/** Parses a request part with its schema; a failure is a 400 naming each bad field. */
export function parseRequest<T extends z.ZodType>(schema: T, value: unknown, part: string): z.infer<T> {
  const parsed = schema.safeParse(value ?? {});
  if (parsed.success) return parsed.data;
  const details = zodDetails(parsed.error);
  throw new ApiError('invalid_request', `invalid ${part}: ${details.map((d) => `${d.field} ${d.message}`).join('; ')}`, details);
}
