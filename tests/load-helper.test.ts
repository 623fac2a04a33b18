import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { sendBatches, type Totals } from './helpers/load.ts';

describe('the exactly-once load helper', () => {
  it('counts what the client sent, not what the server claims: a server calling every event a duplicate cannot shrink the expectation', async () => {
    // A lying ingest: 202 for every batch, and every event reported as a duplicate.
    const server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        const events = JSON.parse(body) as unknown[];
        response.writeHead(202, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ accepted: 0, duplicates: events.length, duplicateIndexes: events.map((_, index) => index) }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    try {
      const accepted: Totals = new Map();
      const event = (id: string, tokens: number) => ({ tenant: 't', feature: 'f', tokens, id });
      await sendBatches(url, 'key', [[event('a', 5), event('b', 7)], [{ tenant: 't', feature: 'g', tokens: 3 }]], accepted);
      // The same ids again: those are real duplicates, known to the client.
      await sendBatches(url, 'key', [[event('a', 5), event('c', 11)]], accepted);
      expect(accepted).toEqual(
        new Map([
          ['t\tf', 23n],
          ['t\tg', 3n],
        ]),
      );
    } finally {
      server.close();
    }
  });
});
