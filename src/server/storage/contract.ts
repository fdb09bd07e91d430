/**
 * The storage contract of the HUB: what the server needs from the place that
 * keeps models, and nothing about how it is kept.
 *
 * Three parts, in two independently chosen implementations:
 *
 * - {@linkcode ModelStore} = {@linkcode DocumentStore} (one JSON document per
 *   model) + {@linkcode MetricsStore} (per-epoch metrics keyed by
 *   `(model, epoch)`). Files under a data directory, or PostgreSQL.
 * - {@linkcode BlobStore}: the weights files, immutable and
 *   content-addressed. Files under a data directory, or S3-compatible object
 *   storage.
 *
 * The server takes `{ models, weights }` ({@linkcode HubStorage}) and never
 * looks below these interfaces.
 *
 * ## What "acknowledged" means
 *
 * A method that resolves has made its change durable: it survives the
 * process being killed (SIGKILL) and, for the file store, the machine losing
 * power after the promise resolved (file and directory are fsynced; for a
 * database, the transaction committed; for S3, the PUT or
 * CompleteMultipartUpload answered 200). The server replies with success only
 * after such a promise resolved, so every acknowledged write is durable. A
 * method that rejects, or a process that dies before the method resolved,
 * leaves either the old state or the new state, never a mix.
 *
 * ## How weights are committed
 *
 * 1. The upload is streamed into a {@linkcode BlobWriter} from
 *    {@linkcode BlobStore.createWriter}. Nothing is visible under any key
 *    while it is written.
 * 2. {@linkcode BlobWriter.finish} checks the sha256 (when the client sent
 *    one), makes the bytes durable and visible under a key it returns:
 *    `<prefix><sha256>` (a content address) where the backend can publish
 *    under a name chosen at the end, else `<prefix>` and a name unique to
 *    this upload (S3 multipart uploads: renaming would copy the data). Either
 *    way the bytes under a key never change, so a reader of a key always
 *    gets the bytes it names.
 * 3. {@linkcode DocumentStore.update} records the key and the sha256 in the
 *    model's document. That write is the single commit point: before it, the
 *    document (and so every reader) describes the previous weights, whose
 *    blob is still there; after it, the new ones.
 * 4. Blobs no document references any more are collected afterwards (see
 *    {@linkcode BlobStore.delete}). A crash before collection leaves an
 *    unreferenced blob, never a missing one.
 *
 * ## Unavailable backends
 *
 * A method that cannot reach its backend (database restarting, S3
 * unreachable, connection pool exhausted) rejects with
 * {@linkcode StorageUnavailableError}; the server answers `503` with
 * `Retry-After: <retryAfterSeconds>`, and the client retries. Any other
 * rejection is a server error (500).
 *
 * @example A storage pair for the server
 * ```ts
 * import type { HubStorage } from "./contract.ts";
 *
 * function describe(storage: HubStorage): string {
 *   return `models in ${storage.models.kind}, weights in ${storage.weights.kind}`;
 * }
 * ```
 *
 * @module
 */

import type {
  EpochEntry,
  ModelRecord,
  NewModel,
  StoredMetrics,
} from "./records.ts";

export type {
  EpochEntry,
  ModelRecord,
  NewModel,
  StoredMetrics,
} from "./records.ts";
export {
  BlobChecksumError,
  checkMetricsUsage,
  type MetricsUsage,
  ModelLimitError,
  StorageUnavailableError,
} from "./errors.ts";

/** Options every storage call accepts. */
export interface CallOptions {
  /**
   * Aborts the call: a read stops, a write still waiting (for a lock, a
   * connection, a running statement) is cancelled. A write aborted before it
   * resolved may or may not have taken effect (as with a crash: old or new
   * state, never a mix): once its commit started, it completes. The server
   * passes the signal of the request's time limit.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** Options of a paginated listing. */
export interface ListOptions extends CallOptions {
  /**
   * Most items in one page; implementations may return fewer.
   *
   * @default {100}
   */
  limit?: number | undefined;
  /**
   * Where to continue: the `next` of the previous page; `undefined` starts at
   * the beginning.
   *
   * @default {undefined}
   */
  cursor?: string | undefined;
}

/** One page of a listing. */
export interface Page<T> {
  /** The items of this page, in the listing's order. */
  items: T[];
  /**
   * Cursor of the next page; `undefined` when this page is the last. Opaque:
   * pass it back as {@linkcode ListOptions.cursor} unchanged.
   */
  next: string | undefined;
}

/** Options of {@linkcode DocumentStore.get}. */
export interface GetOptions extends CallOptions {
  /**
   * Also return a soft-deleted model's document.
   *
   * @default {false}
   */
  includeDeleted?: boolean | undefined;
}

/**
 * Model documents: one JSON document per model, read and replaced whole.
 *
 * Documents are small by construction: the server bounds the size of their
 * free-form fields before it writes them.
 */
export interface DocumentStore {
  /** Short name of the implementation for logs, e.g. `files`, `postgres`. */
  readonly kind: string;

