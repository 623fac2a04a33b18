import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT } from './helpers/processes.ts';
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
});
