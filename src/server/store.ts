/**
 * On-disk storage of the local HUB.
 *
 * Layout under `dataDir`:
 *
 * ```
 * models/<id>/model.json     one JSON document per model (config, heartbeat, weights info)
 * models/<id>/metrics.jsonl  the model's metrics: one line per metrics post
 * models/<id>/last.pt        last checkpoint
 * models/<id>/best.pt        final weights
 * tmp/                       uploads in progress (emptied when a store opens)
 * ```
 *
 * Every document write goes to a temporary file that is synced and then
 * renamed over the old one, so a reader or a crash sees either the old or the
 * new document. Writes to one model run one after another (a promise-chain
 * mutex): concurrent requests never lose each other's changes.
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
 * Memory: the store caches at most {@linkcode MAX_CACHED_MODELS} models
 * (documents without metrics, plus the set of stored epoch numbers); metric
 * values are read from disk when listed.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { randomBytes, randomInt } from "node:crypto";
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  truncate,
  unlink,
} from "node:fs/promises";
import { basename, join } from "node:path";
import type {
  EpochEntry,
  ModelRecord,
  NewModel,
  StoredMetrics,
  WeightsInfo,
  WeightsKind,
} from "./storage/records.ts";
import { isModelId } from "../protocol/model_id.ts";

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

/** Most models whose documents and epoch numbers are kept in memory. */
export const MAX_CACHED_MODELS = 256;

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
  /** Epoch entries in `metrics.jsonl`, superseded ones included. */
  entries: number;
}

/** What {@linkcode readMetricsLog} found in a metrics file. */
interface MetricsLog {
  /** Metrics by epoch, the last line for an epoch winning. */
  metrics: Map<number, StoredMetrics>;
  /** Epoch entries in complete lines, superseded ones included. */
  entries: number;
  /** Byte length of the complete lines (a torn tail starts here). */
  validBytes: number;
  /** Total byte length of the file. */
  totalBytes: number;
  /** Time of the last complete line, ms since the epoch. */
  lastTime: number | undefined;
}

const METRICS_FILE = "metrics.jsonl";
const NEWLINE = 0x0a;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a metrics file. Lines that do not parse are skipped; only a torn
 * last line (no final newline) is expected, from a crash during an append.
 */
function parseMetricsLog(bytes: Uint8Array): MetricsLog {
  const metrics = new Map<number, StoredMetrics>();
  const decoder = new TextDecoder();
  let entries = 0;
  let lastTime: number | undefined;
  let start = 0;
  let validBytes = 0;
  while (start < bytes.length) {
    const end = bytes.indexOf(NEWLINE, start);
    if (end === -1) break; // torn tail
    validBytes = end + 1;
    const text = decoder.decode(bytes.subarray(start, end));
    start = end + 1;
    let line: unknown;
    try {
      line = JSON.parse(text);
    } catch {
      continue;
    }
    if (!isPlainObject(line) || !isPlainObject(line.metrics)) continue;
    if (typeof line.time === "number") lastTime = line.time;
    for (const [key, value] of Object.entries(line.metrics)) {
      const epoch = Number(key);
      if (!Number.isSafeInteger(epoch) || epoch < 0) continue;
      if (!isPlainObject(value)) continue;
      metrics.set(epoch, value as StoredMetrics);
      entries++;
    }
  }
  return { metrics, entries, validBytes, totalBytes: bytes.length, lastTime };
}

function metricsLine(
  metrics: Iterable<[number, StoredMetrics]>,
  time: number | undefined,
): string {
  const byEpoch: Record<string, StoredMetrics> = {};
  for (const [epoch, values] of metrics) byEpoch[String(epoch)] = values;
  return `${
    JSON.stringify(
      time === undefined ? { metrics: byEpoch } : {
        time,
        metrics: byEpoch,
      },
    )
  }\n`;
}