  /**
   * Lists the ids of the models that exist and are not soft-deleted, in a
   * stable order (ascending id), one page at a time. A model created or
   * deleted while listing may or may not appear; no id appears twice.
   *
   * @param options Page size, cursor, signal.
   * @returns One page of ids.
   */
  listIds(options?: ListOptions): Promise<Page<string>>;

  /**
   * Reads a model's document.
   *
   * @param id Model id.
   * @param options Signal; `includeDeleted` also returns a soft-deleted
   * model's document (its blobs are still referenced and must not be
   * collected).
   * @returns The document (do not mutate), or `undefined` for an unknown or
   * soft-deleted model (and for a string that cannot be an id).
   */
  get(id: string, options?: GetOptions): Promise<ModelRecord | undefined>;

  /**
   * Creates a model with a fresh, unique id (20 characters of
   * `[A-Za-z0-9]`), status `new`, no weights, no metrics.
   *
   * @param init The model's initial fields.
   * @param now Creation time, ms since the epoch.
   * @param options Signal.
   * @returns The new document, durable when the promise resolves.
   */
  create(
    init: NewModel,
    now: number,
    options?: CallOptions,
  ): Promise<ModelRecord>;

  /**
   * Atomically changes one model's document (read, change, write), isolated
   * from every other change of the same model, including changes through
   * another server process on the same backend: two concurrent updates
   * never lose each other's changes. `change` receives a private copy, may
   * be called more than once (a backend may retry it on a conflict) and so
   * must not have side effects; it may throw to cancel the update (the
   * error is passed through and nothing is written). `updatedAt` is set to
   * `now`.
   *
   * @param id Model id.
   * @param change Mutates the copy; its result is passed through.
   * @param now Time of the change, ms since the epoch.
   * @param options Signal.
   * @returns The written document and `change`'s result, durable when the
   * promise resolves, or `undefined` when the model does not exist.
   */
  update<T>(
    id: string,
    change: (record: ModelRecord) => T,
    now: number,
    options?: CallOptions,
  ): Promise<{ record: ModelRecord; result: T } | undefined>;

  /**
   * Deletes a model. Soft: marked `deletedAt`, no longer found by `get` or
   * `listIds`, kept in the backend. Hard: its document and metrics removed;
   * the server then deletes its blobs (prefix `<id>/`).
   *
   * @param id Model id.
   * @param hard Whether to remove the data.
   * @param now Time of the deletion, ms since the epoch.
   * @param options Signal.
   * @returns Whether the model existed (and was not already soft-deleted).
   */
  delete(
    id: string,
    hard: boolean,
    now: number,
    options?: CallOptions,
  ): Promise<boolean>;
}

/** Options of {@linkcode MetricsStore.listMetrics}. */
export interface MetricsListOptions extends CallOptions {
  /**
   * Only epochs greater than this one.
   *
   * @default {-1}
   */
  afterEpoch?: number | undefined;
  /**
   * Most epochs returned.
   *
   * @default {Infinity}
   */
  limit?: number | undefined;
}

/**
 * Per-epoch metrics, keyed by `(model, epoch)`.
 *
 * Values are what the server validated: finite numbers, or `null` for a
 * value sent as NaN/Infinity. The server bounds the number and length of the
 * metric names and the size of one epoch before calling.
 */
export interface MetricsStore {
  /**
   * Upserts epochs' metrics: an epoch sent again replaces the stored one
   * (the epoch is the idempotency key). All epochs of one call are stored
   * together or not at all. Rejects with {@linkcode ModelLimitError}, storing
   * nothing, when the model would then hold more than
   * `MAX_EPOCHS_PER_MODEL` epochs or `MAX_METRIC_NAMES_PER_MODEL` distinct
   * metric names (`protocol/metrics_rules.ts`). A model whose status is `new` becomes
   * `training` in the same atomic step, and its `updatedAt` becomes `now`.
   *
   * @param id Model id.
   * @param metrics Metrics by epoch (non-negative safe integers).
   * @param now Time of the post, ms since the epoch.
   * @param options Signal.
   * @returns The model's document after the change, durable with the metrics
   * when the promise resolves, or `undefined` when the model does not exist.
   */
  upsertMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    now: number,
    options?: CallOptions,
  ): Promise<ModelRecord | undefined>;

