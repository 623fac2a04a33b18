import { createServer, type Server, type Socket, connect } from 'node:net';

/** A TCP proxy a test can cut and restore, to take a dependency away from one process only. */
export interface CuttableProxy {
  port: number;
  /** Drops every open connection and refuses new ones until restored. */
  cut(): void;
  restore(): void;
  /**
   * The open connections go silent, as across a network that lost its route: nothing more passes
   * either way and nobody is told. New connections pass as before.
   */
  silence(): void;
  close(): Promise<void>;
}

/**
 * A PostgreSQL proxy that can also lose the answer to a `COMMIT`: the COMMIT reaches the server and
 * is carried out, then the connection is dropped before the server's answer is passed on — the
 * client cannot tell whether its transaction committed.
 */
export interface PostgresProxy extends CuttableProxy {
  /** Loses the answers of the next `count` COMMITs (added to any still pending). */
  dropCommitAnswers(count: number): void;
  /** From now on loses each COMMIT's answer with probability `share` (0 stops it). */
  dropCommitAnswerShare(share: number): void;
  /** COMMITs whose answer was lost so far (each of them was forwarded to the server). */
  readonly droppedCommitAnswers: number;
  /** COMMITs forwarded so far. */
  readonly commits: number;
  /** Drops every open connection at random intervals of `minMs`-`maxMs` (new ones are accepted) until `steady()`. */
  flap(minMs: number, maxMs: number): void;
  /** Stops flapping and losing COMMIT answers: from now on the connection is steady. */
  steady(): void;
  /** Connections cut by `cut()` and flapping so far. */
  readonly cuts: number;
}

const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;

/**
 * Follows the frontend half of the PostgreSQL protocol across chunks and reports each COMMIT sent,
 * as a simple query (`Q`) or a parse (`P`) of the extended protocol.
 */
class CommitSpotter {
  private buffer: Buffer = Buffer.alloc(0);
  private startup = true;

  /** The number of COMMIT messages completed by this chunk. */
  feed(chunk: Buffer): number {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    let commits = 0;
    for (;;) {
      if (this.startup) {
        if (this.buffer.length < 8) break;
        const length = this.buffer.readInt32BE(0);
        if (this.buffer.length < length) break;
        const code = this.buffer.readInt32BE(4);
        // SSL and GSS requests come before the startup message proper; the startup message ends the untyped phase.
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.startup = false;
        this.buffer = this.buffer.subarray(length);
        continue;
      }
      if (this.buffer.length < 5) break;
      const length = this.buffer.readInt32BE(1);
      if (this.buffer.length < 1 + length) break;
      const type = String.fromCharCode(this.buffer[0]!);
      const body = this.buffer.subarray(5, 1 + length);
      if (type === 'Q' && isCommit(body)) commits++;
      if (type === 'P') {
        const nameEnd = body.indexOf(0);
        if (isCommit(body.subarray(nameEnd + 1))) commits++;
      }
      this.buffer = this.buffer.subarray(1 + length);
    }
    return commits;
  }
}

function isCommit(text: Buffer): boolean {
  const end = text.indexOf(0);
  return /^\s*(commit|end)\s*;?\s*$/i.test(text.subarray(0, end < 0 ? text.length : end).toString('utf8'));
}

export async function startProxy(targetHost: string, targetPort: number): Promise<PostgresProxy> {
  const sockets = new Set<Socket>();
  let open = true;
  let pendingDrops = 0;
  let dropShare = 0;
  let dropped = 0;
  let commits = 0;
  let cuts = 0;
  let flapping: NodeJS.Timeout | undefined;
  const silencers = new Set<() => void>();
  const server: Server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, targetHost);
    sockets.add(client).add(upstream);
    silencers.add(() => {
      client.removeAllListeners('data');
      upstream.removeAllListeners('data');
      client.on('data', () => {});
      upstream.on('data', () => {});
    });
    const spotter = new CommitSpotter();
    // Set once a COMMIT whose answer is to be lost has gone upstream.
    let losingAnswer = false;
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (chunk: Buffer) => {
      const spotted = spotter.feed(chunk);
      commits += spotted;
      for (let i = 0; i < spotted && !losingAnswer; i++) {
        if (pendingDrops > 0) {
          pendingDrops--;
          losingAnswer = true;
        } else if (dropShare > 0 && Math.random() < dropShare) {
          losingAnswer = true;
        }
      }
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (chunk: Buffer) => {
      // The server answers a COMMIT only once it is carried out: this chunk is that answer. Drop it.
      if (losingAnswer) {
        dropped++;
        drop();
        return;
      }
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const dropAll = () => {
    cuts += sockets.size / 2;
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  const cut = () => {
    open = false;
    dropAll();
  };
  const steady = () => {
    clearTimeout(flapping);
    flapping = undefined;
    dropShare = 0;
    pendingDrops = 0;
  };
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    cut,
    restore() {
      open = true;
    },
    silence() {
      for (const silence of silencers) silence();
      silencers.clear();
    },
    dropCommitAnswers(count) {
      pendingDrops += count;
    },
    dropCommitAnswerShare(share) {
      dropShare = share;
    },
    get droppedCommitAnswers() {
      return dropped;
    },
    get commits() {
      return commits;
    },
    flap(minMs, maxMs) {
      clearTimeout(flapping);
      const next = () => {
        flapping = setTimeout(
          () => {
            dropAll();
            next();
          },
          minMs + Math.random() * (maxMs - minMs),
        );
      };
      next();
    },
    steady,
    get cuts() {
      return cuts;
    },
    close() {
      steady();
      cut();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A proxy in front of the PostgreSQL of `databaseUrl`, and the same URL through it. */
export async function proxyDatabase(databaseUrl: string): Promise<{ proxy: PostgresProxy; url: string }> {
  const url = new URL(databaseUrl);
  const proxy = await startProxy(url.hostname, Number(url.port || 5432));
  url.port = String(proxy.port);
  return { proxy, url: url.toString() };
}
