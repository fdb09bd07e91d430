/**
 * The server's view of its storage: a {@linkcode HubStorage} (documents +
 * metrics, and weights, chosen independently) plus the weights commit and
 * the collection of blobs no document references.
 *
 * A weights upload is committed in this order, and only then acknowledged:
 *
 * 1. the body streams into a blob writer (invisible, hashed on the way);
 * 2. `finish()` checks the client's sha256, makes the blob durable and
 *    publishes it under `<model id>/<sha256>`;
 * 3. the model's document is updated to name that key and sha256: the single
 *    commit point. A crash before it leaves the previous document, whose
 *    blob is untouched; a crash after it leaves the new one, complete;
 * 4. after the reply, the blob the commit replaced is deleted unless the
 *    document still names it (`last` and `best` may be the same bytes):
 *    one read of the document and one delete, no listing. A crash at any
 *    instant leaves at most an unreferenced blob, never a document naming
 *    a missing or different file.
 *
 * Unreferenced blobs left by a crash (or by another process) are found by a
 * sweep that lists every blob: when the store opens, and, when the backends
 * are shared ({@linkcode HubStorage.orphanGraceMs} above 0), once every
 * grace period while it runs. A commit that failed after its blob was
 * published has the model's blobs listed and collected at once.
 *
 * Steps 2-4 of one model run under a per-model gate, so the collector never
 * sees a blob that is published but not yet committed in this process.
 * Another process may be committing the same bytes under the same content
 * address (`<model id>/<sha256>`; its `finish()` refreshed the blob's time),
 * so an unreferenced blob younger than {@linkcode HubStorage.orphanGraceMs}
 * under a content address is left to a later sweep; a replaced blob under a
 * key of its own upload (S3 multipart) is deleted at once.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { unrefTimer } from "../common/timers.ts";
import { crashPoint } from "./storage/crash_point.ts";
import type {
  BlobRead,
  BlobStore,
  BlobWriter,
  ByteRange,
  HubStorage,
  ModelStore,
} from "./storage/contract.ts";
import type {
  EpochEntry,
  ModelRecord,
  NewModel,
  StoredMetrics,
  WeightsInfo,
  WeightsKind,
} from "./storage/records.ts";
import { openFileStorage } from "./storage/files/mod.ts";
import { inTurn } from "./storage/turns.ts";

export type {
  EpochEntry,
  ExportRequest,
  HeartbeatInfo,
  ModelRecord,
  NewModel,
  StoredConfig,
  StoredMetrics,
  WeightsInfo,
  WeightsKind,
} from "./storage/records.ts";

/** Default {@linkcode HubStorage.orphanGraceMs}: 10 minutes. */
const DEFAULT_ORPHAN_GRACE_MS = 600_000;

/** Options of {@linkcode HubStore.open}. */
export interface HubStoreOptions {
  /**
   * Stops the periodic sweep of unreferenced blobs (the server's close).
   * Without it the sweep's timer does not keep the process alive.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** What every view of one store shares (see {@linkcode HubStore.withSignal}). */
interface SharedState {
  storage: HubStorage;
  gates: Map<string, Promise<void>>;
  collecting: Set<Promise<void>>;
  /** The periodic sweep, while one runs. */
  sweeping?: Promise<void> | undefined;
}

/** Models, metrics, heartbeats and weights, over a {@linkcode HubStorage}. */
/** The blob keys a model's document names (none without a document). */
function blobsNamedBy(record: ModelRecord | undefined): Set<string> {
  const keys = new Set<string>();
  for (const info of Object.values(record?.weights ?? {})) {
    if (info?.blob !== undefined) keys.add(info.blob);
  }
  return keys;
}

export class HubStore {
  /** Documents and metrics. */
  readonly models: ModelStore;
  /** Weights. */
  readonly weights: BlobStore;
  #graceMs: number;
  #shared: SharedState;
  #gates: Map<string, Promise<void>>;
  #collecting: Set<Promise<void>>;
  #signal: AbortSignal | undefined;

