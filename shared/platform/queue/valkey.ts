import { Redis as Valkey, type RedisOptions } from 'iovalkey';
import type { Logger } from '../logger.ts';
import {
  type EnqueueResult,
  type EventQueue,
  type PartitionEntries,
  type PartitionPosition,
  type QueuedEvent,
  QueueFullError,
  QueueUnavailableError,
  decodeEvents,
  partitionOf,
} from './types.ts';

/**
 * Dedupe and append in one atomic step. KEYS: every partition's backlog counter, then the streams
 * this request touches, then its dedupe keys. ARGV: window, cap, #partitions, #streams, receivedAt,
 * #events, the touched partition numbers, then per event: stream slot, dedupe key index (0 = none), line.
 */
const ENQUEUE_SCRIPT = `
local n = tonumber(ARGV[3])
local p = tonumber(ARGV[4])
local backlog = 0
local counts = redis.call('MGET', unpack(KEYS, 1, n))
for i = 1, n do backlog = backlog + (tonumber(counts[i]) or 0) end
if backlog >= tonumber(ARGV[2]) then return {-1, ''} end
local window = ARGV[1]
local eventCount = tonumber(ARGV[6])
local lists = {}
for j = 1, p do lists[j] = {} end
local flags = {}
local accepted = 0
local base = 6 + p
for i = 0, eventCount - 1 do
  local slot = tonumber(ARGV[base + i * 3 + 1])
  local dedupeKey = tonumber(ARGV[base + i * 3 + 2])
  local fresh = true
  if dedupeKey > 0 then fresh = redis.call('SET', KEYS[dedupeKey], '1', 'NX', 'PX', window) end
  if fresh then
    local list = lists[slot]
    list[#list + 1] = ARGV[base + i * 3 + 3]
    flags[i + 1] = '0'
    accepted = accepted + 1
  else
    flags[i + 1] = '1'
  end
end
for j = 1, p do
  local list = lists[j]
  if #list > 0 then
    local partition = tonumber(ARGV[6 + j])
    redis.call('XADD', KEYS[n + j], '*', 'e', table.concat(list, '\\n'), 'n', #list, 'r', ARGV[5])
    redis.call('INCRBY', KEYS[partition + 1], #list)
  end
end
return {accepted, table.concat(flags)}
`;

/** Drops a partition's entries up to and including ARGV[1] and takes their events off its backlog counter. */
const TRIM_SCRIPT = `
local entries = redis.call('XRANGE', KEYS[1], '-', ARGV[1])
if #entries == 0 then return 0 end
local sum = 0
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for k = 1, #fields, 2 do
    if fields[k] == 'n' then sum = sum + tonumber(fields[k + 1]) end
  end
end
local last = entries[#entries][1]
redis.call('XTRIM', KEYS[1], 'MINID', last)
redis.call('XDEL', KEYS[1], last)
if redis.call('DECRBY', KEYS[2], sum) < 0 then redis.call('SET', KEYS[2], 0) end
return sum
`;

/** Upper bound of events one combined script call carries (a request's batch is never split). */
const MAX_EVENTS_PER_CALL = 2_000;

interface PendingEnqueue {
  events: readonly QueuedEvent[];
  receivedAt: number;
  resolve: (result: EnqueueResult) => void;
  reject: (error: Error) => void;
}

type ScriptClient = Valkey & {
  fmEnqueue(numKeys: number, ...args: (string | number)[]): Promise<[number, string]>;
  fmTrim(stream: string, backlog: string, lastId: string): Promise<number>;
};

export interface ValkeyQueueOptions {
  url: string;
  prefix: string;
  partitions: number;
  dedupeWindowMs: number;
  maxBacklog: number;
  commandTimeoutMs: number;
  logger: Logger;
}

function createClient(url: string, logger: Logger, options: RedisOptions): ScriptClient {
  const client = new Valkey(url.replace(/^valkey(s?):/, 'redis$1:'), {
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
    ...options,
  }) as ScriptClient;
  let lastWarning = 0;
  client.on('error', (error: Error) => {
    if (Date.now() - lastWarning > 5_000) {
      lastWarning = Date.now();
      logger.warn({ err: error.message }, 'valkey connection error');
    }
  });
  client.defineCommand('fmEnqueue', { lua: ENQUEUE_SCRIPT });
  client.defineCommand('fmTrim', { lua: TRIM_SCRIPT, numberOfKeys: 2 });
  return client;
}

/** The production queue: one Valkey stream per partition, tenants spread by hash. */
export class ValkeyQueue implements EventQueue {
  readonly kind = 'valkey' as const;
  readonly partitions: number;
  private readonly client: ScriptClient;
  private readonly readers: ScriptClient[] = [];
  private readonly backlogKeys: string[];
  private readonly streamKeys: string[];
  private pending: PendingEnqueue[] = [];
  private pendingEvents = 0;
  private flushScheduled = false;

