/**
 * Model documents and metrics as files: the {@linkcode ModelStore} of the
 * embedded HUB.
 *
 * Layout under `dataDir`:
 *
 * ```
 * models/<id>/model.json     one JSON document per model (config, heartbeat, weights info)
 * models/<id>/metrics.jsonl  the model's metrics: one line per metrics post
 * ```
 *
 * Every document write goes to a temporary file that is synced, renamed over
 * the old one, and the directory synced, so a reader or a crash sees either
 * the old or the new document and a resolved write is durable. Writes to one
 * model run one after another (a promise-chain mutex): concurrent requests
 * never lose each other's changes. The document is the commit point of a
 * weights upload: it names the blob (`WeightsInfo.blob`) that is served.
 *
 * Metrics are appended, not rewritten: a metrics post appends one line
 * `{"time": <ms>, "metrics": {"<epoch>": {...}}}` to `metrics.jsonl` and syncs
 * it before it is acknowledged, so its cost does not grow with the number of
 * stored epochs (rewriting `model.json` with every epoch made a post O(n) and
 * a run O(n²)). The last line for an epoch wins. A line torn by a crash was
 * never acknowledged: it is ignored when read and cut off before the next
 * append. When superseded entries (re-sent epochs) outnumber the live ones,
 * the file is compacted by an atomic rewrite. Documents written by earlier
 * versions, with metrics inside `model.json`, are migrated on first load.
 *
 * Memory: the store caches at most {@linkcode MAX_CACHED_MODELS} models and
 * at most {@linkcode MAX_CACHED_BYTES} of documents (documents without
 * metrics, plus the set of stored epoch numbers); metric values are read from
 * disk when listed.
 *
 * The format of `metrics.jsonl` (parse, line, names) is in `metrics_log.ts`.
 * Over 500 lines on purpose: the rest is one class whose per-model lock,
 * bounded cache, migration of old documents and compaction all work on the
 * same cache entries; apart, each would need the others' private state.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import {
  mkdir,
  readdir,
  readFile,
  rm,
  truncate,
  unlink,
} from "node:fs/promises";
import { join } from "node:path";
import { checkMetricsUsage } from "../contract.ts";
import type {
  CallOptions,
  GetOptions,
  ListOptions,
  MetricsListOptions,
  ModelStore,
  Page,
} from "../contract.ts";
import {
  createModelId,
  type EpochEntry,
  type ModelRecord,
  namesOf,
  type NewModel,
  newModelRecord,
  type StoredMetrics,
} from "../records.ts";
import { isModelId } from "../../../protocol/model_id.ts";
import {
  METRICS_FILE,
  metricsLine,
  type MetricsLog,
  parseMetricsLog,
} from "./metrics_log.ts";
import { appendSynced, syncDir, writeAtomic } from "./fs.ts";
import { inTurn } from "../turns.ts";

/** Most models whose documents and epoch numbers are kept in memory. */
export const MAX_CACHED_MODELS = 256;

/**
 * Most bytes of cached documents (their JSON length, plus 16 bytes per
 * cached epoch number): 64 MiB.
 */
export const MAX_CACHED_BYTES: number = 64 * 1024 * 1024;

/** A version 1 document: metrics inside `model.json`. */
type LegacyRecord = Omit<ModelRecord, "version"> & {
  version: 1 | 2;
  metrics?: Record<string, StoredMetrics>;
};

interface CacheEntry {
  /** The document; `null` when the model does not exist. */
  record: ModelRecord | null;
  /** Epoch numbers stored in `metrics.jsonl`. */
  epochs: Set<number>;
  /** Distinct metric names over all stored epochs. */
  names: Set<string>;
  /** Epoch entries in `metrics.jsonl`, superseded ones included. */
  entries: number;
  /** Memory the entry stands for, as counted against the byte bound. */
  bytes?: number | undefined;
}

function isNotFound(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ENOENT";
}

