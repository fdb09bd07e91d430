/**
 * Model documents and per-epoch metrics in PostgreSQL: a
 * {@linkcode ModelStore} that several server processes share.
 *
 * Tables (see `migrations.ts`): `hub_models (id, document jsonb, ...)` holds
 * each model's document whole; `hub_metrics (model_id, epoch, metrics
 * jsonb)` one row per epoch, upserted, so an epoch sent again replaces the
 * stored one.
 *
 * Isolation: every change of a model runs in one transaction that first
 * locks the model's row (`SELECT ... FOR UPDATE`), so changes of one model
 * through any number of processes run one after another and never lose each
 * other's fields; `change` callbacks run exactly once. A method resolves only
 * after its transaction committed (PostgreSQL's default
 * `synchronous_commit = on` makes that durable), so every acknowledged write
 * survives a crash of the server or of the database.
 *
 * Live updates: every change sends `pg_notify` on the schema's channel in
 * its own transaction, delivered on commit; {@linkcode PostgresModelStore.watch}
 * listens (see `changes.ts`), so a page served by one process hears of
 * changes made through another, also after the database restarted.
 *
 * Faults: a query that cannot reach the database (refused, reset, server
 * shutting down or starting, too many connections) rejects with
 * {@linkcode StorageUnavailableError}; the pool reconnects by itself on the
 * next query once the database is back. Messages name the host, port and
 * database, never the password.
 *
 * Over 500 lines on purpose: it is one class implementing the whole
 * {@linkcode ModelStore} contract on one connection pool, each method one
 * transaction or statement; the schema and its migrations live in
 * `migrations.ts`.
 *
 * Internal to the server.
 *
 * @module
 */

import postgres from "postgres";
import type { Sql } from "postgres";
import {
  type CallOptions,
  checkMetricsUsage,
  type EpochEntry,
  type GetOptions,
  type ListOptions,
  type MetricsListOptions,
  type ModelRecord,
  type ModelStore,
  type NewModel,
  type Page,
  StorageUnavailableError,
  type StoredMetrics,
} from "../contract.ts";
import {
  MAX_EPOCHS_PER_MODEL,
  MAX_METRIC_NAMES_PER_MODEL,
} from "../../../protocol/metrics_rules.ts";
import { isModelId } from "../../../protocol/model_id.ts";
import { createModelId, namesOf, newModelRecord } from "../records.ts";
import { migrate, MIGRATIONS, SchemaVersionError } from "./migrations.ts";
import {
  ChangeFeed,
  channelName,
  type ModelChange,
  notifyPayload,
} from "./changes.ts";

export type { ModelChange } from "./changes.ts";

/** Options of {@linkcode openPostgresModelStore}. */
export interface PostgresStoreOptions {
  /**
   * Most connections of this process's pool (a watching store opens one
   * more, to listen for changes).
   *
   * @default {10}
   */
  maxConnections?: number | undefined;
  /**
   * Seconds to wait for a connection before the call is answered as
   * unavailable.
   *
   * @default {5}
   */
  connectTimeoutSeconds?: number | undefined;
  /**
   * Apply missing schema migrations when opening; `false` only checks that
   * the schema is current (for servers that must not change it; run
   * `hub-session migrate` first).
   *
   * @default {true}
   */
  migrate?: boolean | undefined;
  /**
   * Seconds a client is told to wait (`Retry-After`) while the database
   * cannot be reached.
   *
   * @default {2}
   */
  retryAfterSeconds?: number | undefined;
}

/** Codes of errors that mean "the database cannot be reached right now". */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now (starting up, shutting down)
  "53300", // too_many_connections
  "08000",
  "08003",
  "08006",
  "08001",
  "08004",
]);

/**
 * The URL without password or query, for messages: `host:port/database`.
 *
 * @param url A PostgreSQL URL.
 * @returns Where it points, safe to log.
 */
export function describeDatabase(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "5432"}${parsed.pathname}`;
  } catch {
    return "(unparsable database URL)";
  }
}

/**
 * Opens the model store in PostgreSQL: connects, then applies (or checks)
 * the schema migrations.
 *
 * @param url `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
 * @param options Pool size, timeouts, whether to migrate.
 * @returns The store.
 *
 * @example Open a team database
 * ```ts ignore
 * const models = await openPostgresModelStore("postgres://hub@db.internal/hub");
 * const model = await models.get("AbCdEfGhIjKlMnOpQrSt");
 * await models.close();
 * ```
 */
