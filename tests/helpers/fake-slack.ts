import { createServer, type Server } from 'node:http';

export interface ReceivedPost {
  path: string;
  body: { text: string; blocks: { type: string; text?: { text: string }; fields?: { text: string }[]; elements?: { url: string }[] }[] };
  at: number;
}

export interface ScriptedResponse {
  status: number;
  headers?: Record<string, string>;
  delayMs?: number;
  /** The answer's body; by default `ok` for a 200 and `error` otherwise. */
  body?: string;
}

/** A real HTTP server standing in for Slack: records every POST and answers from a per-path script. */
export interface FakeSlack {
  url: string;
  /** Posts answered 200 (delivered). */
  posts: ReceivedPost[];
  /** Every request, whatever it was answered. */
  requests: { path: string; status: number; at: number }[];
  postsTo(path: string): ReceivedPost[];
  /** Answers for the next requests to `path`, in order; 200 once the script is used up. */
  script(path: string, responses: ScriptedResponse[]): void;
  close(): Promise<void>;
}

export async function startFakeSlack(): Promise<FakeSlack> {
  const posts: ReceivedPost[] = [];
  const requests: { path: string; status: number; at: number }[] = [];
  const scripts = new Map<string, ScriptedResponse[]>();
  const server: Server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString()));
    request.on('end', () => {
      const path = request.url ?? '/';
      // Slack's documented limit: a header block's text is at most 150 characters (else invalid_blocks).
      const blocks = (JSON.parse(text) as Partial<ReceivedPost['body']>).blocks ?? [];
      const refused = blocks.some((block) => block.type === 'header' && (block.text?.text.length ?? 0) > 150);
      const next = refused ? { status: 400, body: 'invalid_blocks' } : (scripts.get(path)?.shift() ?? { status: 200 });
      const answer = () => {
        requests.push({ path, status: next.status, at: Date.now() });
        if (next.status === 200) posts.push({ path, body: JSON.parse(text) as ReceivedPost['body'], at: Date.now() });
        response.writeHead(next.status, { 'content-type': 'text/plain', ...next.headers });
        response.end(next.body ?? (next.status === 200 ? 'ok' : 'error'));
      };
      if (next.delayMs) setTimeout(answer, next.delayMs);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    posts,
    requests,
    postsTo: (path) => posts.filter((post) => post.path === path),
    script: (path, responses) => scripts.set(path, [...responses]),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
