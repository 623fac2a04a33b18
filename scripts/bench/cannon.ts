/**
 * The load process of one throughput scenario: runs autocannon against 127.0.0.1 as described by the
 * JSON spec file given as its argument, and prints one JSON result line. It runs as its own process
 * so that the orchestrator's work (polling, bookkeeping) never shares a thread with the load.
 */
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { type LatencySummary, LatencyRecorder } from './latency.ts';

export interface CannonRequest {
  method: 'GET' | 'POST';
  path: string;
  body?: string;
}

export interface CannonSpec {
  url: string;
  connections: number;
  /** Seconds; ignored when `amount` is set. */
  durationS?: number;
  /** Total requests, then stop. */
  amount?: number;
  headers: Record<string, string>;
  /** Each connection walks this list in order, round and round. */
  requests: CannonRequest[];
}

export interface CannonResult {
  requests: number;
  durationS: number;
  requestsPerSecond: number;
  latencyMs: LatencySummary;
  statuses: Record<string, number>;
  /** 2xx answers per entry of `requests`: what the orchestrator turns into expected rollups. */
  okPerRequest: number[];
  errors: number;
  timeouts: number;
}

interface ConnectionClient {
  reqsMade: number;
  responseMax?: number;
}

export interface RunningCannon {
  instance: autocannon.Instance;
  done: Promise<autocannon.Result>;
  /** Sends no new request; resolves `done` once every request in flight has its answer. */
  stopGracefully(): void;
}

/**
 * autocannon's callback form, which hands back the instance (for its `response` events), plus a
 * graceful stop. autocannon's own `duration` drops the requests in flight when it ends: the server
 * may have accepted them while their answers go unread, and the bench could no longer say exactly
 * what was accepted. Capping every connection at the requests it has made lets those answers arrive.
 */
export function startAutocannon(options: autocannon.Options, stopAfterS?: number): RunningCannon {
  const clients: ConnectionClient[] = [];
  let instance: autocannon.Instance | undefined;
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(
      {
        ...options,
        // The graceful stop ends the run; autocannon's own deadline is only a backstop.
        ...(stopAfterS === undefined ? {} : { duration: stopAfterS + 60 }),
        setupClient: (client) => {
          clients.push(client as unknown as ConnectionClient);
          options.setupClient?.(client);
        },
      },
      (error, result) => (error ? reject(error as Error) : resolve(result)),
    );
  });
  const stopGracefully = () => {
    for (const client of clients) client.responseMax = Math.max(1, client.reqsMade);
  };
  if (stopAfterS !== undefined) {
    const timer = setTimeout(stopGracefully, stopAfterS * 1_000);
    void done.finally(() => clearTimeout(timer)).catch(() => undefined);
  }
  return { instance: instance!, done, stopGracefully };
}

export async function runCannon(spec: CannonSpec): Promise<CannonResult> {
  const okPerRequest = spec.requests.map(() => 0);
  const latency = new LatencyRecorder();
  const statuses: Record<string, number> = {};
  const started = performance.now();
  const stopAfterS = spec.amount === undefined ? (spec.durationS ?? 10) : undefined;
  let answeredInTime = 0;
  const { instance, done } = startAutocannon(
    {
      url: spec.url,
      connections: spec.connections,
      ...(spec.amount === undefined ? {} : { amount: spec.amount }),
      timeout: 10,
      headers: spec.headers,
      requests: spec.requests.map((request, index) => ({
        method: request.method,
        path: request.path,
        ...(request.body === undefined ? {} : { body: request.body }),
        onResponse: (status: number) => {
          if (status >= 200 && status < 300) okPerRequest[index]!++;
        },
      })),
    },
    stopAfterS,
  );
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    latency.record(responseTime);
    statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
    if (stopAfterS === undefined || performance.now() - started <= stopAfterS * 1_000) answeredInTime++;
  });
  const result = await done;
  // A timed run's rate counts the answers inside its window (the graceful stop's tail is excluded).
  const durationS = stopAfterS ?? (performance.now() - started) / 1_000;
  const requests = latency.count;
  return {
    requests,
    durationS,
    requestsPerSecond: answeredInTime / durationS,
    latencyMs: latency.summary(),
    statuses,
    okPerRequest,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

if (process.argv[1] === import.meta.filename) {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as CannonSpec;
  const result = await runCannon(spec);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