export async function openPostgresModelStore(
  url: string,
  options: PostgresStoreOptions = {},
): Promise<PostgresModelStore> {
  const {
    maxConnections = 10,
    connectTimeoutSeconds = 5,
    migrate: apply = true,
    retryAfterSeconds = 2,
  } = options;
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new TypeError(
      `Cannot open the database "${
        describeDatabase(url)
      }" as its URL does not start with postgres:// or postgresql://`,
    );
  }
  const sql = postgres(url, {
    max: maxConnections,
    connect_timeout: connectTimeoutSeconds,
    idle_timeout: 60,
    onnotice: () => {},
  });
  let store: PostgresModelStore;
  try {
    const [where] = await runUnavailable(
      describeDatabase(url),
      retryAfterSeconds,
      () => sql<{ schema: string | null }[]>`SELECT current_schema() AS schema`,
    );
    if (typeof where?.schema !== "string") {
      throw new TypeError(
        `Cannot open the database "${
          describeDatabase(url)
        }" as its search_path names no schema that exists: create the schema or fix search_path`,
      );
    }
    store = new PostgresModelStore(sql, describeDatabase(url), {
      retryAfterSeconds,
      channel: channelName(where.schema),
      url,
      connectTimeoutSeconds,
    });
    if (apply) await store.run(() => migrate(sql));
    else await store.checkSchema();
  } catch (error) {
    await sql.end({ timeout: 1 });
    throw error;
  }
  return store;
}

/** Model documents and metrics in PostgreSQL; see the module documentation. */
export class PostgresModelStore implements ModelStore {
  /** Short name for logs. */
  readonly kind = "postgres";
  #sql: Sql;
  #where: string;
  #retryAfterSeconds: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #channel: string;
  #changes: ChangeFeed;

