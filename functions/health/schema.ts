import { z } from 'zod';

const check = z.object({ ok: z.boolean(), latencyMs: z.number(), error: z.string().optional() });

export const healthResponse = z.object({
  status: z.enum(['ok', 'degraded']),
  checks: z.object({
    postgres: check.extend({ kind: z.enum(['postgres', 'pglite']).meta({ description: 'pglite: the embedded database of npm start' }) }),
    queue: check.extend({ kind: z.enum(['valkey', 'in-process']).meta({ description: 'in-process: the embedded queue of npm start' }) }),
    valkey: check.optional().meta({ description: 'the queue check again, present only when the queue is Valkey' }),
  }),
});
export type HealthResponse = z.infer<typeof healthResponse>;
