/**
 * A Slack incoming webhook standing in for hooks.slack.com, run as a container on the stack's network
 * by the swarm scenarios: answers every POST 200 and records it; GET /received lists what came.
 */
import { createServer } from 'node:http';

const received: { path: string; body: unknown; at: string }[] = [];

createServer((request, response) => {
  if (request.method === 'GET' && request.url === '/received') {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(received));
    return;
  }
  let text = '';
  request.on('data', (chunk: Buffer) => (text += chunk.toString()));
  request.on('end', () => {
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Slack accepts JSON only, but the stand-in records whatever arrived.
    }
    received.push({ path: request.url ?? '/', body, at: new Date().toISOString() });
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.end('ok');
  });
}).listen(8080, '0.0.0.0');
process.on('SIGTERM', () => process.exit(0));
