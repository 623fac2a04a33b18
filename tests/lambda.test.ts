import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT } from './helpers/processes.ts';
import { createApiKey } from '../shared/domain/keys.ts';
import { createKeySpace, createTestDatabase, servicesAvailable, type TestDatabase, VALKEY_URL } from './helpers/services.ts';

const run = promisify(execFile);

/**
 * A Lambda cold start: a fresh Node process imports the handler module (the init phase) and is
 * invoked once at once, with an API Gateway v2 event, as AWS does with the first request.
 */
async function coldInvoke(
  fn: string,
  method: string,
  path: string,
  env: Record<string, string>,
  body?: unknown,
): Promise<{ statusCode: number; body: string }> {
  const event = {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: '',
    headers: { host: 'lambda.example.com', 'content-type': 'application/json', authorization: `Bearer ${env.ADMIN_TOKEN}` },
    requestContext: {
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '192.0.2.1', userAgent: 'test' },
      requestId: 'cold',
      stage: '$default',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    isBase64Encoded: false,
  };
  const script = `
    const { handler } = await import('./functions/${fn}/handler.ts');
    const answer = await handler(${JSON.stringify(event)}, { functionName: '${fn}', awsRequestId: 'cold' });
    process.stdout.write(JSON.stringify({ statusCode: answer.statusCode, body: answer.body }));
    process.exit(0);
  `;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', TELEMETRY_ENABLED: 'false', ...env },
    timeout: 60_000,
  });
  return JSON.parse(stdout) as { statusCode: number; body: string };
}

describe.skipIf(!servicesAvailable)('AWS Lambda handlers, cold start', () => {
  const keySpace = createKeySpace();
  let database: TestDatabase;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    env = { DATABASE_URL: database.url, VALKEY_URL, VALKEY_PREFIX: keySpace.prefix, ADMIN_TOKEN: 'lambda-admin-token-0123456789' };
  });

  afterAll(async () => {
    await database?.drop();
    await keySpace.clear();
  });

  test('the health handler answers its first invocation 200, Valkey connected during init', async () => {
    const answer = await coldInvoke('health', 'GET', '/api/health', env);
    expect(answer.statusCode, answer.body).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ status: 'ok', checks: { valkey: { ok: true }, postgres: { ok: true } } });
  }, 60_000);

  test('the ingest handler accepts the first event after a cold start', async () => {
    const answer = await coldInvoke('ingest', 'POST', '/api/events', env, { tenant: 'lambda-cold', feature: 'gpt-4o', tokens: 3 });
    expect(answer.statusCode, answer.body).toBe(202);
  }, 60_000);
  test('a warm instance thawed after a pause loads the API keys before it authenticates: a key revoked meanwhile is refused', async () => {
    const { id, key } = await createApiKey({ db: database.db }, 'lambda warm', null);
    const event = (path: string) => ({
      version: '2.0',
      routeKey: '$default',
      rawPath: path,
      rawQueryString: '',
      headers: { host: 'lambda.example.com', 'content-type': 'application/json', authorization: `Bearer ${key}` },
      requestContext: {
        http: { method: 'POST', path, protocol: 'HTTP/1.1', sourceIp: '192.0.2.1', userAgent: 'test' },
        requestId: 'warm',
        stage: '$default',
      },
      body: JSON.stringify({ tenant: 'lambda-warm', feature: 'gpt-4o', tokens: 1 }),
      isBase64Encoded: false,
    });
    // Invoked, then frozen for a minute (the clock moves on, no timer runs) while the key is revoked
    // elsewhere, then invoked again.
    const script = `
      const { handler } = await import('./functions/ingest/handler.ts');
      const postgres = (await import('postgres')).default;
      const first = await handler(${JSON.stringify(event('/api/events'))}, { awsRequestId: 'first' });
      const sql = postgres(process.env.DATABASE_URL, { max: 1 });
      await sql\`UPDATE api_keys SET revoked_at = now() WHERE id = \${${JSON.stringify(id)}}\`;
      await sql.end();
      const now = Date.now;
      Date.now = () => now() + 60_000;
      const second = await handler(${JSON.stringify(event('/api/events'))}, { awsRequestId: 'second' });
      process.stdout.write(JSON.stringify([first.statusCode, second.statusCode]));
      process.exit(0);
    `;
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', TELEMETRY_ENABLED: 'false', ...env },
      timeout: 60_000,
    });
    // Before, the thawed instance still held the key it loaded before the pause: 202.
    expect(JSON.parse(stdout)).toEqual([202, 401]);
  }, 60_000);
});
