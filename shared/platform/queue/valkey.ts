import { hash } from 'node:crypto';
import { Redis as Valkey, type RedisOptions } from 'iovalkey';
import type { Logger } from '../logger.ts';
import {
  type EnqueueResult,
  type EventQueue,
  type PartitionEntries,
  type PartitionPosition,
  type QueuedEvent,
  QueueFullError,
  type StreamHead,
  type StreamPosition,
  QueueUnavailableError,
  decodeEvents,
  partitionOf,
} from './types.ts';

/**
 * Idempotency keys are remembered as 64-bit digests in sets that expire whole, not as one key per
 * event: a top-level key costs ~165 bytes, a member of a small set (Valkey's intset encoding, up to
 * 512 integers) 8 bytes plus its share of the set's own key.
 *
 * Time is cut into buckets of half the window (by the server's clock, one clock for every ingest
 * instance). Bucket b's sets expire at (b + 1) × span + window, so an id is remembered for at least the
 * window and at most 1.5 windows, and a lookup checks buckets b - 2 … b. Inside a bucket, a digest
 * lands in set `address mod shards`, where `shards` is sized from the previous bucket's count so that
 * sets hold about 128-256 members; when a bucket outgrows that (traffic rises, or a cold start), a
 * new generation with 16 times the shards takes the new members and the older generations are still
 * checked. Each set therefore stays far below 512 members and keeps the compact encoding.
 *
 * The digest is the first 64 bits of SHA-256(tenant \n id) stored as the member, and the next 32 bits
 * choose the set. A novel event is taken for a duplicate only if its 64-bit member equals one of the
 * ≤ 512 members of each set it is checked against: ≤ 512 × (checked sets) / 2^64, about 10^-16 per
 * event — at 20,000 events/s, one wrongly dropped event in more than a thousand years.
 */
const DEDUPE_SCRIPT = `
local function dedupeBuckets(base, window)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local span = math.ceil(window / 2)
  local current = math.floor(now / span)
  local buckets = {}
  for k = current - 2, current do
    local meta = base .. k
    local fields = redis.call('HMGET', meta, 'n', 's')
    local shards = {}
    if fields[2] then for s in string.gmatch(fields[2], '%d+') do shards[#shards + 1] = tonumber(s) end end
    buckets[#buckets + 1] = {meta = meta, key = meta .. ':', n = tonumber(fields[1]) or 0, shards = shards, expireAt = (k + 1) * span + window}
  end
  local bucket = buckets[3]
  local shards = bucket.shards
  if #shards == 0 then
    -- A new bucket: enough sets for the previous bucket's count at ~256 members each.
    local size = 64
    while size * 256 < buckets[2].n and size < 1073741824 do size = size * 2 end
    shards[1] = size
    redis.call('HSET', bucket.meta, 's', size, 'n', 0)
    redis.call('PEXPIREAT', bucket.meta, bucket.expireAt)
  elseif bucket.n >= 256 * shards[#shards] and shards[#shards] < 1073741824 then
    shards[#shards + 1] = shards[#shards] * 16
    redis.call('HSET', bucket.meta, 's', table.concat(shards, ','))
  end
  return buckets
end

-- True when (member, address) is new: checked against every set it could be in, added to the newest.
local function remember(buckets, member, address)
  for b = 1, 3 do
    local bucket = buckets[b]
    local last = #bucket.shards
    if b == 3 then last = last - 1 end
    for g = 1, last do
      local size = bucket.shards[g]
      if redis.call('SISMEMBER', bucket.key .. g .. ':' .. (address % size), member) == 1 then return false end
    end
  end
  local bucket = buckets[3]
  local g = #bucket.shards
  local key = bucket.key .. g .. ':' .. (address % bucket.shards[g])
  if redis.call('SADD', key, member) == 0 then return false end
  redis.call('PEXPIREAT', key, bucket.expireAt)
  return true
end
`;

/** Naming a stream's epoch (its key lost, or a stream written before epochs): ENQUEUE and HEADS. */
const EPOCH_FUNCTIONS = `
local function stamp()
  local t = redis.call('TIME')
  return t[1] .. '.' .. t[2]
end

local function newestEpoch(stream)
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not newest then return nil end
  local fields = newest[2]
  for k = 1, #fields, 2 do
    if fields[k] == 'g' then return fields[k + 1] end
  end
  return nil
end

-- An existing stream without an epoch key: its newest entry names it, or it gets a new name for the
-- same id space (c…).
local function nameStream(stream, key)
  local epoch = newestEpoch(stream) or ('c' .. stamp())
  redis.call('SET', key, epoch)
  return epoch
end
`;

