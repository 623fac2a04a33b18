/**
 * The local Swarm's entrypoint, standing in for Traefik (which has no Debian or npm package): one
 * HTTP server that routes each request by the very rules of the Traefik labels in stacks/app.yml
 * (scripts/lib/traefik.ts, Host rule included) to the Swarm service of that name.
 *
 * It stands where Traefik's websecure entrypoint stands, behind TLS: the X-Forwarded-Proto a client
 * (the TLS terminator in front) sends is kept; without one, the request is plain http.
 *
 *   DOMAIN (required)   the public host name the rules accept
 *   PORT (8080)         traffic; PING_PORT (8082) answers GET /ping, for the health check
 */
import { createServer } from 'node:http';
import { createRouterProxy } from './lib/router.ts';
import { CONTAINER_PORT, compileRouters, hostRule, routeRequest, stackRouters } from './lib/traefik.ts';

const domain = process.env.DOMAIN;
if (!domain) {
  process.stderr.write(`${JSON.stringify({ level: 'fatal', service: 'router', msg: 'DOMAIN: required' })}\n`);
  process.exit(78);
}
const port = Number(process.env.PORT ?? 8080);
const pingPort = Number(process.env.PING_PORT ?? 8082);

const routers = compileRouters(
  stackRouters().map((router) => ({ name: router.service as string, rule: hostRule(router.rule, domain), priority: router.priority })),
);

function log(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ level: 'info', time: new Date().toISOString(), service: 'router', ...fields })}\n`);
}

// The service name resolves to its virtual IP (or its tasks, dnsrr); Swarm balances over the healthy tasks.
const { server } = createRouterProxy({
  route: (request, path) => {
    const service = routeRequest(routers, { method: request.method ?? 'GET', path, host: request.headers.host });
    return service ? { name: service, host: service, port: CONTAINER_PORT } : undefined;
  },
  // Traefik's websecure entrypoint sits behind TLS: keep the scheme the terminator in front says.
  forwarded: (request) => ({
    for: [request.headers['x-forwarded-for'], request.socket.remoteAddress].filter(Boolean).join(', '),
    proto: request.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http',
  }),
});
const ping = createServer((request, response) => {
  response.writeHead(request.url === '/ping' ? 200 : 404, { 'content-type': 'text/plain' });
  response.end(request.url === '/ping' ? 'OK' : '');
});

function stop(signal: string): void {
  log({ msg: 'stopping', signal });
  ping.close();
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 10_000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

server.listen(port, '0.0.0.0', () => ping.listen(pingPort, '0.0.0.0', () => log({ msg: 'listening', port, pingPort, domain })));
