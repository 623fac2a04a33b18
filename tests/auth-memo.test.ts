import type { FastifyRequest } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator, KeyStore } from '../shared/domain/auth.ts';
import type { Db } from '../shared/platform/db.ts';
import { createApiKey, revokeApiKey } from '../shared/domain/keys.ts';
import { createLogger } from '../shared/platform/logger.ts';
import { waitFor } from './helpers/processes.ts';
import { createTestDatabase, servicesAvailable, type TestDatabase } from './helpers/services.ts';

const logger = createLogger('test', { LOG_LEVEL: 'error', NODE_ENV: 'test' });
const requestWith = (key: string) => ({ headers: { authorization: `Bearer ${key}` } }) as FastifyRequest;

describe.skipIf(!servicesAvailable)('authentication memo (header → principal between key refreshes)', () => {
  let database: TestDatabase;
  const stores: KeyStore[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    for (const store of stores) store.stop();
    await database?.drop();
  });

  const instance = async (refreshMs: number): Promise<Authenticator> => {
    const store = new KeyStore(database.db, logger, refreshMs);
    stores.push(store);
    await store.start();
    return new Authenticator(store, 'admin-token-for-the-memo-test');
  };

  it('stops a key revoked on another instance within one refresh, although this instance authenticated it before', async () => {
    const here = await instance(60_000);
    const elsewhere = await instance(300);
    const { id, key } = await createApiKey({ db: database.db, auth: { keys: here.keys } }, 'memo', 'acme');
    await elsewhere.keys.refresh();
    for (let i = 0; i < 3; i++) expect(elsewhere.authenticate(requestWith(key))).toEqual({ kind: 'key', id, tenant: 'acme' });

    await revokeApiKey({ db: database.db, auth: { keys: here.keys } }, id);
    expect(() => here.authenticate(requestWith(key))).toThrow(/invalid or revoked/);
    const deadline = Date.now() + 2_000;
    for (;;) {
      try {
        elsewhere.authenticate(requestWith(key));
      } catch (error) {
        expect((error as Error).message).toMatch(/invalid or revoked/);
        break;
      }
      if (Date.now() > deadline) throw new Error('the revoked key still authenticated after 2 s');
      await new Promise((done) => setTimeout(done, 20));
    }
  });

  it('never remembers a failure: a key added after a 401 works at once', async () => {
    const auth = await instance(60_000);
    expect(() => auth.authenticate(requestWith('fm_not-yet-a-key'))).toThrow(/invalid or revoked/);
    expect(auth.authenticate(requestWith('admin-token-for-the-memo-test'))).toEqual({ kind: 'admin' });
    const { id, key } = await createApiKey({ db: database.db, auth: { keys: auth.keys } }, 'later', null);
    expect(auth.authenticate(requestWith(key))).toEqual({ kind: 'key', id, tenant: null });
  });
  it('never lets a key load that was under way undo a revoke or a new key made here, nor an older load replace a newer', async () => {
    // The real database, with the answer of the key query held back until the test lets it go.
    let held: Promise<void> | undefined;
    let answered: (() => void) | undefined;
    const db: Db = {
      ...database.db,
      query: async <T>(text: string, params?: readonly unknown[]) => {
        const rows = await database.db.query<T>(text, params);
        const wait = held;
        answered?.();
        await wait;
        return rows;
      },
    };
    const store = new KeyStore(db, logger, 60_000);
    stores.push(store);
    await store.start();
    const auth = new Authenticator(store, 'admin-token-for-the-memo-test');
    const deps = { db: database.db, auth: { keys: store } };
    const old = await createApiKey(deps, 'old', null);
    /** Starts a load whose answer is held back; resolves once the database has answered it. */
    const heldLoad = async () => {
      let release!: () => void;
      held = new Promise((resolve) => (release = resolve));
      const read = new Promise<void>((resolve) => (answered = resolve));
      const load = store.refresh();
      await read;
      held = undefined;
      answered = undefined;
      return { load, release };
    };

    // A load answers with the keys as they were before this process revoked one and made another.
    const slow = await heldLoad();
    await revokeApiKey(deps, old.id);
    const made = await createApiKey(deps, 'made', null);
    slow.release();
    await slow.load;
    expect(() => auth.authenticate(requestWith(old.key))).toThrow(/invalid or revoked/);
    expect(auth.authenticate(requestWith(made.key))).toEqual({ kind: 'key', id: made.id, tenant: null });

    // An older load answering after a newer one: a key revoked elsewhere in between stays revoked.
    const older = await heldLoad();
    await revokeApiKey({ db: database.db }, made.id);
    await store.refresh();
    older.release();
    await older.load;
    expect(() => auth.authenticate(requestWith(made.key))).toThrow(/invalid or revoked/);
  });
  it('keeps reloading while one load hangs on a dead connection: a key revoked meanwhile stops within a few reloads', async () => {
    let hang: Promise<void> | undefined;
    let release!: () => void;
    let hung = false;
    const db: Db = {
      ...database.db,
      query: async <T>(text: string, params?: readonly unknown[]) => {
        const wait = hang;
        hang = undefined;
        if (wait) {
          hung = true;
          await wait;
        }
        return database.db.query<T>(text, params);
      },
    };
    const store = new KeyStore(db, logger, 100);
    stores.push(store);
    await store.start();
    const auth = new Authenticator(store, 'admin-token-for-the-memo-test');
    const { id, key } = await createApiKey({ db: database.db }, 'hung', null);
    await waitFor(() => auth.authenticate(requestWith(key)).kind === 'key', { what: 'the key to be loaded' });
    hang = new Promise((resolve) => (release = resolve));
    await waitFor(() => hung, { what: 'a load to hang' });
    try {
      await revokeApiKey({ db: database.db }, id);
      // Before, the next load waited for the hung one to end (up to the statement timeout, 32 s).
      await waitFor(
        () => {
          try {
            auth.authenticate(requestWith(key));
            return false;
          } catch {
            return true;
          }
        },
        { timeoutMs: 3_000, what: 'the revoked key to be refused while one load hangs' },
      );
    } finally {
      release();
    }
  });
});