/**
 * Dedupe and append in one atomic step. KEYS: every partition's backlog counter, then the streams this
 * call touches, then those streams' epoch keys. ARGV: dedupe key base, window, cap, #partitions, #streams, receivedAt, the touched
 * partition numbers, per touched stream its id-less events (lines) and their count, then #events with
 * an id and per such event: stream slot, digest member, digest address, line. The dedupe sets are named
 * from the base inside the script (their names depend on the server's clock): one Valkey, no cluster.
 */
const ENQUEUE_SCRIPT = `${DEDUPE_SCRIPT}
${EPOCH_FUNCTIONS}
local n = tonumber(ARGV[4])
local p = tonumber(ARGV[5])
local backlog = 0
local counts = redis.call('MGET', unpack(KEYS, 1, n))
for i = 1, n do backlog = backlog + (tonumber(counts[i]) or 0) end
if backlog >= tonumber(ARGV[3]) then return {-1, ''} end
local lists = {}
local sizes = {}
for j = 1, p do
  local count = tonumber(ARGV[6 + p + 2 * j])
  lists[j] = {}
  if count > 0 then lists[j][1] = ARGV[5 + p + 2 * j] end
  sizes[j] = count
end
local base = 6 + 3 * p
local withId = tonumber(ARGV[base + 1])
local flags = {}
local fresh = 0
if withId > 0 then
  local buckets = dedupeBuckets(ARGV[1], tonumber(ARGV[2]))
  for i = 0, withId - 1 do
    local at = base + 2 + i * 4
    if remember(buckets, ARGV[at + 1], tonumber(ARGV[at + 2])) then
      local slot = tonumber(ARGV[at])
      local list = lists[slot]
      list[#list + 1] = ARGV[at + 3]
      sizes[slot] = sizes[slot] + 1
      flags[i + 1] = '0'
      fresh = fresh + 1
    else
      flags[i + 1] = '1'
    end
  end
  if fresh > 0 then redis.call('HINCRBY', buckets[3].meta, 'n', fresh) end
end
local accepted = 0
for j = 1, p do
  if sizes[j] > 0 then
    local partition = tonumber(ARGV[6 + j])
    local stream = KEYS[n + j]
    local epoch = redis.call('GET', KEYS[n + p + j])
    if redis.call('EXISTS', stream) == 0 then
      -- A stream made anew (its server's data lost, or a new server) is a new id space: its ids restart
      -- from this server's clock, which may be behind the checkpoint of the stream it replaces.
      epoch = 'n' .. stamp()
      redis.call('SET', KEYS[n + p + j], epoch)
    elseif not epoch then
      -- The key lost, the stream kept (or a stream written before epochs).
      epoch = nameStream(stream, KEYS[n + p + j])
    end
    redis.call('XADD', stream, '*', 'e', table.concat(lists[j], '\\n'), 'n', sizes[j], 'r', ARGV[6], 'g', epoch)
    redis.call('INCRBY', KEYS[partition + 1], sizes[j])
    accepted = accepted + sizes[j]
  end
end
return {accepted, table.concat(flags)}
`;

/**
 * Drops a partition's entries up to and including ARGV[1] and takes their events off its backlog
 * counter, unless the stream has an epoch other than ARGV[2]: in a stream made anew, ids up to an
 * old checkpoint belong to entries not applied yet. A stream without an epoch (written by an ingest
 * of before epochs) is trimmed as before.
 */