  /**
   * Reads a model's metrics in ascending epoch order.
   *
   * @param id Model id.
   * @param options Range of epochs, signal.
   * @returns The epochs, or `undefined` when the model does not exist.
   */
  listMetrics(
    id: string,
    options?: MetricsListOptions,
  ): Promise<EpochEntry[] | undefined>;

  /**
   * Number of distinct epochs with stored metrics.
   *
   * @param id Model id.
   * @param options Signal.
   * @returns The count; 0 for an unknown model.
   */
  epochCount(id: string, options?: CallOptions): Promise<number>;
}

/** A change of a model, as {@linkcode ModelStore.watch} reports it. */
export interface ModelChange {
  /** The model's id. */
  id: string;
  /**
   * What changed. The changes found by the look-up after a reconnection
   * are `updated` or `deleted` (a hard deletion while deaf is not found).
   */
  kind: "created" | "updated" | "metrics" | "deleted";
}

/** Documents and metrics, always kept by the same backend. */
export interface ModelStore extends DocumentStore, MetricsStore {
  /**
   * Releases connections and handles. Calls after `close()` reject.
   *
   * @returns When everything is released.
   */
  close(): Promise<void>;

  /**
   * Calls `listener` for the changes of any model committed through any
   * process sharing this store, from when it resolves. Only stores that
   * several processes share have it (PostgreSQL); a store one process owns
   * hears its changes through that process.
   *
   * @param listener Receives each change.
   * @returns Stops watching.
   */
  watch?(
    listener: (change: ModelChange) => void,
  ): Promise<() => Promise<void>>;
}

/** A blob as stored. */
export interface BlobInfo {
  /** Its key, as {@linkcode BlobWriter.finish} returned it. */
  key: string;
  /** Size in bytes. */
  size: number;
  /** Last time the key was written, ms since the epoch. */
  modifiedAt: number;
}

/** A blob just written by {@linkcode BlobWriter.finish}. */
export interface StoredBlob {
  /**
   * Its key: the writer's prefix followed by `sha256`, or by a name unique
   * to this upload (see {@linkcode BlobWriter.finish}). Record this key.
   */
  key: string;
  /** Lowercase hex sha256 of the bytes, computed while they streamed in. */
  sha256: string;
  /** Size in bytes. */
  size: number;
}

/** Options of {@linkcode BlobStore.createWriter}. */
export interface BlobWriterOptions extends CallOptions {
  /**
   * Most bytes the blob may have; a write beyond it rejects with a
   * `RangeError` and the writer is aborted.
   *
   * @default {Infinity}
   */
  maxBytes?: number | undefined;
}

/**
 * A blob being written. Bytes go to a place no reader sees (a temporary
 * file, an S3 multipart upload under a temporary key) and become visible
 * only in {@linkcode BlobWriter.finish}. Memory stays flat: implementations
 * buffer at most a fixed amount (e.g. one S3 part) whatever the size.
 *
 * Exactly one of `finish()` or `abort()` must be called; until then the
 * writer may hold a file handle or an open multipart upload.
 */
export interface BlobWriter {
  /** Bytes written so far. */
  readonly size: number;

  /**
   * Appends bytes. The returned promise is the backpressure: wait for it
   * before writing more. The chunk may be reused by the caller once the
   * promise resolved.
   *
   * @param chunk The next bytes.
   * @returns When the bytes are handed to the backend.
   */
  write(chunk: Uint8Array): Promise<void>;

  /**
   * Completes the blob: checks `expectedSha256` (lowercase hex) when given,
   * makes the bytes durable, and publishes them atomically (the key holds
   * all of the bytes or does not exist) under `<prefix><sha256>`, or under
   * `<prefix>` and a name unique to this upload where publishing under a
   * name chosen at the end would copy the data (S3 multipart uploads). When
   * a content address already exists it holds the same bytes, and it stays
   * (its `modifiedAt` is refreshed so a collector's grace period restarts).
   * On a checksum mismatch it rejects with {@linkcode BlobChecksumError},
   * nothing is published, and the writer is aborted.
   *
   * @param expectedSha256 The client's sha256, if it sent one.
   * @returns The published blob.
   */
  finish(expectedSha256?: string): Promise<StoredBlob>;

