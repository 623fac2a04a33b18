/**
 * `npm run bench:alerts`: time from the 202 of the event that crosses a threshold to the Slack POST
 * arriving, over many crossings, with ingest and the aggregator as their own processes against local
 * PostgreSQL and Valkey and a local Slack stand-in. Prints p50/p95/p99.
 */
import { parseArgs } from 'node:util';
import { createApiKey } from '../shared/domain/keys.ts';
import { loadConfig } from '../shared/platform/config.ts';
import { createRuntime } from '../shared/runtime/runtime.ts';
import { upsertTenant } from '../shared/domain/tenants.ts';
import { startFakeSlack } from '../tests/helpers/fake-slack.ts';
import { startProcess, waitFor } from '../tests/helpers/processes.ts';
import { functionEnv } from '../tests/helpers/runtime.ts';
import { createKeySpace, createTestDatabase } from '../tests/helpers/services.ts';

const { values } = parseArgs({ options: { crossings: { type: 'string', default: '200' }, rate: { type: 'string', default: '50' } } });
const crossings = Number(values.crossings);
const perSecond = Number(values.rate);

const slack = await startFakeSlack();
const database = await createTestDatabase();
const keySpace = createKeySpace();
const env = functionEnv(database.url, keySpace.prefix, {
  WEBHOOK_ALLOW_INSECURE: 'true',
  WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
  AGGREGATOR_LEASE: '10s',
  TELEMETRY_ENABLED: 'false',
});
const runtime = await createRuntime('alert-latency', { config: loadConfig(env) });
const processes = [
  await startProcess('functions/ingest/server.ts', env),
  await startProcess('functions/aggregator/main.ts', { ...env, LOG_LEVEL: 'info' }, { ready: (out) => out.includes('aggregator running') }),
];
try {
  const apiKey = (await createApiKey(runtime, 'latency', null)).key;
  const tenants = Array.from({ length: crossings }, (_, i) => `latency-${i}`);
  for (const tenant of tenants) {
    await upsertTenant(runtime.db, tenant, { monthlyQuota: 100n, thresholds: [80], slackWebhookUrl: `${slack.url}/hook/${tenant}` }, 100n);
  }
  const acceptedAt = new Map<string, number>();
  const ingestUrl = processes[0]!.url;
  const started = performance.now();
  for (const [i, tenant] of tenants.entries()) {
    // A steady pace: each crossing at its slot, not as fast as the loop can go.
    const due = i * (1000 / perSecond);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - (performance.now() - started))));
    const response = await fetch(`${ingestUrl}/api/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tenant, feature: 'gpt-4o', tokens: 90 }),
    });
    if (response.status !== 202) throw new Error(`ingest answered ${response.status}`);
    acceptedAt.set(`/hook/${tenant}`, Date.now());
  }
  await waitFor(() => slack.posts.length >= crossings, { timeoutMs: 60_000, what: 'every alert to arrive' });
  const latencies = slack.posts.map((post) => post.at - acceptedAt.get(post.path)!).sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  process.stdout.write(
    `${JSON.stringify({ crossings: latencies.length, perSecond, p50Ms: at(0.5), p95Ms: at(0.95), p99Ms: at(0.99), maxMs: latencies.at(-1) })}\n`,
  );
} finally {
  await Promise.all(processes.map((process) => process.kill('SIGKILL')));
  await runtime.close();
  await keySpace.clear();
  await database.drop();
  await slack.close();
}
