/**
 * The yardsticks: a bare Fastify with its defaults (JSON body parsing, no logger). POST /api/events
 * parses the body and answers {"ok":true} — single events and 100-event batches are measured against
 * it; GET /api/usage/:tenant answers a string made once — the usage read is measured against it.
 */
import Fastify from 'fastify';

const app = Fastify();
const cached = JSON.stringify({ tenant: 't0000', tokens: 0, quota: 1_000_000, percent: 0, features: [] });
app.post('/api/events', async () => ({ ok: true }));
app.get('/api/usage/:tenant', async (_request, reply) => reply.type('application/json').send(cached));
await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