  /**
   * Wraps a pool (see {@linkcode openPostgresModelStore}).
   *
   * @param sql The pool.
   * @param where `host:port/database`, for messages.
   * @param options Retry-After seconds; the notification channel
   * (`channelName()` of the tables' schema); the URL and connect timeout
   * of the listening connection.
   */
  constructor(
    sql: Sql,
    where: string,
    options: {
      retryAfterSeconds: number;
      channel: string;
      url: string;
      connectTimeoutSeconds: number;
    },
  ) {
    this.#sql = sql;
    this.#where = where;
    this.#retryAfterSeconds = options.retryAfterSeconds;
    this.#channel = options.channel;
    this.#changes = new ChangeFeed({
      url: options.url,
      connectTimeoutSeconds: options.connectTimeoutSeconds,
      sql,
      channel: options.channel,
      run: (work) => this.run(work),
      retryAfterSeconds: options.retryAfterSeconds,
    });
  }

  /**
   * Runs `work`, turning "cannot reach the database" into
   * {@linkcode StorageUnavailableError}.
   *
   * @param work The database work.
   * @param signal The call's signal: once it aborted, the work's failure
   * (a cancelled statement) rejects with its reason.
   * @returns Its result.
   */
  async run<T>(
    work: () => Promise<T>,
    signal?: AbortSignal | undefined,
  ): Promise<T> {
    if (this.#closed) {
      throw new TypeError("Cannot use the PostgreSQL store after close()");
    }
    try {
      return await work();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw unavailable(this.#where, this.#retryAfterSeconds, error);
    }
  }

  /**
   * Checks that every migration this server knows is applied.
   *
   * @returns When the schema is current.
   */
  async checkSchema(): Promise<void> {
    const rows = await this.run(async () => {
      const [table] = await this.#sql<{ present: boolean }[]>`
        SELECT to_regclass('hub_schema_migrations') IS NOT NULL AS present`;
      if (table?.present !== true) return [];
      return await this.#sql<{ version: number }[]>`
        SELECT coalesce(max(version), 0) AS version FROM hub_schema_migrations`;
    });
    const found = rows[0]?.version ?? 0;
    const known = MIGRATIONS.at(-1)?.version ?? 0;
    if (found > known) throw new SchemaVersionError(found, known);
    if (found < known) {
      throw new Error(
        `Cannot use the database as its HUB schema is version ${found} and this server needs ${known}: run "hub-session migrate --database <url>" first`,
      );
    }
  }

  /**
   * Lists the ids of the models that exist and are not soft-deleted.
   *
   * @param options Page size, cursor, signal.
   * @returns One page of ids, ascending.
   */
  listIds(options: ListOptions = {}): Promise<Page<string>> {
    const { limit = 100, cursor = "", signal } = options;
    signal?.throwIfAborted();
    const size = Math.max(1, Math.min(1000, Math.floor(limit)));
    return this.run(async () => {
      const rows = await cancellable(
        this.#sql<{ id: string }[]>`
          SELECT id FROM hub_models
          WHERE deleted_at IS NULL AND id > ${cursor}
          ORDER BY id COLLATE "C" LIMIT ${size + 1}`,
        signal,
      );
      const ids = rows.slice(0, size).map((r) => r.id);
      return {
        items: ids,
        next: rows.length > size ? ids.at(-1) : undefined,
      };
    }, signal);
  }

  /**
   * Reads a model's document.
   *
   * @param id Model id.
   * @param options Signal; `includeDeleted` also returns a soft-deleted
   * model's document.
   * @returns The document, or `undefined`.
   */
  get(
    id: string,
    options: GetOptions = {},
  ): Promise<ModelRecord | undefined> {
    const { signal } = options;
    signal?.throwIfAborted();
    if (!isModelId(id)) return Promise.resolve(undefined);
    const all = options.includeDeleted === true;
    return this.run(async () => {
      const rows = await cancellable(
        this.#sql<{ document: ModelRecord }[]>`
          SELECT document FROM hub_models
          WHERE id = ${id} AND (${all} OR deleted_at IS NULL)`,
        signal,
      );
      return rows[0]?.document;
    }, signal);
  }

  /**
   * Creates a model with a fresh id.
   *
   * @param init Initial fields.
   * @param now Creation time.
   * @param options Signal.
   * @returns The committed document.
   */
  create(
    init: NewModel,
    now: number,
    options: CallOptions = {},
  ): Promise<ModelRecord> {
    const { signal } = options;
    return this.run(async () => {
      for (;;) {
        const record = newModelRecord(createModelId(), init, now);
        // One statement, its own transaction: the notification goes out
        // when it commits.
        const rows = await cancellable(
          this.#sql`
            INSERT INTO hub_models (id, document, created_at, updated_at)
            VALUES (${record.id}, ${
            this.#sql.json(toJson(record))
          }, ${now}, ${now})
            ON CONFLICT (id) DO NOTHING
            RETURNING pg_notify(${this.#channel},
              ${notifyPayload("created", record.id)})`,
          signal,
        );
        if (rows.length > 0) return record;
      }
    }, signal);
  }

  /**
   * Changes one model's document atomically, under its row lock.
   *
   * @param id Model id.
   * @param change Mutates a private copy; its result is passed through.
   * @param now Time of the change.
   * @param options Signal: cancels the statement running (e.g. waiting for
   * the row lock) and rolls the transaction back, until it commits.
   * @returns The committed document and `change`'s result, or `undefined`.
   */
  update<T>(
    id: string,
    change: (record: ModelRecord) => T,
    now: number,
    options: CallOptions = {},
  ): Promise<{ record: ModelRecord; result: T } | undefined> {
    const { signal } = options;
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.run(
      async () =>
        await this.#sql.begin(async (tx) => {
          const rows = await cancellable(
            tx<{ document: ModelRecord }[]>`
              SELECT document FROM hub_models
              WHERE id = ${id} AND deleted_at IS NULL FOR UPDATE`,
            signal,
          );
          const current = rows[0]?.document;
          if (current === undefined) return undefined;
          const record = structuredClone(current);
          const result = change(record);
          record.updatedAt = now;
          await cancellable(
            tx`
              UPDATE hub_models
              SET document = ${tx.json(toJson(record))}, updated_at = ${now}
              WHERE id = ${id}
              RETURNING pg_notify(${this.#channel},
                ${notifyPayload("updated", id)})`,
            signal,
          );
          return { record, result };
        }) as { record: ModelRecord; result: T } | undefined,
      signal,
    );
  }

  /**
   * Deletes a model (soft: marked; hard: document and metrics removed).
   *
   * @param id Model id.
   * @param hard Whether to remove the data.
   * @param now Time of the deletion.
   * @param options Signal.
   * @returns Whether the model existed and was not soft-deleted.
   */
  delete(
    id: string,
    hard: boolean,
    now: number,
    options: CallOptions = {},
  ): Promise<boolean> {
    const { signal } = options;
    if (!isModelId(id)) return Promise.resolve(false);
    // One statement, its own transaction: the notification goes out when it
    // commits.
    return this.run(
      async () => {
        const rows = await cancellable(
          hard
            ? this.#sql<{ deleted_at: string | null }[]>`
                DELETE FROM hub_models WHERE id = ${id}
                RETURNING deleted_at,
                  pg_notify(${this.#channel}, ${notifyPayload("deleted", id)})`
            : this.#sql<{ deleted_at: string | null }[]>`
                UPDATE hub_models
                SET deleted_at = ${now}, updated_at = ${now},
                    document = document || jsonb_build_object(
                      'deletedAt', ${now}::bigint, 'updatedAt', ${now}::bigint)
                WHERE id = ${id} AND deleted_at IS NULL
                RETURNING NULL AS deleted_at,
                  pg_notify(${this.#channel}, ${notifyPayload("deleted", id)})`,
          signal,
        );
        return rows.length > 0 && rows[0]?.deleted_at === null;
      },
      signal,
    );
  }

  /**
   * Upserts epochs' metrics and moves a `new` model to `training`, in one
   * transaction.
   *
   * @param id Model id.
   * @param metrics Metrics by epoch.
   * @param now Time of the post.
   * @param options Signal: cancels the statement until it commits.
   * @returns The committed document, or `undefined` for an unknown model.
   */
  upsertMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    now: number,
    options: CallOptions = {},
  ): Promise<ModelRecord | undefined> {
    const { signal } = options;
    if (!isModelId(id)) return Promise.resolve(undefined);
    for (const epoch of metrics.keys()) {
      if (!Number.isSafeInteger(epoch) || epoch < 0) {
        return Promise.reject(
          new RangeError(
            `Cannot store metrics for epoch ${epoch}: give a non-negative integer`,
          ),
        );
      }
    }
    const epochs = [...metrics.keys()].map(String);
    const values = [...metrics.values()].map((m) => JSON.stringify(m));
    return this.run(async () => {
      // One statement, so one round trip and its own transaction. The row
      // update locks the model, starts training, stamps the time and adds
      // the names sent to `metric_names`, but only within the bounds: the
      // epochs kept plus those sent, and the names of `metric_names` plus
      // those new. The names are read from the locked row (re-read after a
      // concurrent change committed), so they are exact; the epochs are
      // counted in the statement's snapshot, so two posts to one model
      // racing in separate transactions may together pass the epoch bound
      // by at most one post's epochs (MAX_EPOCHS_PER_POST). Both counts
      // cost at most the model's epochs in the primary key index and its
      // names (no metrics are read). The epochs are upserted only when the
      // row was updated; otherwise nothing is written and the bound is
      // named.
      const rows = await cancellable(
        this.#sql<
          {
            document: ModelRecord | null;
            found: boolean;
            epochs: string | null;
            names: string | null;
          }[]
        >`
        WITH incoming AS (
          SELECT e::bigint AS epoch, m::jsonb AS metrics
          FROM unnest(${epochs}::text[], ${values}::text[]) AS t(e, m)
        ), sent AS (
          SELECT DISTINCT jsonb_object_keys(metrics) AS name FROM incoming
        ), current AS (
          SELECT metric_names FROM hub_models
          WHERE id = ${id} AND deleted_at IS NULL
        ), kept AS (
          SELECT count(*) AS n FROM hub_metrics h
          WHERE h.model_id = ${id}
            AND h.epoch NOT IN (SELECT epoch FROM incoming)
        ), model AS (
          UPDATE hub_models
          SET updated_at = ${now},
              metric_names = metric_names || ARRAY(
                SELECT name FROM sent WHERE name <> ALL (metric_names)),
              document = jsonb_set(
                jsonb_set(document, '{updatedAt}', to_jsonb(${now}::bigint)),
                '{status}',
                CASE WHEN document->>'status' = 'new' THEN '"training"'::jsonb
                     ELSE document->'status' END)
          WHERE id = ${id} AND deleted_at IS NULL
            AND (SELECT n FROM kept) + ${epochs.length}
              <= ${MAX_EPOCHS_PER_MODEL}
            AND cardinality(metric_names) + (SELECT count(*) FROM sent
              WHERE name <> ALL (metric_names)) <= ${MAX_METRIC_NAMES_PER_MODEL}
          RETURNING id, document,
            pg_notify(${this.#channel}, ${notifyPayload("metrics", id)})
        ), stored AS (
          INSERT INTO hub_metrics (model_id, epoch, metrics, recorded_at)
          SELECT model.id, incoming.epoch, incoming.metrics, ${now}
          FROM model, incoming
          ON CONFLICT (model_id, epoch) DO UPDATE
          SET metrics = excluded.metrics, recorded_at = excluded.recorded_at
        )
        SELECT (SELECT document FROM model) AS document,
          current.metric_names IS NOT NULL AS found,
          (SELECT n FROM kept) + ${epochs.length} AS epochs,
          cardinality(current.metric_names) + (SELECT count(*) FROM sent
            WHERE name <> ALL (current.metric_names)) AS names
        FROM (SELECT 1) AS one LEFT JOIN current ON true`,
        signal,
      );
      const row = rows[0];
      if (row === undefined) return undefined;
      if (row.document !== null) return row.document;
      if (row.found) {
        checkMetricsUsage({
          epochs: Number(row.epochs),
          names: Number(row.names),
        });
      }
      return undefined;
    }, signal);
  }

  /**
   * Reads a model's metrics in ascending epoch order.
   *
   * @param id Model id.
   * @param options Range of epochs, signal.
   * @returns The epochs, or `undefined` for an unknown model.
   */
  listMetrics(
    id: string,
    options: MetricsListOptions = {},
  ): Promise<EpochEntry[] | undefined> {
    const { afterEpoch = -1, limit = Infinity, signal } = options;
    signal?.throwIfAborted();
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.run(async () => {
      const exists = await cancellable(
        this.#sql`
          SELECT 1 FROM hub_models WHERE id = ${id} AND deleted_at IS NULL`,
        signal,
      );
      if (exists.length === 0) return undefined;
      const rows = await cancellable(
        Number.isFinite(limit)
          ? this.#sql<{ epoch: string; metrics: StoredMetrics }[]>`
            SELECT epoch, metrics FROM hub_metrics
            WHERE model_id = ${id} AND epoch > ${afterEpoch}
            ORDER BY epoch LIMIT ${Math.max(0, Math.floor(limit))}`
          : this.#sql<{ epoch: string; metrics: StoredMetrics }[]>`
            SELECT epoch, metrics FROM hub_metrics
            WHERE model_id = ${id} AND epoch > ${afterEpoch}
            ORDER BY epoch`,
        signal,
      );
      return rows.map((r) => ({ epoch: Number(r.epoch), metrics: r.metrics }));
    }, signal);
  }

  /**
   * Number of distinct epochs with stored metrics.
   *
   * @param id Model id.
   * @param options Signal.
   * @returns The count; 0 for an unknown model.
   */
  epochCount(id: string, options: CallOptions = {}): Promise<number> {
    const { signal } = options;
    signal?.throwIfAborted();
    if (!isModelId(id)) return Promise.resolve(0);
    return this.run(async () => {
      const rows = await cancellable(
        this.#sql<{ count: string }[]>`
          SELECT count(*) AS count FROM hub_metrics m
          JOIN hub_models d ON d.id = m.model_id
          WHERE m.model_id = ${id} AND d.deleted_at IS NULL`,
        signal,
      );
      return Number(rows[0]?.count ?? 0);
    }, signal);
  }

  /**
   * Writes a model exactly as given (same id, document and metrics),
   * replacing what the database holds for that id: the import of another
   * store. Running it again with the same data changes nothing.
   *
   * @param record The document.
   * @param metrics Every epoch of the model.
   * @returns When the model is committed.
   */
  importModel(
    record: ModelRecord,
    metrics: readonly EpochEntry[],
  ): Promise<void> {
    if (!isModelId(record.id)) {
      return Promise.reject(
        new TypeError(`Cannot import model "${record.id}": not a model id`),
      );
    }
    return this.run(async () => {
      await this.#sql.begin(async (tx) => {
        await tx`
          INSERT INTO hub_models
            (id, document, created_at, updated_at, deleted_at, metric_names)
          VALUES (${record.id}, ${tx.json(toJson(record))}, ${record.createdAt},
                  ${record.updatedAt}, ${record.deletedAt ?? null},
                  ${[...namesOf(metrics.map((e) => e.metrics))]}::text[])
          ON CONFLICT (id) DO UPDATE
          SET document = excluded.document, created_at = excluded.created_at,
              updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
              metric_names = excluded.metric_names
          RETURNING pg_notify(${this.#channel},
            ${notifyPayload("updated", record.id)})`;
        await tx`DELETE FROM hub_metrics WHERE model_id = ${record.id}`;
        for (let i = 0; i < metrics.length; i += 1000) {
          const batch = metrics.slice(i, i + 1000);
          await tx`
            INSERT INTO hub_metrics (model_id, epoch, metrics, recorded_at)
            SELECT ${record.id}, e::bigint, m::jsonb, ${record.updatedAt}
            FROM unnest(${batch.map((e) => String(e.epoch))}::text[],
                        ${batch.map((e) => JSON.stringify(e.metrics))}::text[])
              AS t(e, m)`;
        }
      });
    });
  }

  /**
   * Calls `listener` for the changes of any model committed through any
   * process on this database and schema, from when it resolves: every
   * write notifies in its transaction (see `changes.ts`). After the
   * listening connection was lost and came back, the models that changed
   * meanwhile are reported once, as `updated` or `deleted`.
   *
   * @param listener Receives each change.
   * @returns Stops watching.
   */
  watch(
    listener: (change: ModelChange) => void,
  ): Promise<() => Promise<void>> {
    return this.#changes.subscribe(listener);
  }

  /**
   * Closes the pool (waiting up to 5 s for running queries).
   *
   * @returns When every connection is closed.
   */
  close(): Promise<void> {
    // The change feed first: its look-up may still use the pool.
    this.#closing ??= (async () => {
      await this.#changes.close();
      this.#closed = true;
      await this.#sql.end({ timeout: 5 });
    })();
    return this.#closing;
  }
}

/**
 * Runs a statement, cancelling it on the server (a cancel request for the
 * backend running it, or its removal from the queue) when `signal` aborts,
 * so that a request whose time is up does not leave a query waiting on a
 * lock. Inside a transaction the cancelled statement rolls it back.
 *
 * @param query A statement not yet awaited.
 * @param signal The call's signal.
 * @returns The statement's rows.
 */
async function cancellable<Q extends PromiseLike<unknown>>(
  query: Q & { cancel(): unknown },
  signal: AbortSignal | undefined,
): Promise<Awaited<Q>> {
  if (signal === undefined) return await query;
  signal.throwIfAborted();
  const cancel = (): void => {
    query.cancel();
  };
  signal.addEventListener("abort", cancel, { once: true });
  try {
    return await query;
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}

/**
 * Runs `work`, turning "cannot reach the database" into
 * {@linkcode StorageUnavailableError}.
 */
async function runUnavailable<T>(
  where: string,
  retryAfterSeconds: number,
  work: () => Promise<T>,
): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw unavailable(where, retryAfterSeconds, error);
  }
}

/**
 * A {@linkcode StorageUnavailableError} for an error that means "cannot
 * reach the database right now"; any other error as it is.
 */
function unavailable(
  where: string,
  retryAfterSeconds: number,
  error: unknown,
): unknown {
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && UNAVAILABLE_CODES.has(code)) {
    return new StorageUnavailableError(
      `Cannot reach PostgreSQL at ${where} (${code})`,
      { retryAfterSeconds, cause: error },
    );
  }
  return error;
}

/** The record as the JSON value `postgres` expects for a jsonb parameter. */
function toJson(record: ModelRecord): postgres.JSONValue {
  return record as unknown as postgres.JSONValue;
}
