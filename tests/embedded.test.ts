import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { healthResponse } from '../functions/health/schema.ts';
import { usageResponse } from '../functions/usage/schema.ts';
import { parseExact } from './helpers/json.ts';
import { type RunningProcess, startProcess, waitFor } from './helpers/processes.ts';

describe('npm start on embedded backends', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flagmeter-embedded-'));
  let server: RunningProcess | undefined;

  afterAll(async () => {
    await server?.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs with no service URLs, prints a working key and curl line, ingests and reads usage back', async () => {
    // A data folder others may read, as an older version left it: start tightens it.
    chmodSync(dataDir, 0o755);
    // No DATABASE_URL / VALKEY_URL: PGlite in a temp folder and the in-process queue.
    server = await startProcess(
      'scripts/start.ts',
      { DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
      {
        ready: (output) => output.includes('Try it:'),
      },
    );
    const output = server.output();
    // Nothing queried before the migrations finished (the key store used to: relation "api_keys" does not exist).
    expect(output).not.toMatch(/does not exist|not loaded yet/);
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(output).toContain('embedded PostgreSQL (PGlite)');
    expect(output).toContain('in-process');
    const apiKey = /API key \(kept in [^)]+\): (fm_\S+)/.exec(output)?.[1];
    expect(apiKey).toBeDefined();
    expect(output).toContain(`curl -s -X POST ${server.url}/api/events -H 'Authorization: Bearer ${apiKey}'`);

    const response = await fetch(`${server.url}/api/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify([
        { tenant: 'acme', feature: 'gpt-4o', tokens: 1200 },
        { tenant: 'acme', feature: 'embed', tokens: 34 },
      ]),
    });
    expect(response.status).toBe(202);
    const usage = await waitFor(
      async () => {
        const reply = await fetch(`${server!.url}/api/usage/acme`, { headers: { authorization: `Bearer ${apiKey}` } });
        if (reply.status !== 200) return undefined;
        const body = usageResponse.parse(parseExact(await reply.text()));
        return body.tokens === 1234n ? body : undefined;
      },
      { what: 'usage to read 1234' },
    );
    expect(usage.features).toEqual([
      { feature: 'gpt-4o', tokens: 1200n },
      { feature: 'embed', tokens: 34n },
    ]);
    const health = await fetch(`${server.url}/api/health`);
    expect(health.status).toBe(200);
    // The queue actually in use, not a Valkey that is not there.
    const { checks } = healthResponse.parse(await health.json());
    expect(checks.queue).toMatchObject({ ok: true, kind: 'in-process' });
    expect(checks.postgres).toMatchObject({ ok: true, kind: 'pglite' });
    expect(checks.valkey).toBeUndefined();
  });

  it('stops cleanly on SIGINT', async () => {
    expect(await server!.kill('SIGINT')).toBe(0);
  });
});
