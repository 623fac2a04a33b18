import { type Agent, request as httpRequest } from 'node:http';

export interface HeldRequest {
  /** Resolves once the server has the request's headers (it answered 100 Continue). */
  received: Promise<void>;
  /** Sends the body; resolves with the status and body of the answer. */
  finish(): Promise<{ status: number; body: string }>;
}

/** A POST to `url` whose body is held back until `finish`: a request the server is in the middle of. */
export function holdRequest(
  url: string,
  body: string,
  { headers = {}, agent = false }: { headers?: Record<string, string>; agent?: Agent | false } = {},
): HeldRequest {
  const request = httpRequest(url, {
    method: 'POST',
    agent,
    headers: { ...headers, 'content-length': Buffer.byteLength(body), expect: '100-continue' },
  });
  const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
    request.on('response', (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
    });
    request.on('error', reject);
  });
  const received = new Promise<void>((resolve) => request.once('continue', () => resolve()));
  request.flushHeaders();
  return {
    received,
    finish() {
      request.end(body);
      return answered;
    },
  };
}
