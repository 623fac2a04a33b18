import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdRequest } from '../helpers/held-request.ts';
import { addTo, type Totals } from '../helpers/load.ts';
import { waitFor } from '../helpers/processes.ts';
import { servicesAvailable } from '../helpers/services.ts';
import { createFaultStack, createTenants, expectReconciled, type FaultStack, SteadyLoad } from './harness.ts';

/** An event POST to ingest whose body is held back until `finish`. */
const holdEvents = (url: string, apiKey: string, body: string) =>
  holdRequest(`${url}/api/events`, body, { headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' } });

describe.skipIf(!servicesAvailable)('fault: ingest sent SIGTERM under load', () => {
  let stack: FaultStack;

  beforeAll(async () => {
    stack = await createFaultStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('finishes the requests in flight, exits 0, and loses nothing it accepted', async () => {
    const [first, second] = [await stack.start('functions/ingest/server.ts'), await stack.start('functions/ingest/server.ts')];
    await stack.startAggregator('sigterm-agg');
    const tenants = await createTenants(stack.runtime, 'term', 8);
    let firstGone = false;
    void first.exited.then(() => (firstGone = true));
    const load = new SteadyLoad({
      apiKey: stack.apiKey,
      tenants,
      targets: () => (firstGone ? [second.url] : [first.url, second.url]),
      label: 'term',
    }).start();
    const held = Array.from({ length: 10 }, (_, r) =>
      Array.from({ length: 50 }, (_, i) => ({
        tenant: tenants[(r + i) % tenants.length]!,
        feature: 'held',
        tokens: 1 + r * 50 + i,
        id: `held-${r}-${i}`,
      })),
    );
    let exitCode: number | null;
    try {
      await waitFor(() => load.ackedBatches > 100, { what: 'load to be flowing' });
      const requests = held.map((batch) => holdEvents(first.url, stack.apiKey, JSON.stringify(batch)));
      await Promise.all(requests.map((r) => r.received));
      const signalledAt = Date.now();
      first.child.kill('SIGTERM');
      // The bodies arrive while the process drains: it must still read, enqueue and answer them.
      await sleep(300);
      const answers = await Promise.all(requests.map((r) => r.finish()));
      expect(answers.map((answer) => answer.status)).toEqual(held.map(() => 202));
      for (const batch of held) for (const event of batch) addTo(load.accepted, event.tenant, event.feature, event.tokens);
      exitCode = await first.exited;
      expect(Date.now() - signalledAt).toBeLessThan(15_000);
      // The load carried on against the other instance.
      const afterExit = Date.now();
      await waitFor(() => load.attempts.filter((a) => a.at > afterExit && a.status === 202).length > 50, {
        what: 'load on the remaining instance',
      });
    } finally {
      await load.stop();
    }
    expect(exitCode).toBe(0);
    // Load attempts on the draining instance were answered 202 or 503 (return503OnClosing), or refused once it stopped listening.
    expect(load.attempts.filter((a) => a.target === first.url).every((a) => [0, 202, 503].includes(a.status))).toBe(true);
    await expectReconciled(stack.runtime, tenants, load.accepted);
  }, 180_000);

  it('with SHUTDOWN_DELAY keeps answering new connections that long (a polling proxy still routes there), then drains and exits 0', async () => {
    const ingest = await stack.start('functions/ingest/server.ts', { SHUTDOWN_DELAY: '2s' });
    const [tenant] = await createTenants(stack.runtime, 'delay', 1);
    const accepted: Totals = new Map();
    const send = async (tokens: number) => {
      const event = { tenant: tenant!, feature: 'delay', tokens };
      const answer = await holdEvents(ingest.url, stack.apiKey, JSON.stringify(event)).finish();
      if (answer.status === 202) addTo(accepted, event.tenant, event.feature, event.tokens);
      return answer.status;
    };
    expect(await send(1)).toBe(202);
    const signalledAt = Date.now();
    ingest.child.kill('SIGTERM');
    // Each on a connection of its own, as a proxy opens them: refused or 503 without the delay.
    const statuses: number[] = [];
    while (Date.now() - signalledAt < 1_500) statuses.push(await send(10));
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((status) => status === 202)).toBe(true);
    expect(await ingest.exited).toBe(0);
    expect(Date.now() - signalledAt).toBeGreaterThanOrEqual(2_000);
    await stack.startAggregator('delay-agg');
    await expectReconciled(stack.runtime, [tenant!], accepted);
  }, 60_000);
});
