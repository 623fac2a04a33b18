/**
 * The yardstick: a bare Fastify POST handler returning {"ok":true}, with Fastify's defaults (JSON body
 * parsing, no logger). Ingest is measured as a share of its requests/s in the same run.
 */
import Fastify from 'fastify';

const app = Fastify();
app.post('/api/events', async () => ({ ok: true }));
await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
