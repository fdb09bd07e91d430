/**
 * Live changes of the PostgreSQL model store across server processes,
 * through `LISTEN`/`NOTIFY`.
 *
 * Every write of the store sends `pg_notify(channel, "<kind>:<model id>")`
 * in the transaction that makes the change (see {@linkcode notifyPayload}),
 * so PostgreSQL delivers it when, and only if, the change commits. A
 * {@linkcode ChangeFeed} listens on one connection of the `postgres`
 * client (`sql.listen`), which reconnects by itself after the connection
 * is lost (PostgreSQL restarted) and listens again. Whatever committed
 * while it was deaf is looked up once, each time it listens again: the
 * models whose `updated_at` moved since the connection was last known to
 * hear (less {@linkcode CATCH_UP_SKEW_MS} for the clocks of other
 * processes).
 *
 * The listening client is a pool of its own whose sockets are opened by
 * the feed (the client's documented `socket` option) and refused once the
 * feed is closed: `postgres` 3.4 does not cancel a reconnection it has
 * scheduled when it is ended, so a close during an outage would otherwise
 * see that connection come back with the database and hold the process
 * open.
 *
 * The channel is named after the schema the store's tables live in
 * ({@linkcode channelName}): notifications stay within one database, and
 * two HUBs in different schemas of one database (`?search_path=...` in the
 * URL) do not hear each other.
 *
 * Costs: a notifying commit takes PostgreSQL's notification queue lock, so
 * the commits of notifying transactions of one cluster are serialized; a
 * payload is at most `deleted:` and a 64-character id (the limit is 8000
 * bytes).
 *
 * Internal to the server.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import postgres from "postgres";
import type { Sql } from "postgres";
import { StorageUnavailableError } from "../errors.ts";

import type { ModelChange } from "../contract.ts";

export type { ModelChange };

/** The kinds of {@linkcode ModelChange}. */
const KINDS: ReadonlySet<string> = new Set([
  "created",
  "updated",
  "metrics",
  "deleted",
]);

/**
 * How far before the last moment the listening connection was known to
 * hear the look-up after a reconnection starts: the clocks of the
 * processes stamping `updated_at` may differ by this much.
 */
export const CATCH_UP_SKEW_MS = 10_000;

/** Longest channel name PostgreSQL keeps (NAMEDATALEN - 1 bytes). */
const MAX_CHANNEL_BYTES = 63;

/**
 * The notification channel of the HUB whose tables live in `schema`:
 * `hub_changes:<schema>`, or a digest of the schema when that is longer
 * than PostgreSQL's 63-byte identifiers.
 *
 * @param schema The schema of the store's tables (`current_schema()`).
 * @returns The channel name.
 *
 * @example One channel per schema
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { channelName } from "./changes.ts";
 *
 * assertEquals(channelName("public"), "hub_changes:public");
 * ```
 */
export function channelName(schema: string): string {
  const plain = `hub_changes:${schema}`;
  if (new TextEncoder().encode(plain).length <= MAX_CHANNEL_BYTES) return plain;
  const digest = createHash("sha256").update(schema).digest("hex");
  return `hub_changes:${digest.slice(0, 32)}`;
}

/**
 * The payload a write notifies.
 *
 * @param kind What changed.
 * @param id The model's id.
 * @returns `<kind>:<id>`.
 *
 * @example A metrics post
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { notifyPayload } from "./changes.ts";
 *
 * assertEquals(notifyPayload("metrics", "AbC"), "metrics:AbC");
 * ```
 */
export function notifyPayload(kind: ModelChange["kind"], id: string): string {
  return `${kind}:${id}`;
}

/** Reads a payload of {@linkcode notifyPayload}; `undefined` if foreign. */
function parsePayload(payload: string): ModelChange | undefined {
  const colon = payload.indexOf(":");
  const kind = payload.slice(0, colon);
  const id = payload.slice(colon + 1);
  if (colon < 0 || !KINDS.has(kind) || id === "") return undefined;
  return { id, kind: kind as ModelChange["kind"] };
}

/** Where the `postgres` client asks a `socket` option to connect. */
interface SocketTarget {
  host: string[];
  port: number[];
  path?: string | false | undefined;
}

/** What a {@linkcode ChangeFeed} needs from its store. */
export interface ChangeFeedOptions {
  /** The database URL; the feed opens one connection of its own. */
  url: string;
  /** Seconds to wait for the listening connection. */
  connectTimeoutSeconds: number;
  /** The store's pool, for the look-up after a reconnection. */
  sql: Sql;
  /** The channel ({@linkcode channelName}). */
  channel: string;
  /**
   * Runs database work, turning "cannot reach the database" into
   * {@linkcode StorageUnavailableError}.
   */
  run: <T>(work: () => Promise<T>) => Promise<T>;
  /** Seconds between look-ups after a reconnection that could not run. */
  retryAfterSeconds: number;
}

/**
 * Listens for the changes committed through any process on the store's
 * database and schema; see the module documentation.
 */