/**
 * Model documents and metrics of one data directory.
 *
 * @example Create a model and store an epoch
 * ```ts
 * import { FileModelStore } from "./models.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "models-"));
 * const store = await FileModelStore.open(dataDir);
 * const config = {
 *   batchSize: 16, epochs: 3, imageSize: 640, patience: 100,
 *   device: "cpu", cache: "ram",
 * };
 * const model = await store.create(
 *   { name: "m", dataset: "coco8", architecture: "yolo11n", config },
 *   Date.now(),
 * );
 * await store.upsertMetrics(model.id, new Map([[0, { loss: 1 }]]), Date.now());
 * console.log(await store.epochCount(model.id)); // 1
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 */
/** What one metric name is counted for in the cache's byte bound. */
function nameCost(name: string): number {
  return 32 + name.length * 2;
}

export class FileModelStore implements ModelStore {
  /** The data directory. */
  readonly dataDir: string;
  readonly kind = "files";
  #modelsDir: string;
  /** Least recently used first (a `Map` keeps insertion order). */
  #cache = new Map<string, CacheEntry>();
  #cachedBytes = 0;
  #locks = new Map<string, Promise<void>>();
  #maxCachedBytes: number;

  private constructor(dataDir: string, maxCachedBytes: number) {
    this.dataDir = dataDir;
    this.#modelsDir = join(dataDir, "models");
    this.#maxCachedBytes = maxCachedBytes;
  }