  private constructor(
    shared: SharedState,
    signal: AbortSignal | undefined,
  ) {
    const { storage } = shared;
    this.models = storage.models;
    this.weights = storage.weights;
    this.#graceMs = storage.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS;
    this.#shared = shared;
    this.#gates = shared.gates;
    this.#collecting = shared.collecting;
    this.#signal = signal;
  }

  /**
   * The same store, whose calls for a request pass `signal` to the
   * backends and stop waiting for a model's gate when it aborts (the
   * request's time limit). Collection after a commit is not tied to it.
   *
   * @param signal The request's signal.
   * @returns A view sharing this store's state.
   */
  withSignal(signal: AbortSignal | undefined): HubStore {
    return signal === this.#signal ? this : new HubStore(this.#shared, signal);
  }

  /**
   * Opens a store over given backends, or the file store of a data
   * directory, and collects unreferenced blobs; on shared backends it
   * collects them again once every {@linkcode HubStorage.orphanGraceMs}.
   *
   * @param storage Documents+metrics and weights, or a data directory.
   * @param options Signal that stops the periodic collection.
   * @returns The store.
   */
  static async open(
    storage: HubStorage | string,
    options: HubStoreOptions = {},
  ): Promise<HubStore> {
    if (typeof storage === "string") return await HubStore.openFiles(storage);
    const store = new HubStore({
      storage,
      gates: new Map(),
      collecting: new Set(),
    }, undefined);
    await store.collectAll();
    store.#sweepEvery(options.signal);
    return store;
  }

  /**
   * Opens the embedded file store of a data directory.
   *
   * @param dataDir The data directory.
   * @returns The store.
   */
  static async openFiles(dataDir: string): Promise<HubStore> {
    return await HubStore.open(await openFileStorage(dataDir));
  }

  /**
   * Lists the ids of every model that exists (not soft-deleted).
   *
   * @returns The ids, ascending.
   */
  async ids(): Promise<string[]> {
    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.models.listIds({
        cursor,
        limit: 1000,
        signal: this.#signal,
      });
      ids.push(...page.items);
      cursor = page.next;
    } while (cursor !== undefined);
    return ids;
  }

