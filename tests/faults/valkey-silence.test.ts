import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOCKET_TIMEOUT_MS, ValkeyQueue } from '../../shared/platform/queue/valkey.ts';
import { waitFor } from '../helpers/processes.ts';
import { type CuttableProxy, startProxy } from '../helpers/proxy.ts';
import { createKeySpace, servicesAvailable, VALKEY_URL } from '../helpers/services.ts';

/**
 * Valkey's connection goes silent (a lost route, a host gone without a reset): no error, no close,
 * just nothing. The queue must notice and connect again, not wait for the kernel's own give-up.
 */
describe.skipIf(!servicesAvailable)('fault: the Valkey connection goes silent', () => {
  const keySpace = createKeySpace();
  let proxy: CuttableProxy;
  let through: ValkeyQueue;
  let direct: ValkeyQueue;
  const open = (url: string) =>
    new ValkeyQueue({
      url,
      prefix: keySpace.prefix,
      partitions: 1,
      dedupeWindowMs: 60_000,
      maxBacklog: 1_000_000,
      commandTimeoutMs: 800,
      logger: pino({ level: 'silent' }),
    });
  const event = (tokens: number) => [{ tenant: 'silent', feature: 'f', tokens, timestamp: Date.now() }];

  beforeAll(async () => {
    const target = new URL(VALKEY_URL);
    proxy = await startProxy(target.hostname, Number(target.port || 6379));
    const proxied = new URL(VALKEY_URL);
    proxied.port = String(proxy.port);
    through = open(proxied.toString());
    direct = open(VALKEY_URL);
    for (const [queue, what] of [
      [through, 'the proxied connection'],
      [direct, 'the direct connection'],
    ] as const) {
      await waitFor(
        () =>
          queue.ping().then(
            () => true,
            () => false,
          ),
        { what },
      );
    }
  });
  afterAll(async () => {
    await through?.close();
    await direct?.close();
    await proxy?.close();
    await keySpace.clear();
  });

  it('drops a connection that went silent and reads and writes on a new one', async () => {
    await direct.enqueue(event(1), Date.now());
    const [first] = (await through.read([{ partition: 0, afterId: '0-0' }], 10, 250))[0]!.entries;
    expect(first?.events[0]?.tokens).toBe(1);
    proxy.silence();
    await direct.enqueue(event(2), Date.now());
    const started = Date.now();
    // Before, the blocked read and every later command on these connections waited for ever.
    const entries = await waitFor(
      async () => {
        const read = await through.read([{ partition: 0, afterId: first!.id }], 10, 250).catch(() => undefined);
        return read?.[0]?.entries.length ? read[0].entries : undefined;
      },
      { timeoutMs: 3 * SOCKET_TIMEOUT_MS, what: 'a read on a new connection' },
    );
    expect(entries.map((entry) => entry.events[0]!.tokens)).toEqual([2]);
    await waitFor(
      () =>
        through.enqueue(event(3), Date.now()).then(
          () => true,
          () => false,
        ),
      {
        timeoutMs: 3 * SOCKET_TIMEOUT_MS,
        what: 'an enqueue on a new connection',
      },
    );
    console.info(`silent Valkey connection replaced after ${Date.now() - started} ms`);
  }, 90_000);
});
