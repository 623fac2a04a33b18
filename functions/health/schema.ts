import { z } from 'zod';

const check = z.object({ ok: z.boolean(), latencyMs: z.number(), error: z.string().optional() });

export const healthResponse = z.object({
  status: z.enum(['ok', 'degraded']),
  checks: z.object({ postgres: check, valkey: check }),
});
export type HealthResponse = z.infer<typeof healthResponse>;