export class ChangeFeed {
  #sql: Sql;
  #listener: Sql;
  #channel: string;
  #run: <T>(work: () => Promise<T>) => Promise<T>;
  #retryMs: number;
  #listeners = new Set<(change: ModelChange) => void>();
  /** The listening of the current listeners, once started. */
  #listening: Promise<{ unlisten: () => Promise<void> }> | undefined;
  /** Counts listenings, so callbacks of a stopped one are ignored. */
  #generation = 0;
  /** Local time the listening connection was last known to hear. */
  #aliveAt = 0;
  #catchingUp: Promise<void> = Promise.resolve();
  #closed = false;
  #hostIndex = 0;

  /**
   * A feed over a store's pool.
   *
   * @param options Pool, channel, error mapping, retry delay.
   */
  constructor(options: ChangeFeedOptions) {
    this.#sql = options.sql;
    this.#listener = postgres(options.url, {
      max: 1,
      connect_timeout: options.connectTimeoutSeconds,
      onnotice: () => {},
      // Typed loosely: `socket` is documented but not in the client's types.
      ...{ socket: (parsed: SocketTarget) => this.#openSocket(parsed) },
    });
    this.#channel = options.channel;
    this.#run = options.run;
    this.#retryMs = options.retryAfterSeconds * 1000;
  }

  /**
   * Calls `listener` for every change committed from now on (after it
   * resolved), through any process.
   *
   * @param listener Receives each change.
   * @returns Stops listening.
   */
  async subscribe(
    listener: (change: ModelChange) => void,
  ): Promise<() => Promise<void>> {
    if (this.#closed) {
      throw new TypeError("Cannot watch the PostgreSQL store after close()");
    }
    this.#listeners.add(listener);
    this.#listening ??= this.#listen();
    try {
      await this.#listening;
    } catch (error) {
      this.#listeners.delete(listener);
      throw error;
    }
    return async () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) await this.#stop();
    };
  }

  /**
   * Stops listening and waits for a running look-up.
   *
   * @returns When nothing runs any more.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    await this.#stop();
    await this.#listener.end({ timeout: 1 });
  }

  /**
   * Opens a socket for the listening client (the default of `postgres`:
   * the next host in turn, or the Unix socket), or refuses once closed, so
   * that a reconnection scheduled before the close ends there.
   */
  #openSocket(target: SocketTarget): Socket {
    if (this.#closed) {
      throw new Error("The PostgreSQL change feed is closed");
    }
    if (target.path) return connect(target.path);
    const index = this.#hostIndex++ % target.host.length;
    const host = target.host[index]!;
    const socket = connect(target.port[index] ?? 5432, host);
    // Read by the client as the TLS server name.
    Object.assign(socket, { host });
    return socket;
  }

  async #listen(): Promise<{ unlisten: () => Promise<void> }> {
    const generation = ++this.#generation;
    let listened = false;
    const current = (): boolean =>
      generation === this.#generation && !this.#closed;
    try {
      return await this.#run(() =>
        this.#listener.listen(this.#channel, (payload) => {
          if (!current()) return;
          this.#aliveAt = Date.now();
          const change = parsePayload(payload);
          if (change !== undefined) this.#emit(change);
        }, () => {
          // Called again each time the client listens again after it lost
          // the connection: look up what committed while it was deaf.
          if (!current()) return;
          const since = this.#aliveAt - CATCH_UP_SKEW_MS;
          this.#aliveAt = Date.now();
          if (!listened) {
            listened = true;
            return;
          }
          this.#catchingUp = this.#catchingUp.then(() =>
            this.#catchUp(since, current)
          );
        })
      );
    } catch (error) {
      // The client keeps trying to listen in the background; this
      // generation's callbacks ignore it, and close() ends it.
      this.#generation += 1;
      this.#listening = undefined;
      throw error;
    }
  }

  /** Reports the models whose `updated_at` moved after `since`. */
  async #catchUp(since: number, current: () => boolean): Promise<void> {
    while (current()) {
      try {
        const rows = await this.#run(() =>
          this.#sql<{ id: string; deleted_at: string | null }[]>`
            SELECT id, deleted_at FROM hub_models WHERE updated_at > ${since}`
        );
        for (const row of rows) {
          if (!current()) return;
          this.#emit({
            id: row.id,
            kind: row.deleted_at === null ? "updated" : "deleted",
          });
        }
        return;
      } catch (error) {
        if (!(error instanceof StorageUnavailableError)) {
          console.error(
            "HUB: Cannot look up the PostgreSQL changes missed while reconnecting",
            error,
          );
          return;
        }
        // Lost again: look up from the same moment once it is back.
        await new Promise((resolve) => setTimeout(resolve, this.#retryMs));
      }
    }
  }

  #emit(change: ModelChange): void {
    for (const listener of this.#listeners) {
      // A listener's error must not reach the client's connection handler.
      try {
        listener(change);
      } catch (error) {
        console.error(`HUB: A change listener failed on ${change.id}`, error);
      }
    }
  }

  async #stop(): Promise<void> {
    const listening = this.#listening;
    this.#listening = undefined;
    this.#generation += 1;
    await this.#catchingUp;
    if (listening === undefined) return;
    const handle = await listening.catch(() => undefined);
    // unlisten() drops the callbacks before it sends UNLISTEN; when that
    // fails the connection is gone, and its LISTEN with it.
    await handle?.unlisten().catch(() => {});
  }
}