  /**
   * Opens (and creates) a data directory. Leftovers of interrupted document
   * writes are removed.
   *
   * @param dataDir The directory to keep everything in.
   * @param options `maxCachedBytes`: bound of the document cache
   * (default {@linkcode MAX_CACHED_BYTES}).
   * @returns The store.
   */
  static async open(
    dataDir: string,
    options: { maxCachedBytes?: number | undefined } = {},
  ): Promise<FileModelStore> {
    const store = new FileModelStore(
      dataDir,
      options.maxCachedBytes ?? MAX_CACHED_BYTES,
    );
    await mkdir(store.#modelsDir, { recursive: true });
    for (const entry of await readdir(store.#modelsDir)) {
      if (!isModelId(entry)) continue;
      let files: string[];
      try {
        files = await readdir(join(store.#modelsDir, entry));
      } catch {
        continue;
      }
      for (const file of files) {
        if (file.endsWith(".tmp")) {
          await unlink(join(store.#modelsDir, entry, file)).catch(() => {});
        }
      }
    }
    return store;
  }

  /** Number of models whose documents are cached (for tests). */
  get cachedModels(): number {
    return this.#cache.size;
  }

  /** Bytes the cached documents stand for (for tests). */
  get cachedBytes(): number {
    return this.#cachedBytes;
  }

  /**
   * Directory of a model's files (for the migration of older layouts).
   *
   * @param id Model id.
   * @returns The absolute path.
   */
  modelDir(id: string): string {
    if (!isModelId(id)) throw new TypeError(`Cannot use "${id}" as a model id`);
    return join(this.#modelsDir, id);
  }

  /**
   * Lists the ids of the models that exist (not soft-deleted), ascending.
   *
   * @param options Page size (default 100), cursor (the last id of the
   * previous page).
   * @returns One page.
   */
  async listIds(options: ListOptions = {}): Promise<Page<string>> {
    const { limit = 100, cursor } = options;
    options.signal?.throwIfAborted();
    const all = (await this.#allIds()).sort();
    const items: string[] = [];
    let i = cursor === undefined ? 0 : all.findIndex((id) => id > cursor);
    if (i === -1) i = all.length;
    for (; i < all.length && items.length < limit; i++) {
      if (await this.get(all[i]!) !== undefined) items.push(all[i]!);
    }
    return { items, next: i < all.length ? items.at(-1) : undefined };
  }

  async #allIds(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.#modelsDir);
    } catch (error) {
      if (isNotFound(error)) return [];
      throw error;
    }
    return entries.filter(isModelId);
  }

  /**
   * Reads a model; soft-deleted and unknown models are `undefined`.
   *
   * @param id Model id.
   * @param options `includeDeleted` also returns a soft-deleted model's
   * document (the collector needs to know its blobs are still referenced).
   * @returns The record (do not mutate), or `undefined`.
   */
  async get(
    id: string,
    options: GetOptions = {},
  ): Promise<ModelRecord | undefined> {
    const entry = await this.#entry(id, options.signal);
    const record = entry?.record;
    return record === null || record === undefined ||
        (record.deletedAt !== undefined && options.includeDeleted !== true)
      ? undefined
      : record;
  }

  /**
   * Number of distinct epochs with stored metrics.
   *
   * @param id Model id.
   * @param options Signal: stops waiting for the model's lock (file reads
   * are not interrupted).
   * @returns The count (0 for an unknown model).
   */
  async epochCount(id: string, options: CallOptions = {}): Promise<number> {
    return (await this.#entry(id, options.signal))?.epochs.size ?? 0;
  }

  /**
   * Reads a model's metrics from disk, sorted by epoch.
   *
   * @param id Model id.
   * @param options Range of epochs (`afterEpoch`, `limit`), signal.
   * @returns The epochs' metrics, or `undefined` when the model does not
   * exist.
   */
  async listMetrics(
    id: string,
    options: MetricsListOptions = {},
  ): Promise<EpochEntry[] | undefined> {
    const { afterEpoch = -1, limit = Infinity, signal } = options;
    if (await this.get(id, { signal }) === undefined) return undefined;
    let bytes: Uint8Array;
    try {
      bytes = await readFile(this.#metricsPath(id));
    } catch (error) {
      if (isNotFound(error)) return [];
      throw error;
    }
    // A line still being appended has no newline yet and is skipped.
    const { metrics } = parseMetricsLog(bytes);
    return [...metrics]
      .filter(([epoch]) => epoch > afterEpoch)
      .sort(([a], [b]) => a - b)
      .slice(0, limit)
      .map(([epoch, values]) => ({ epoch, metrics: values }));
  }

  /**
   * Creates a model with a fresh id.
   *
   * @param init The model's initial fields.
   * @param now Creation time, ms since the epoch.
   * @param options Signal, checked before anything is written.
   * @returns The new record.
   */
  async create(
    init: NewModel,
    now: number,
    options: CallOptions = {},
  ): Promise<ModelRecord> {
    options.signal?.throwIfAborted();
    for (;;) {
      const id = createModelId();
      try {
        await mkdir(join(this.#modelsDir, id));
      } catch (error) {
        if ((error as { code?: unknown }).code === "EEXIST") continue;
        throw error;
      }
      await syncDir(this.#modelsDir);
      const record = newModelRecord(id, init, now);
      await this.#withLock(id, undefined, async () => {
        await this.#write(record);
        this.#remember(id, {
          record,
          epochs: new Set(),
          names: new Set(),
          entries: 0,
        });
      });
      return record;
    }
  }

  /**
   * Changes a model under its lock and writes it atomically.
   *
   * `change` receives a private copy; it may throw to cancel the update.
   *
   * @param id Model id.
   * @param change Mutates the copy (or returns a value to pass through).
   * @param now Time of the change, ms since the epoch.
   * @param options Signal: stops waiting for the model's lock; once the
   * change runs it completes.
   * @returns The updated record and `change`'s result, or `undefined` when
   * the model does not exist.
   */
  update<T>(
    id: string,
    change: (record: ModelRecord) => T | Promise<T>,
    now: number,
    options: CallOptions = {},
  ): Promise<{ record: ModelRecord; result: T } | undefined> {
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.#withLock(id, options.signal, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return undefined;
      const copy = structuredClone(current);
      const result = await change(copy);
      copy.updatedAt = now;
      await this.#write(copy);
      this.#remember(id, { ...entry, record: copy, bytes: undefined });
      return { record: copy, result };
    });
  }

  /**
   * Changes a document as it is, soft-deleted or not, without touching
   * `updatedAt` (for migrations of the stored format).
   *
   * @param id Model id.
   * @param change Mutates the copy.
   * @returns Whether the model's document exists.
   */
  annotate(
    id: string,
    change: (record: ModelRecord) => void,
  ): Promise<boolean> {
    if (!isModelId(id)) return Promise.resolve(false);
    return this.#withLock(id, undefined, async () => {
      const entry = await this.#load(id);
      if (entry.record === null) return false;
      const copy = structuredClone(entry.record);
      change(copy);
      await this.#write(copy);
      this.#remember(id, { ...entry, record: copy, bytes: undefined });
      return true;
    });
  }

  /**
   * Stores epochs' metrics (replacing earlier values of the same epochs):
   * appends them to the model's metrics file and syncs it. A model still
   * `new` becomes `training`.
   *
   * @param id Model id.
   * @param metrics Metrics by epoch.
   * @param now Time of the post, ms since the epoch.
   * @param options Signal: stops waiting for the model's lock; once the
   * append runs it completes.
   * @returns The record, or `undefined` when the model does not exist.
   */
  upsertMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    now: number,
    options: CallOptions = {},
  ): Promise<ModelRecord | undefined> {
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.#withLock(id, options.signal, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return undefined;
      if (metrics.size === 0) return current;
      let added = 0;
      for (const epoch of metrics.keys()) if (!entry.epochs.has(epoch)) added++;
      // Only the names this post adds: the model's set grows in place below.
      const fresh = new Set<string>();
      for (const values of metrics.values()) {
        for (const name of Object.keys(values)) {
          if (!entry.names.has(name)) fresh.add(name);
        }
      }
      checkMetricsUsage({
        epochs: entry.epochs.size + added,
        names: entry.names.size + fresh.size,
      });
      try {
        await appendSynced(this.#metricsPath(id), metricsLine(metrics, now), {
          mayCreate: entry.entries === 0,
        });
      } catch (error) {
        // A partly written line is cut off when the model is loaded again.
        this.#forget(id);
        throw error;
      }
      const epochs = entry.epochs;
      const before = epochs.size;
      for (const epoch of metrics.keys()) epochs.add(epoch);
      const names = entry.names;
      let nameBytes = 0;
      for (const name of fresh) {
        names.add(name);
        nameBytes += nameCost(name);
      }
      const bytes = entry.bytes === undefined
        ? undefined
        : entry.bytes + 16 * (epochs.size - before) + nameBytes;
      let entries = entry.entries + metrics.size;
      let record: ModelRecord = { ...current, updatedAt: now };
      if (current.status === "new") {
        record = { ...record, status: "training" };
        await this.#write(record);
      }
      if (entries > 2 * epochs.size + 64) {
        entries = await this.#compact(id, now);
      }
      this.#remember(id, { record, epochs, names, entries, bytes });
      return record;
    });
  }

  /**
   * Deletes a model: soft (marked, kept on disk, no longer found) or hard
   * (its directory removed).
   *
   * @param id Model id.
   * @param hard Whether to remove the files.
   * @param now Time of the deletion, ms since the epoch.
   * @param options Signal: stops waiting for the model's lock.
   * @returns Whether the model existed.
   */
  delete(
    id: string,
    hard: boolean,
    now: number,
    options: CallOptions = {},
  ): Promise<boolean> {
    if (!isModelId(id)) return Promise.resolve(false);
    return this.#withLock(id, options.signal, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return false;
      if (hard) {
        await rm(join(this.#modelsDir, id), { recursive: true, force: true });
        await syncDir(this.#modelsDir);
        this.#forget(id);
        return true;
      }
      const copy = structuredClone(current);
      copy.deletedAt = now;
      copy.updatedAt = now;
      await this.#write(copy);
      this.#remember(id, { ...entry, record: copy, bytes: undefined });
      return true;
    });
  }

  /** Nothing to release: every write is complete when it resolves. @returns At once. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  #metricsPath(id: string): string {
    return join(this.#modelsDir, id, METRICS_FILE);
  }

  /** The cached entry, or one loaded under the model's lock. */
  async #entry(
    id: string,
    signal?: AbortSignal | undefined,
  ): Promise<CacheEntry | undefined> {
    signal?.throwIfAborted();
    if (!isModelId(id)) return undefined;
    const cached = this.#cache.get(id);
    if (cached !== undefined) {
      this.#remember(id, cached);
      return cached;
    }
    return await this.#withLock(id, signal, () => this.#load(id));
  }

  /**
   * Caches an entry as the most recently used, evicting the least recently
   * used ones beyond {@linkcode MAX_CACHED_MODELS} models or the byte bound.
   * An entry alone larger than the byte bound is not cached.
   */
  #remember(id: string, entry: CacheEntry): void {
    this.#forget(id);
    let bytes = entry.bytes;
    if (bytes === undefined) {
      // Measured once per load; posts then add what they add.
      bytes =
        (entry.record === null ? 0 : JSON.stringify(entry.record).length) +
        16 * entry.epochs.size;
      for (const name of entry.names) bytes += nameCost(name);
      entry.bytes = bytes;
    }
    if (bytes > this.#maxCachedBytes) return;
    this.#cache.set(id, entry);
    this.#cachedBytes += bytes;
    while (
      this.#cache.size > MAX_CACHED_MODELS ||
      this.#cachedBytes > this.#maxCachedBytes
    ) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#forget(oldest);
    }
  }

  #forget(id: string): void {
    const entry = this.#cache.get(id);
    if (entry === undefined) return;
    this.#cache.delete(id);
    this.#cachedBytes -= entry.bytes ?? 0;
  }

  /**
   * Loads a model (call under its lock): the document, and the epochs of its
   * metrics file, whose torn tail, if any, is cut off. A version 1 document
   * has its metrics moved to the metrics file.
   */
  async #load(id: string): Promise<CacheEntry> {
    const cached = this.#cache.get(id);
    if (cached !== undefined) return cached;
    const dir = join(this.#modelsDir, id);
    let text: string;
    try {
      text = await readFile(join(dir, "model.json"), "utf8");
    } catch (error) {
      if (!isNotFound(error)) throw error;
      // Not cached: a missing model is looked up again next time.
      return { record: null, epochs: new Set(), names: new Set(), entries: 0 };
    }
    const stored = JSON.parse(text) as LegacyRecord;
    const { metrics: legacy, ...rest } = stored;
    let record: ModelRecord = { ...rest, version: 2 };
    let log: MetricsLog;
    try {
      log = parseMetricsLog(await readFile(this.#metricsPath(id)));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      log = {
        metrics: new Map(),
        entries: 0,
        validBytes: 0,
        totalBytes: 0,
        lastTime: undefined,
      };
    }
    if (log.validBytes < log.totalBytes) {
      await truncate(this.#metricsPath(id), log.validBytes);
    }
    if (log.lastTime !== undefined && log.lastTime > record.updatedAt) {
      record = { ...record, updatedAt: log.lastTime };
    }
    const entry: CacheEntry = {
      record,
      epochs: new Set(log.metrics.keys()),
      names: namesOf(log.metrics.values()),
      entries: log.entries,
      bytes: undefined,
    };
    if (legacy !== undefined || stored.version !== 2) {
      // Version 1: metrics lived in model.json. The metrics file (newer
      // entries win) is rewritten with all of them before model.json drops
      // them, so a crash in between loses nothing.
      const merged = new Map<number, StoredMetrics>();
      for (const [key, value] of Object.entries(legacy ?? {})) {
        merged.set(Number(key), value);
      }
      for (const [epoch, value] of log.metrics) merged.set(epoch, value);
      await this.#writeMetrics(id, merged, record.updatedAt);
      await this.#write(record);
      entry.epochs = new Set(merged.keys());
      entry.names = namesOf(merged.values());
      entry.entries = merged.size;
      entry.bytes = undefined;
    }
    this.#remember(id, entry);
    return entry;
  }

  /** Rewrites the metrics file without superseded entries (under lock). */
  async #compact(id: string, now: number): Promise<number> {
    const log = parseMetricsLog(await readFile(this.#metricsPath(id)));
    await this.#writeMetrics(id, log.metrics, now);
    return log.metrics.size;
  }

  /** Atomically replaces the metrics file, one line per epoch. */
  async #writeMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    time: number,
  ): Promise<void> {
    const lines = [...metrics]
      .sort(([a], [b]) => a - b)
      .map(([epoch, values]) => metricsLine([[epoch, values]], time));
    await writeAtomic(this.#metricsPath(id), lines.join(""));
  }

  async #write(record: ModelRecord): Promise<void> {
    await writeAtomic(
      join(this.#modelsDir, record.id, "model.json"),
      JSON.stringify(record),
      { document: true },
    );
  }

  #withLock<T>(
    id: string,
    signal: AbortSignal | undefined,
    fn: () => Promise<T>,
  ): Promise<T> {
    return inTurn(this.#locks, id, fn, signal);
  }
}