const ID_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** Creates a random 20-character model id of `[A-Za-z0-9]`. */
export function createModelId(): string {
  let id = "";
  for (let i = 0; i < 20; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

function isNotFound(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ENOENT";
}

/** Models, metrics, heartbeats and weights of one data directory. */
export class HubStore {
  /** The data directory. */
  readonly dataDir: string;
  /** Directory of uploads in progress. */
  readonly tempDir: string;
  #modelsDir: string;
  /** Least recently used first (a `Map` keeps insertion order). */
  #cache = new Map<string, CacheEntry>();
  #locks = new Map<string, Promise<void>>();

  private constructor(dataDir: string) {
    this.dataDir = dataDir;
    this.tempDir = join(dataDir, "tmp");
    this.#modelsDir = join(dataDir, "models");
  }

  /**
   * Opens (and creates) a data directory. Leftovers of interrupted uploads
   * and document writes are removed.
   *
   * @param dataDir The directory to keep everything in.
   * @returns The store.
   */
  static async open(dataDir: string): Promise<HubStore> {
    const store = new HubStore(dataDir);
    await mkdir(store.#modelsDir, { recursive: true });
    await rm(store.tempDir, { recursive: true, force: true });
    await mkdir(store.tempDir, { recursive: true });
    for (const entry of await readdir(store.#modelsDir)) {
      if (!isModelId(entry)) continue;
      let files: string[];
      try {
        files = await readdir(join(store.#modelsDir, entry));
      } catch {
        continue;
      }
      for (const file of files) {
        const path = join(store.#modelsDir, entry, file);
        if (file.endsWith(".tmp")) {
          await unlink(path).catch(() => {});
        } else if (file.endsWith(".old")) {
          // Weights moved aside by commitWeights(): put them back if a crash
          // came between the two renames, else finish deleting them.
          const target = path.replace(/\.[0-9a-f]+\.old$/, "");
          if (
            target !== path &&
            !files.includes(basename(target))
          ) {
            await rename(path, target).catch(() => {});
          } else await unlink(path).catch(() => {});
        }
      }
    }
    return store;
  }

  /** Number of models whose documents are cached (for tests). */
  get cachedModels(): number {
    return this.#cache.size;
  }

  /**
   * Path of a model's weights file.
   *
   * @param id Model id.
   * @param kind `last` or `best`.
   * @returns The absolute path.
   */
  weightsPath(id: string, kind: WeightsKind): string {
    return join(this.#modelsDir, id, `${kind}.pt`);
  }

  /**
   * Lists the ids of every model directory, soft-deleted models included
   * (their documents are kept until a hard delete): filter with
   * {@linkcode HubStore.get}, which returns `undefined` for them.
   *
   * @returns The ids, in no particular order.
   */
  async ids(): Promise<string[]> {
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
   * @returns The record (do not mutate), or `undefined`.
   */
  async get(id: string): Promise<ModelRecord | undefined> {
    const entry = await this.#entry(id);
    const record = entry?.record;
    return record === null || record === undefined ||
        record.deletedAt !== undefined
      ? undefined
      : record;
  }

  /**
   * Number of distinct epochs with stored metrics.
   *
   * @param id Model id.
   * @returns The count (0 for an unknown model).
   */
  async epochCount(id: string): Promise<number> {
    return (await this.#entry(id))?.epochs.size ?? 0;
  }

  /**
   * Reads a model's metrics from disk, sorted by epoch.
   *
   * @param id Model id.
   * @returns The epochs' metrics, or `undefined` when the model does not
   * exist.
   */
  async listMetrics(id: string): Promise<EpochEntry[] | undefined> {
    if (await this.get(id) === undefined) return undefined;
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
      .sort(([a], [b]) => a - b)
      .map(([epoch, values]) => ({ epoch, metrics: values }));
  }

  /**
   * Creates a model with a fresh id.
   *
   * @param init The model's initial fields.
   * @param now Creation time, ms since the epoch.
   * @returns The new record.
   */
  async create(init: NewModel, now: number): Promise<ModelRecord> {
    for (;;) {
      const id = createModelId();
      try {
        await mkdir(join(this.#modelsDir, id));
      } catch (error) {
        if ((error as { code?: unknown }).code === "EEXIST") continue;
        throw error;
      }
      const record: ModelRecord = {
        version: 2,
        id,
        createdAt: now,
        updatedAt: now,
        status: "new",
        name: init.name,
        dataset: init.dataset,
        architecture: init.architecture,
        ...(init.parent === undefined ? {} : { parent: init.parent }),
        config: { ...init.config },
        extra: {},
        weights: {},
        exports: [],
        downloadToken: randomBytes(16).toString("hex"),
      };
      await this.#withLock(id, async () => {
        await this.#write(record);
        this.#remember(id, { record, epochs: new Set(), entries: 0 });
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
   * @returns The updated record and `change`'s result, or `undefined` when
   * the model does not exist.
   */
  update<T>(
    id: string,
    change: (record: ModelRecord) => T | Promise<T>,
    now: number,
  ): Promise<{ record: ModelRecord; result: T } | undefined> {
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.#withLock(id, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return undefined;
      const copy = structuredClone(current);
      const result = await change(copy);
      copy.updatedAt = now;
      await this.#write(copy);
      this.#remember(id, { ...entry, record: copy });
      return { record: copy, result };
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
   * @returns The record, or `undefined` when the model does not exist.
   */
  appendMetrics(
    id: string,
    metrics: ReadonlyMap<number, StoredMetrics>,
    now: number,
  ): Promise<ModelRecord | undefined> {
    if (!isModelId(id)) return Promise.resolve(undefined);
    return this.#withLock(id, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return undefined;
      if (metrics.size === 0) return current;
      try {
        await appendSynced(this.#metricsPath(id), metricsLine(metrics, now));
      } catch (error) {
        // A partly written line is cut off when the model is loaded again.
        this.#cache.delete(id);
        throw error;
      }
      const epochs = entry.epochs;
      for (const epoch of metrics.keys()) epochs.add(epoch);
      let entries = entry.entries + metrics.size;
      let record: ModelRecord = { ...current, updatedAt: now };
      if (current.status === "new") {
        record = { ...record, status: "training" };
        await this.#write(record);
      }
      if (entries > 2 * epochs.size + 64) {
        entries = await this.#compact(id, now);
      }
      this.#remember(id, { record, epochs, entries });
      return record;
    });
  }

  /**
   * Moves an uploaded temporary file into place as a model's weights and
   * records it, under the model's lock.
   *
   * @param id Model id.
   * @param kind `last` or `best`.
   * @param tempPath The finished temporary file (deleted if the model is gone).
   * @param info What to record about the file.
   * @param now Time of the upload, ms since the epoch.
   * @returns The updated record, or `undefined` when the model does not exist.
   */
  async commitWeights(
    id: string,
    kind: WeightsKind,
    tempPath: string,
    info: WeightsInfo,
    now: number,
  ): Promise<ModelRecord | undefined> {
    let replaced: string | undefined;
    const updated = await this.update(id, async (record) => {
      const target = this.weightsPath(id, kind);
      // Renaming over a large file frees its blocks inside the rename (about
      // 0.25 s per GiB here, plus a slow next sync): move the old file aside
      // and delete it after the reply instead.
      const aside = `${target}.${randomBytes(6).toString("hex")}.old`;
      try {
        await rename(target, aside);
        replaced = aside;
      } catch {
        // nothing to replace
      }
      try {
        await rename(tempPath, target);
      } catch (error) {
        if (replaced !== undefined) {
          await rename(replaced, target).catch(() => {});
        }
        replaced = undefined;
        throw error;
      }
      record.weights[kind] = info;
      if (kind === "best") record.status = "trained";
      else if (record.status === "new") record.status = "training";
    }, now);
    if (updated === undefined) await unlink(tempPath).catch(() => {});
    if (replaced !== undefined) {
      const old = replaced;
      setTimeout(() => void unlink(old).catch(() => {}), 0);
    }
    return updated?.record;
  }

  /**
   * Deletes a model: soft (marked, kept on disk, no longer found) or hard
   * (its directory removed).
   *
   * @param id Model id.
   * @param hard Whether to remove the files.
   * @param now Time of the deletion, ms since the epoch.
   * @returns Whether the model existed.
   */
  delete(id: string, hard: boolean, now: number): Promise<boolean> {
    if (!isModelId(id)) return Promise.resolve(false);
    return this.#withLock(id, async () => {
      const entry = await this.#load(id);
      const current = entry.record;
      if (current === null || current.deletedAt !== undefined) return false;
      if (hard) {
        await rm(join(this.#modelsDir, id), { recursive: true, force: true });
        this.#cache.delete(id);
        return true;
      }
      const copy = structuredClone(current);
      copy.deletedAt = now;
      copy.updatedAt = now;
      await this.#write(copy);
      this.#remember(id, { ...entry, record: copy });
      return true;
    });
  }

  #metricsPath(id: string): string {
    return join(this.#modelsDir, id, METRICS_FILE);
  }

  /** The cached entry, or one loaded under the model's lock. */
  async #entry(id: string): Promise<CacheEntry | undefined> {
    if (!isModelId(id)) return undefined;
    const cached = this.#cache.get(id);
    if (cached !== undefined) {
      this.#remember(id, cached);
      return cached;
    }
    return await this.#withLock(id, () => this.#load(id));
  }

  /** Caches an entry as the most recently used, evicting the oldest. */
  #remember(id: string, entry: CacheEntry): void {
    this.#cache.delete(id);
    this.#cache.set(id, entry);
    while (this.#cache.size > MAX_CACHED_MODELS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
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
      return { record: null, epochs: new Set(), entries: 0 };
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
      entries: log.entries,
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
      entry.entries = merged.size;
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
    );
  }

  async #withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(id) ?? Promise.resolve();
    const run = previous.then(fn);
    const tail = run.then(() => {}, () => {});
    this.#locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(id) === tail) this.#locks.delete(id);
    }
  }
}

/** Writes a file through a synced temporary file renamed over it. */
async function writeAtomic(target: string, text: string): Promise<void> {
  const temp = `${target}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await open(temp, "wx");
  try {
    await handle.writeFile(text, "utf8");
    await handle.datasync();
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw error;
  }
  await handle.close();
  try {
    await rename(temp, target);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
}

/** Appends text to a file and syncs it before returning. */
async function appendSynced(path: string, text: string): Promise<void> {
  const handle = await open(path, "a");
  try {
    await handle.appendFile(text, "utf8");
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
