/**
 * The reverse proxy that stands in for Traefik locally (`npm run stack:local`, the local Swarm's
 * entrypoint): each request goes to the upstream its route picks; no route is a 404, an upstream
 * that is down or silent for 30 s is a 502 — never a hung request — in the API's error shape.
 */
import { Agent, createServer, type IncomingMessage, request as httpRequest, type Server, type ServerResponse } from 'node:http';

export interface Upstream {
  /** What the 502 names. */
  name: string;
  host: string;
  port: number;
}

export interface RouterProxyOptions {
  /** The upstream for a request (its path without the query), or undefined for a 404. */
  route(request: IncomingMessage, path: string): Upstream | undefined;
  /** The X-Forwarded-For and X-Forwarded-Proto the upstream gets. */
  forwarded(request: IncomingMessage): { for: string; proto: 'http' | 'https' };
}

const UPSTREAM_TIMEOUT_MS = 30_000;

function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  response.end(JSON.stringify({ error: { code, message } }));
}

export function createRouterProxy(options: RouterProxyOptions): { server: Server; agent: Agent } {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0]!;
    const target = options.route(request, path);
    if (!target) {
      sendError(response, 404, 'not_found', `no route for ${request.method} ${request.headers.host ?? ''}${path}`);
      return;
    }
    const forwarded = options.forwarded(request);
    const upstream = httpRequest(
      {
        host: target.host,
        port: target.port,
        method: request.method,
        path: request.url,
        agent,
        headers: {
          ...request.headers,
          'x-forwarded-for': forwarded.for,
          'x-forwarded-host': request.headers.host ?? '',
          'x-forwarded-proto': forwarded.proto,
        },
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.setTimeout(UPSTREAM_TIMEOUT_MS, () => upstream.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS / 1000} s`)));
    upstream.on('error', (error) => sendError(response, 502, 'bad_gateway', `${target.name} is unavailable: ${error.message}`));
    request.pipe(upstream);
  });
  server.keepAliveTimeout = 65_000;
  return { server, agent };
}