  /**
   * Drops everything written; nothing becomes visible. Never rejects; safe
   * to call after `finish()` failed and more than once.
   *
   * @returns When the temporary data is gone.
   */
  abort(): Promise<void>;
}

/** A byte range, both ends inclusive, as in `Range: bytes=start-end`. */
export interface ByteRange {
  /** First byte. */
  start: number;
  /** Last byte (inclusive), at most `size - 1`. */
  end: number;
}

/** Options of {@linkcode BlobStore.read}. */
export interface BlobReadOptions extends CallOptions {
  /**
   * Only these bytes. The caller has checked the range against the blob's
   * size (from the document or {@linkcode BlobStore.stat}); a range outside
   * the blob rejects with a `RangeError`.
   *
   * @default {undefined}
   */
  range?: ByteRange | undefined;
}

/** An open blob read. */
export interface BlobRead {
  /** The bytes (the range only, when one was asked), streamed. */
  body: ReadableStream<Uint8Array>;
  /** Size of the whole blob in bytes. */
  size: number;
  /** The range this body holds. */
  range: ByteRange;
  /**
   * Local file holding the blob, when there is one (the file store), so a
   * runtime can send it with `sendfile` (Bun's `Bun.file`). The body must
   * then be cancelled by the caller if it uses the path instead.
   */
  localPath?: string | undefined;
}

/**
 * Weights and other immutable blobs, by key.
 *
 * Keys are `/`-separated segments of `[A-Za-z0-9._-]` not starting with a
 * dot; the server writes under `<model id>/` and records the key
 * {@linkcode BlobWriter.finish} returns.
 */
export interface BlobStore {
  /** Short name of the implementation for logs, e.g. `files`, `s3`. */
  readonly kind: string;

  /**
   * Starts writing a blob that will be published under `<prefix>` (see
   * {@linkcode BlobWriter.finish} for the rest of the key).
   *
   * @param prefix Key prefix, e.g. `<model id>/`.
   * @param options Size limit, signal (aborting it aborts the writer).
   * @returns The writer.
   */
  createWriter(
    prefix: string,
    options?: BlobWriterOptions,
  ): Promise<BlobWriter>;

  /**
   * Opens a blob for reading, streamed.
   *
   * @param key The blob's key.
   * @param options Byte range, signal.
   * @returns The read, or `undefined` when no blob has the key.
   */
  read(key: string, options?: BlobReadOptions): Promise<BlobRead | undefined>;

  /**
   * Describes a blob.
   *
   * @param key The blob's key.
   * @param options Signal.
   * @returns Its size and time, or `undefined` when no blob has the key.
   */
  stat(key: string, options?: CallOptions): Promise<BlobInfo | undefined>;

  /**
   * Lists blobs whose key starts with `prefix`, one page at a time, in
   * ascending key order.
   *
   * @param prefix Key prefix, e.g. `<model id>/`.
   * @param options Page size, cursor, signal.
   * @returns One page of blobs.
   */
  list(prefix: string, options?: ListOptions): Promise<Page<BlobInfo>>;

  /**
   * Deletes a blob; deleting a missing key succeeds. Called by the server
   * only for blobs no document references, and only when no commit that
   * could reference the key is in flight: in the same process it tracks
   * its own finished-but-uncommitted writers; blobs modified less than
   * {@linkcode HubStorage.orphanGraceMs} ago are never collected, which
   * covers writers of other processes.
   *
   * @param key The blob's key.
   * @param options Signal.
   * @returns When the blob is gone.
   */
  delete(key: string, options?: CallOptions): Promise<void>;

  /**
   * Releases connections and handles.
   *
   * @returns When everything is released.
   */
  close(): Promise<void>;
}

/** What the server is given: documents+metrics and weights, chosen apart. */
export interface HubStorage {
  /** Model documents and metrics. */
  models: ModelStore;
  /** Weights files. */
  weights: BlobStore;
  /**
   * Unreferenced blobs younger than this are never collected: the time a
   * commit may take between {@linkcode BlobWriter.finish} in one process and
   * the document write. `0` is right only when one process owns the blobs
   * (the embedded file store).
   *
   * @default {600000}
   */
  orphanGraceMs?: number | undefined;
}