  constructor(private readonly options: ValkeyQueueOptions) {
    this.partitions = options.partitions;
    this.backlogKeys = Array.from({ length: options.partitions }, (_, p) => `${options.prefix}:b:${p}`);
    this.streamKeys = Array.from({ length: options.partitions }, (_, p) => `${options.prefix}:s:${p}`);
    // No offline queue: while Valkey is away, ingest fails fast with 503 instead of piling up requests.
    this.client = createClient(options.url, options.logger, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: 2_000,
    });
  }

  streamKey(partition: number): string {
    return this.streamKeys[partition]!;
  }

  /**
   * Requests that arrive in the same event-loop turn share one script call: one write and one round
   * trip to Valkey instead of one per request. The script is atomic, so each request's events are
   * still all appended or none is, and duplicates are judged in arrival order as before.
   */
  enqueue(events: readonly QueuedEvent[], receivedAt: number): Promise<EnqueueResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ events, receivedAt, resolve, reject });
      this.pendingEvents += events.length;
      if (this.pendingEvents >= MAX_EVENTS_PER_CALL) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const requests = this.pending;
    if (requests.length === 0) return;
    this.pending = [];
    this.pendingEvents = 0;
    const events = requests.length === 1 ? requests[0]!.events : requests.flatMap((request) => request.events);
    const receivedAt = requests.reduce((earliest, request) => Math.min(earliest, request.receivedAt), Number.POSITIVE_INFINITY);
    this.enqueueNow(events, receivedAt).then(
      (flags) => {
        let offset = 0;
        for (const request of requests) {
          const count = request.events.length;
          const duplicateFlags = new Array<boolean>(count);
          let duplicates = 0;
          for (let i = 0; i < count; i++) {
            const duplicate = flags.charCodeAt(offset + i) === 49;
            duplicateFlags[i] = duplicate;
            if (duplicate) duplicates++;
          }
          offset += count;
          request.resolve({ accepted: count - duplicates, duplicates, duplicateFlags });
        }
      },
      (error: Error) => {
        for (const request of requests) request.reject(error);
      },
    );
  }

  /** One script call; resolves to a '0'/'1' duplicate flag per event. */
  private async enqueueNow(events: readonly QueuedEvent[], receivedAt: number): Promise<string> {
    const slots = new Map<number, number>();
    const eventArgs: (string | number)[] = [];
    const dedupeKeys: string[] = [];
    const keyBase = this.partitions + 1;
    for (const event of events) {
      const partition = partitionOf(event.tenant, this.partitions);
      let slot = slots.get(partition);
      if (slot === undefined) {
        slot = slots.size + 1;
        slots.set(partition, slot);
      }
      let dedupeIndex = 0;
      if (event.id !== undefined) {
        dedupeKeys.push(`${this.options.prefix}:d:${event.tenant.length}:${event.tenant}:${event.id}`);
        dedupeIndex = dedupeKeys.length; // offset fixed up below, once the stream key count is known
      }
      eventArgs.push(slot, dedupeIndex, `${event.tenant}\t${event.feature}\t${event.tokens}\t${event.timestamp}`);
    }
    const touched = [...slots.keys()];
    const dedupeOffset = keyBase - 1 + touched.length;
    for (let i = 1; i < eventArgs.length; i += 3) {
      if (eventArgs[i] !== 0) eventArgs[i] = (eventArgs[i] as number) + dedupeOffset;
    }
    const keys = [...this.backlogKeys, ...touched.map((p) => this.streamKeys[p]!), ...dedupeKeys];
    let reply: [number, string];
    try {
      reply = await this.client.fmEnqueue(
        keys.length,
        ...keys,
        this.options.dedupeWindowMs,
        this.options.maxBacklog,
        this.partitions,
        touched.length,
        receivedAt,
        events.length,
        ...touched,
        ...eventArgs,
      );
    } catch (error) {
      throw new QueueUnavailableError((error as Error).message);
    }
    if (reply[0] === -1) throw new QueueFullError('queue backlog is over its cap');
    return reply[1];
  }

  async read(positions: readonly PartitionPosition[], count: number, blockMs: number, lane = 0): Promise<PartitionEntries[]> {
    if (positions.length === 0) return [];
    // A blocking read holds its connection, so each lane has its own.
    const reader = (this.readers[lane] ??= createClient(this.options.url, this.options.logger, { connectTimeout: 2_000 }));
    const keys = positions.map((position) => this.streamKeys[position.partition]!);
    const reply = (await reader.xread(
      'COUNT',
      count,
      'BLOCK',
      blockMs,
      'STREAMS',
      ...keys,
      ...positions.map((position) => position.afterId),
    )) as [string, [string, string[]][]][] | null;
    if (!reply) return [];
    const byKey = new Map(positions.map((position, i) => [keys[i]!, position.partition]));
    return reply.map(([key, rawEntries]) => ({
      partition: byKey.get(key)!,
      entries: rawEntries.map(([id, fields]) => {
        let text = '';
        let receivedAt = 0;
        for (let k = 0; k < fields.length; k += 2) {
          if (fields[k] === 'e') text = fields[k + 1]!;
          else if (fields[k] === 'r') receivedAt = Number(fields[k + 1]);
        }
        return { id, events: decodeEvents(text), receivedAt };
      }),
    }));
  }

  async trim(partition: number, lastAppliedId: string): Promise<void> {
    await this.client.fmTrim(this.streamKeys[partition]!, this.backlogKeys[partition]!, lastAppliedId);
  }

  async backlog(): Promise<number[]> {
    const counts = await this.client.mget(...this.backlogKeys);
    return counts.map((count) => Number(count ?? 0));
  }

  async ping(): Promise<number> {
    const started = performance.now();
    await this.client.ping();
    return performance.now() - started;
  }

  async close(): Promise<void> {
    this.client.disconnect();
    for (const reader of this.readers) reader.disconnect();
  }
}