  /**
   * Reads a model; soft-deleted and unknown models are `undefined`.
   *
   * @param id Model id.
   * @returns The record (do not mutate), or `undefined`.
   */
  get(id: string): Promise<ModelRecord | undefined> {
    return this.models.get(id, { signal: this.#signal });
  }

  /**
   * Number of distinct epochs with stored metrics.
   *
   * @param id Model id.
   * @returns The count (0 for an unknown model).
   */
  epochCount(id: string): Promise<number> {
    return this.models.epochCount(id, { signal: this.#signal });
  }

  /**
   * Reads a model's metrics, ascending by epoch.
   *
   * @param id Model id.
   * @param options `afterEpoch` and `limit`.
   * @returns The epochs, or `undefined` when the model does not exist.
   */
  listMetrics(
    id: string,
    options?: { afterEpoch?: number; limit?: number },
  ): Promise<EpochEntry[] | undefined> {
    return this.models.listMetrics(id, { ...options, signal: this.#signal });
  }

  /**
   * Creates a model with a fresh id.
   *
   * @param init Its initial fields.
   * @param now Creation time, ms since the epoch.
   * @returns The new record.
   */
  create(init: NewModel, now: number): Promise<ModelRecord> {
    return this.models.create(init, now, { signal: this.#signal });
  }

  /**
   * Changes a model atomically (see `DocumentStore.update`).
   *
   * @param id Model id.
   * @param change Mutates the copy, without side effects.
   * @param now Time of the change.
   * @returns The record and `change`'s result, or `undefined`.
   */
  update<T>(
    id: string,
    change: (record: ModelRecord) => T,
    now: number,
  ): Promise<{ record: ModelRecord; result: T } | undefined> {
    return this.models.update(id, change, now, { signal: this.#signal });
  }

  /**
   * Upserts epochs' metrics.
   *
   * @param id Model id.
   * @param metrics Metrics by epoch.
   * @param now Time of the post.
   * @returns The record, or `undefined` when the model does not exist.
   */
  appendMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    now: number,
  ): Promise<ModelRecord | undefined> {
    return this.models.upsertMetrics(id, metrics, now, {
      signal: this.#signal,
    });
  }

  /**
   * Deletes a model; a hard deletion also deletes its blobs.
   *
   * @param id Model id.
   * @param hard Whether to remove the data.
   * @param now Time of the deletion.
   * @returns Whether the model existed.
   */
  delete(id: string, hard: boolean, now: number): Promise<boolean> {
    const signal = this.#signal;
    return this.#gate(id, async () => {
      const existed = await this.models.delete(id, hard, now, { signal });
      // The document is gone: its blobs go too, whatever the signal says.
      if (existed && hard) await this.#collect(id, true);
      return existed;
    }, signal);
  }

  /**
   * Starts receiving weights for a model.
   *
   * @param id Model id.
   * @param options Size limit, signal (default: the request's, see
   * {@linkcode withSignal}).
   * @returns A writer to hand to {@linkcode commitWeights} (or abort).
   */
  createWeightsWriter(
    id: string,
    options: { maxBytes?: number; signal?: AbortSignal | undefined } = {},
  ): Promise<BlobWriter> {
    return this.weights.createWriter(`${id}/`, {
      ...options,
      // The request's signal, unless the caller gives its own.
      signal: options.signal ?? this.#signal,
    });
  }

  /**
   * Publishes received weights and records them in the model's document,
   * the commit point; the writer is aborted if anything fails before.
   * Resolves once both are durable.
   *
   * @param id Model id.
   * @param kind `last` or `best`.
   * @param writer The writer holding the bytes.
   * @param expectedSha256 The client's sha256, checked before publishing.
   * @param info What to record (its `sha256`, `size` and `blob` are taken
   * from the blob).
   * @param now Time of the upload.
   * @returns The updated record, or `undefined` when the model is gone.
   */
  async commitWeights(
    id: string,
    kind: WeightsKind,
    writer: BlobWriter,
    expectedSha256: string | undefined,
    info: Omit<WeightsInfo, "sha256" | "size" | "blob">,
    now: number,
  ): Promise<ModelRecord | undefined> {
    const signal = this.#signal;
    const updated = await this.#gate(id, async () => {
      const blob = await writer.finish(expectedSha256);
      const result = await this.models.update(
        id,
        (record) => {
          const replaced = record.weights[kind];
          record.weights[kind] = {
            ...info,
            size: blob.size,
            sha256: blob.sha256,
            blob: blob.key,
          };
          if (kind === "best") record.status = "trained";
          else if (record.status === "new") record.status = "training";
          return replaced;
        },
        now,
        { signal },
      );
      if (result === undefined) {
        // The model went away during the upload: nothing names the blob,
        // unless a soft-deleted document holds the same bytes.
        const kept = await this.models.get(id, { includeDeleted: true });
        if (!blobsNamedBy(kept).has(blob.key)) {
          await this.weights.delete(blob.key);
        }
      }
      await crashPoint("committed");
      return result;
    }, signal).catch(async (error) => {
      await writer.abort();
      // A blob published before the document write failed (or the
      // request's time ran out) is named by nothing: collect it now rather
      // than on the next open.
      this.#scheduleCollect(id, () => this.#collect(id, false));
      throw error;
    });
    const replaced = updated?.result;
    const key = replaced?.blob;
    if (key !== undefined && key !== updated?.record.weights[kind]?.blob) {
      this.#scheduleCollect(id, () => this.#collectReplaced(id, replaced!));
    }
    return updated?.record;
  }

  /**
   * Opens the weights a model's document names.
   *
   * @param info The document's weights entry.
   * @param range Bytes to read, or the whole file.
   * @returns The read, or `undefined` when the blob is missing.
   */
  async readWeights(
    info: WeightsInfo,
    range?: ByteRange,
  ): Promise<BlobRead | undefined> {
    if (info.blob === undefined) return undefined;
    return await this.weights.read(info.blob, { range, signal: this.#signal });
  }

  /**
   * Deletes the blobs no document references, for every model with blobs
   * (one listing of every blob, then one per model with blobs).
   *
   * @returns When done.
   */
  async collectAll(): Promise<void> {
    const ids = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await this.weights.list("", { cursor, limit: 1000 });
      for (const blob of page.items) ids.add(blob.key.split("/")[0]!);
      cursor = page.next;
    } while (cursor !== undefined);
    for (const id of ids) {
      await this.#gate(id, () => this.#collect(id, false));
    }
  }

  /**
   * Waits for collections started after replies (for tests and shutdown).
   *
   * @returns When none is running.
   */
  async settled(): Promise<void> {
    while (this.#collecting.size > 0 || this.#shared.sweeping !== undefined) {
      await Promise.allSettled([...this.#collecting, this.#shared.sweeping]);
    }
  }

  /** Sweeps once every grace period while the backends are shared. */
  #sweepEvery(signal: AbortSignal | undefined): void {
    if (this.#graceMs <= 0 || signal?.aborted === true) return;
    const shared = this.#shared;
    const timer = setInterval(() => {
      shared.sweeping ??= this.collectAll().catch((error) => {
        console.error("HUB: Cannot collect unreferenced weights", error);
      }).finally(() => {
        shared.sweeping = undefined;
      });
    }, this.#graceMs);
    unrefTimer(timer);
    signal?.addEventListener("abort", () => clearInterval(timer), {
      once: true,
    });
  }

  /** Runs `collect` under the model's gate after the reply. */
  #scheduleCollect(id: string, collect: () => Promise<void>): void {
    const run = (async (): Promise<void> => {
      // After the reply: a crash here leaves an unreferenced blob only.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await crashPoint("collect");
      await this.#gate(id, collect);
    })().catch((error) => {
      console.error(`HUB: Cannot collect unreferenced weights of ${id}`, error);
    }).finally(() => this.#collecting.delete(run));
    this.#collecting.add(run);
  }

  /**
   * Deletes the blob a commit replaced, unless the document names it again
   * or it sits at a content address another process may be committing
   * (call under the model's gate).
   */
  async #collectReplaced(id: string, replaced: WeightsInfo): Promise<void> {
    const key = replaced.blob;
    if (key === undefined) return;
    const record = await this.models.get(id, { includeDeleted: true });
    // No document: hard-deleted, and its deletion collects the blobs.
    if (record === undefined) return;
    if (blobsNamedBy(record).has(key)) return;
    if (key === `${id}/${replaced.sha256}` && this.#graceMs > 0) {
      const blob = await this.weights.stat(key);
      if (blob === undefined) return;
      if (blob.modifiedAt > Date.now() - this.#graceMs) return; // to a sweep
    }
    await this.weights.delete(key);
  }

  /** Deletes a model's unreferenced blobs (call under its gate). */
  async #collect(id: string, all: boolean): Promise<void> {
    const record = all
      ? undefined
      : await this.models.get(id, { includeDeleted: true });
    // No document: a model hard-deleted by a process that died before
    // deleting its blobs, or a soft-deleted one of a backend that does not
    // return those. Leaving the blobs only costs space; guessing wrong
    // would lose weights.
    if (!all && record === undefined) return;
    const keep = blobsNamedBy(record);
    const cutoff = Date.now() - (all ? 0 : this.#graceMs);
    let cursor: string | undefined;
    const doomed: string[] = [];
    do {
      const page = await this.weights.list(`${id}/`, { cursor, limit: 1000 });
      for (const blob of page.items) {
        if (!keep.has(blob.key) && blob.modifiedAt <= cutoff) {
          doomed.push(blob.key);
        }
      }
      cursor = page.next;
    } while (cursor !== undefined);
    for (const key of doomed) await this.weights.delete(key);
  }

  #gate<T>(
    id: string,
    fn: () => Promise<T>,
    signal?: AbortSignal | undefined,
  ): Promise<T> {
    return inTurn(this.#gates, id, fn, signal);
  }
}