const TRIM_SCRIPT = `
local epoch = redis.call('GET', KEYS[3])
if epoch and epoch ~= ARGV[2] then return -1 end
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

/**
 * Per partition (KEYS: its stream, its epoch key; ARGV: the epoch and checkpoint the aggregator holds,
 * whether to inspect the stream, and the names of the checkpoint's stream, one per line): the
 * stream's epoch (an existing stream without one is named), and, inspected,
 * - whether it holds the checkpoint (has that entry — under one of the names, or none where the
 *   checkpoint knows none — or deleted up to it): the stream the checkpoint was applied from, not
 *   one made since;
 * - whether its next id was moved past the checkpoint: where the epoch is the one held and the
 *   stream's last id sorts before the checkpoint, its ids were rolled back (an AOF that lost its last
 *   second, a backup restored), and on a clock behind the lost ids its next entries would sort before
 *   what was applied, never to be read.
 */
const HEADS_SCRIPT = `${EPOCH_FUNCTIONS}
local function parseId(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function idLess(a, b)
  local am, as = parseId(a)
  local bm, bs = parseId(b)
  if am ~= bm then return am < bm end
  return as < bs
end
-- The entry at \`id\` was written under one of \`names\` (lines; any where empty), or before epochs.
local function ownEntry(stream, id, names)
  local found = redis.call('XRANGE', stream, id, id)[1]
  if not found then return false end
  if names == '' then return true end
  local fields = found[2]
  for k = 1, #fields, 2 do
    if fields[k] == 'g' then
      for name in string.gmatch(names, '[^\\n]+') do
        if name == fields[k + 1] then return true end
      end
      return false
    end
  end
  return true
end
local out = {}
for i = 1, #KEYS / 2 do
  local stream = KEYS[2 * i - 1]
  local held, after, inspect, names = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i]
  local exists = redis.call('EXISTS', stream) == 1
  local epoch = redis.call('GET', KEYS[2 * i])
  if not epoch and exists then epoch = nameStream(stream, KEYS[2 * i]) end
  local advanced, holds = 0, 0
  if inspect == '1' and exists then
    local last, deleted = '0-0', '0-0'
    local info = redis.call('XINFO', 'STREAM', stream)
    for k = 1, #info, 2 do
      if info[k] == 'last-generated-id' then last = info[k + 1] end
      if info[k] == 'max-deleted-entry-id' then deleted = info[k + 1] end
    end
    if after == '0-0' or not idLess(deleted, after) or ownEntry(stream, after, names) then holds = 1 end
    if epoch == held and idLess(last, after) then
      redis.call('XSETID', stream, after)
      advanced = 1
    end
  end
  out[#out + 1] = epoch or ''
  out[#out + 1] = advanced
  out[#out + 1] = holds
end
return out
`;

/** Where the dedupe sets of a key prefix live: `<base><bucket>` (its generations and count) and `<base><bucket>:<generation>:<set>`. */
export const dedupeBase = (prefix: string): string => `${prefix}:h:`;

/**
 * Every dedupe key of the buckets that cover [fromMs, toMs] — for the bench, which deletes what it
 * made by name and weighs it, and for tests.
 */
export async function dedupeKeys(client: Valkey, prefix: string, windowMs: number, fromMs: number, toMs: number): Promise<string[]> {
  const span = Math.ceil(windowMs / 2);
  const keys: string[] = [];
  for (let bucket = Math.floor(fromMs / span); bucket <= Math.floor(toMs / span); bucket++) {
    const meta = `${dedupeBase(prefix)}${bucket}`;
    const shards = await client.hget(meta, 's');
    if (shards === null) continue;
    keys.push(meta);
    shards.split(',').forEach((size, generation) => {
      for (let set = 0; set < Number(size); set++) keys.push(`${meta}:${generation + 1}:${set}`);
    });
  }
  return keys;
}

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
  fmTrim(stream: string, backlog: string, epochKey: string, lastId: string, epoch: string): Promise<number>;
  fmHeads(numKeys: number, ...args: string[]): Promise<(string | number)[]>;
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

/**
 * A connection with commands waiting and nothing heard for this long is taken for dead, dropped and
 * made anew. Without it, one that went silent (a route lost, a host gone without a reset) held its
 * commands until the kernel gave up, some 15 minutes: ingest answered 503 and the aggregator's lane
 * read nothing all that while. Blocking reads wait at most a few hundred ms for their answer.
 */
export const SOCKET_TIMEOUT_MS = 10_000;

function createClient(url: string, logger: Logger, options: RedisOptions): ScriptClient {
  const client = new Valkey(url.replace(/^valkey(s?):/, 'redis$1:'), {
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
    socketTimeout: SOCKET_TIMEOUT_MS,
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
  client.defineCommand('fmTrim', { lua: TRIM_SCRIPT, numberOfKeys: 3 });
  client.defineCommand('fmHeads', { lua: HEADS_SCRIPT });
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
  private readonly epochKeys: string[];
  private readonly dedupeBase: string;
  private pending: PendingEnqueue[] = [];
  private pendingEvents = 0;
  private flushScheduled = false;
  /** Script calls sent and not yet answered (above 1 only when a full call could not wait). */
  private callInFlight = 0;

  constructor(private readonly options: ValkeyQueueOptions) {
    this.partitions = options.partitions;
    this.backlogKeys = Array.from({ length: options.partitions }, (_, p) => `${options.prefix}:b:${p}`);
    this.streamKeys = Array.from({ length: options.partitions }, (_, p) => `${options.prefix}:s:${p}`);
    this.epochKeys = Array.from({ length: options.partitions }, (_, p) => `${options.prefix}:g:${p}`);
    this.dedupeBase = dedupeBase(options.prefix);
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
   * Requests share script calls: one write and one round trip to Valkey for many requests instead of
   * one each. At most one call is in flight (group commit): requests that arrive while it is out wait
   * for its answer and then go together in the next one, so under load each call carries every
   * request of a round trip, and an idle queue sends at the end of the request's own event-loop turn.
   * A request waits at most one earlier call. The script is atomic, so each request's events are
   * still all appended or none is, and duplicates are judged in arrival order as before.
   */
  enqueue(events: readonly QueuedEvent[], receivedAt: number): Promise<EnqueueResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ events, receivedAt, resolve, reject });
      this.pendingEvents += events.length;
      if (this.pendingEvents >= MAX_EVENTS_PER_CALL) this.flush();
      else if (!this.callInFlight) this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    const requests = this.pending;
    if (requests.length === 0) return;
    this.pending = [];
    this.pendingEvents = 0;
    const events = requests.length === 1 ? requests[0]!.events : requests.flatMap((request) => request.events);
    const receivedAt = requests.reduce((earliest, request) => Math.min(earliest, request.receivedAt), Number.POSITIVE_INFINITY);
    this.callInFlight++;
    const settled = () => {
      this.callInFlight--;
      if (this.callInFlight === 0 && this.pending.length > 0) this.scheduleFlush();
    };
    this.enqueueNow(events, receivedAt).then(
      (flags) => {
        settled();
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
        settled();
        for (const request of requests) request.reject(error);
      },
    );
  }

  /** One script call; resolves to a '0'/'1' duplicate flag per event. */
  private async enqueueNow(events: readonly QueuedEvent[], receivedAt: number): Promise<string> {
    // Id-less events need no per-event work in the script: each stream's lines travel as one argument.
    const slots = new Map<number, number>();
    const touched: number[] = [];
    const texts: string[] = [];
    const counts: number[] = [];
    const withId: (string | number)[] = [];
    const idIndexes: number[] = [];
    for (let index = 0; index < events.length; index++) {
      const event = events[index]!;
      const partition = partitionOf(event.tenant, this.partitions);
      let slot = slots.get(partition);
      if (slot === undefined) {
        slot = touched.length;
        slots.set(partition, slot);
        touched.push(partition);
        texts.push('');
        counts.push(0);
      }
      const line = `${event.tenant}\t${event.feature}\t${event.tokens}\t${event.timestamp}`;
      if (event.id === undefined) {
        texts[slot] = counts[slot] === 0 ? line : `${texts[slot]}\n${line}`;
        counts[slot]!++;
      } else {
        const digest = hash('sha256', `${event.tenant}\n${event.id}`, 'buffer');
        withId.push(slot + 1, digest.readBigInt64BE(0).toString(), digest.readUInt32BE(8), line);
        idIndexes.push(index);
      }
    }
    const streamArgs: (string | number)[] = [];
    for (let slot = 0; slot < touched.length; slot++) streamArgs.push(texts[slot]!, counts[slot]!);
    let reply: [number, string];
    try {
      reply = await this.client.fmEnqueue(
        this.partitions + 2 * touched.length,
        ...this.backlogKeys,
        ...touched.map((p) => this.streamKeys[p]!),
        ...touched.map((p) => this.epochKeys[p]!),
        this.dedupeBase,
        this.options.dedupeWindowMs,
        this.options.maxBacklog,
        this.partitions,
        touched.length,
        receivedAt,
        ...touched,
        ...streamArgs,
        idIndexes.length,
        ...withId,
      );
    } catch (error) {
      throw new QueueUnavailableError((error as Error).message);
    }
    if (reply[0] === -1) throw new QueueFullError('queue backlog is over its cap');
    if (idIndexes.length === events.length) return reply[1];
    const flags = new Array<string>(events.length).fill('0');
    for (let i = 0; i < idIndexes.length; i++) flags[idIndexes[i]!] = reply[1][i]!;
    return flags.join('');
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
      // Well inside the socket timeout, which would take a long block for a dead connection.
      Math.min(blockMs, SOCKET_TIMEOUT_MS / 2),
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
        let epoch: string | undefined;
        for (let k = 0; k < fields.length; k += 2) {
          if (fields[k] === 'e') text = fields[k + 1]!;
          else if (fields[k] === 'r') receivedAt = Number(fields[k + 1]);
          else if (fields[k] === 'g') epoch = fields[k + 1]!;
        }
        return { id, events: decodeEvents(text), receivedAt, epoch };
      }),
    }));
  }

  async trim(partition: number, lastAppliedId: string, epoch?: string | null): Promise<boolean> {
    const trimmed = await this.client.fmTrim(
      this.streamKeys[partition]!,
      this.backlogKeys[partition]!,
      this.epochKeys[partition]!,
      lastAppliedId,
      epoch ?? '',
    );
    return trimmed !== -1;
  }

  async streamHeads(positions: readonly StreamPosition[]): Promise<StreamHead[]> {
    if (positions.length === 0) return [];
    const reply = await this.client.fmHeads(
      positions.length * 2,
      ...positions.flatMap(({ partition }) => [this.streamKeys[partition]!, this.epochKeys[partition]!]),
      ...positions.flatMap(({ epoch, afterId, inspect, names }) => [epoch ?? '', afterId, inspect ? '1' : '0', (names ?? []).join('\n')]),
    );
    return positions.map((_, i) => ({
      epoch: (reply[3 * i] as string) || null,
      advanced: reply[3 * i + 1] === 1,
      holds: reply[3 * i + 2] === 1,
    }));
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
