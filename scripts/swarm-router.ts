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
import { Agent, createServer, type IncomingMessage, request as httpRequest, type ServerResponse } from 'node:http';
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
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

function log(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ level: 'info', time: new Date().toISOString(), service: 'router', ...fields })}\n`);
}

function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  response.end(JSON.stringify({ error: { code, message } }));
}

function proxy(request: IncomingMessage, response: ServerResponse): void {
  const path = (request.url ?? '/').split('?')[0]!;
  const target = routeRequest(routers, { method: request.method ?? 'GET', path, host: request.headers.host });
  if (!target) {
    sendError(response, 404, 'not_found', `no route for ${request.method} ${request.headers.host ?? ''}${path}`);
    return;
  }
  const forwardedFor = [request.headers['x-forwarded-for'], request.socket.remoteAddress].filter(Boolean).join(', ');
  const upstream = httpRequest(
    {
      // The service name resolves to its virtual IP; Swarm balances over the healthy tasks.
      host: target,
      port: CONTAINER_PORT,
      method: request.method,
      path: request.url,
      agent,
      headers: {
        ...request.headers,
        'x-forwarded-for': forwardedFor,
        'x-forwarded-host': request.headers.host ?? '',
        'x-forwarded-proto': request.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http',
      },
    },
    (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    },
  );
  // Like Traefik: a service with no reachable task is a 502, never a hung request.
  upstream.setTimeout(30_000, () => upstream.destroy(new Error('no answer within 30 s')));
  upstream.on('error', (error) => sendError(response, 502, 'bad_gateway', `${target} is unavailable: ${error.message}`));
  request.pipe(upstream);
}

const server = createServer(proxy);
server.keepAliveTimeout = 65_000;
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
