import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { healthResponse } from '../functions/health/schema.ts';
import { usageResponse } from '../functions/usage/schema.ts';
import { parseExact } from './helpers/json.ts';
import { spawnNode } from '../scripts/lib/processes.ts';
import { freePort, ROOT, type RunningProcess, startProcess, waitFor } from './helpers/processes.ts';

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

  it('refuses a second npm start on the same data folder, naming DATA_DIR, and the first keeps serving', async () => {
    // Another port, so only the data folder is shared: PGlite has no lock, and two writers corrupt it.
    const second = spawnNode(['--import', 'tsx', join(ROOT, 'scripts/start.ts')], {
      env: { DATA_DIR: dataDir, LOG_LEVEL: 'warn', PORT: String(await freePort()), METRICS_PORT: String(await freePort()) },
    });
    expect(await second.exited).toBe(78);
    expect(second.output()).toContain(`DATA_DIR: ${dataDir} holds the embedded database of another npm start (pid ${server!.child.pid})`);
    expect((await fetch(`${server!.url}/api/health`)).status).toBe(200);
  });

  it('stops cleanly on SIGINT, and starts again after a crash left its lock and an empty admin token file', async () => {
    expect(await server!.kill('SIGINT')).toBe(0);
    // As a kill -9 and a full disk would leave them: a lock naming a process that is gone, a token cut to nothing.
    writeFileSync(join(dataDir, 'npm-start.pid'), '999999\n');
    writeFileSync(join(dataDir, 'admin-token'), '');
    server = await startProcess(
      'scripts/start.ts',
      { DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
      { ready: (output) => output.includes('Try it:') },
    );
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    expect(token).toMatch(/^fma_.{16,}/);
    expect(server.output()).toContain(`admin token (generated, kept in ${dataDir}/admin-token): ${token}`);
    expect(readFileSync(join(dataDir, 'npm-start.pid'), 'utf8').trim()).toBe(String(server.child.pid));
    const keys = await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${token}` } });
    expect(keys.status).toBe(200);
    expect(await server.kill('SIGINT')).toBe(0);
    expect(() => readFileSync(join(dataDir, 'npm-start.pid'))).toThrow(/ENOENT/);
  });
});
