/**
 * On-disk storage of the local HUB.
 *
 * Layout under `dataDir`:
 *
 * ```
 * models/<id>/model.json   one JSON document per model (metrics, heartbeat, weights info)
 * models/<id>/last.pt      last checkpoint
 * models/<id>/best.pt      final weights
 * tmp/                     uploads in progress (emptied when a store opens)
 * ```
 *
 * Every document write goes to a temporary file that is synced and then
 * renamed over the old one, so a reader or a crash sees either the old or the
 * new document. Writes to one model run one after another (a promise-chain
 * mutex): concurrent requests never lose each other's changes.
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
  unlink,
} from "node:fs/promises";
import { join } from "node:path";
import type { ModelStatus } from "../types.ts";

/** Training configuration as the create payload's `config` carries it. */
export interface StoredConfig {
  /** Batch size; `-1` lets the trainer choose. */
  batchSize: number;
  /** Number of epochs. */
  epochs: number;
  /** Image size in pixels. */
  imageSize: number;
  /** Early-stopping patience in epochs. */
  patience: number;
  /** Device string. */
  device: string;
  /** Cache mode. */
  cache: string;
}

/** One epoch's metrics; `null` stands for a value sent as NaN/Infinity. */
export type StoredMetrics = Record<string, number | null>;

/** What the store knows about a weights file. */
export interface WeightsInfo {
  /** Epoch the file was uploaded for. */
  epoch: number;
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256 of the file. */
  sha256: string;
  /** Upload time, ms since the epoch. */
  uploadedAt: number;
  /** For `last.pt`: whether the checkpoint was the best so far. */
  isBest?: boolean;
  /** For `best.pt`: the mAP sent with the final upload. */
  map?: number;
}

/** The last heartbeat of a model's training agent. */
export interface HeartbeatInfo {
  /** Server-assigned agent id. */
  agentId: string;
  /** The agent's self-description, e.g. `python-3.11.4-local`. */
  agent: string;
  /** Time of the last beat, ms since the epoch. */
  lastSeen: number;
}

/** One recorded export request. */
export interface ExportRequest {
  /** Requested format, e.g. `onnx`. */
  format: string;
  /** Request time, ms since the epoch. */
  requestedAt: number;
}

/** Everything the store keeps about one model (the `model.json` content). */
export interface ModelRecord {
  /** Document format version. */
  version: 1;
  /** Model id (20 characters of `[A-Za-z0-9]`). */
  id: string;
  /** Creation time, ms since the epoch. */
  createdAt: number;
  /** Last change, ms since the epoch. */
  updatedAt: number;
  /** Soft-deletion time; a soft-deleted model is not found any more. */
  deletedAt?: number;
  /** Training status. */
  status: ModelStatus;
  /** Display name (`meta.name`). */
  name: string;
  /** Dataset name or URL (`dataset.name`), `""` when missing. */
  dataset: string;
  /** Architecture name without extension (`lineage.architecture.name`). */
  architecture: string;
  /** Parent weights name (`lineage.parent.name`), when pretrained. */
  parent?: string;
  /** Training configuration. */
  config: StoredConfig;
  /** Further fields set through `PATCH`. */
  extra: Record<string, unknown>;
  /** Metrics by epoch number (as a string key). */
  metrics: Record<string, StoredMetrics>;
  /** Last heartbeat, if any. */
  heartbeat?: HeartbeatInfo;
  /** Stored weights files. */
  weights: { last?: WeightsInfo; best?: WeightsInfo };
  /** Export requests, oldest first. */
  exports: ExportRequest[];
  /** Per-model token that lets weight URLs be downloaded without a key. */
  downloadToken: string;
}

/** The fields a new model starts from. */
export type NewModel =
  & Pick<
    ModelRecord,
    "name" | "dataset" | "architecture" | "config"
  >
  & { parent?: string | undefined };

/** Name of a stored weights file. */
export type WeightsKind = "last" | "best";

const ID_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ID_PATTERN = /^[A-Za-z0-9]{1,64}$/;

/** Creates a random 20-character model id of `[A-Za-z0-9]`. */
export function createModelId(): string {
  let id = "";
  for (let i = 0; i < 20; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

/** Whether a string can be a model id of this store (also guards paths). */
export function isModelId(id: string): boolean {
  return ID_PATTERN.test(id);
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
  #cache = new Map<string, ModelRecord | null>();
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
        if (file.endsWith(".tmp")) {
          await unlink(join(store.#modelsDir, entry, file)).catch(() => {});
        }
      }
    }
    return store;
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
   * Reads a model; soft-deleted and unknown models are `undefined`.
   *
   * @param id Model id.
   * @returns The record (do not mutate), or `undefined`.
   */
  async get(id: string): Promise<ModelRecord | undefined> {
    if (!isModelId(id)) return undefined;
    const record = await this.#load(id);
    return record === null || record.deletedAt !== undefined
      ? undefined
      : record;
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
        version: 1,
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
        metrics: {},
        weights: {},
        exports: [],
        downloadToken: randomBytes(16).toString("hex"),
      };
      await this.#withLock(id, async () => {
        await this.#write(record);
        this.#cache.set(id, record);
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
      const current = await this.#load(id);
      if (current === null || current.deletedAt !== undefined) return undefined;
      const copy = structuredClone(current);
      const result = await change(copy);
      copy.updatedAt = now;
      await this.#write(copy);
      this.#cache.set(id, copy);
      return { record: copy, result };
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
    const updated = await this.update(id, async (record) => {
      await rename(tempPath, this.weightsPath(id, kind));
      record.weights[kind] = info;
      if (kind === "best") record.status = "trained";
      else if (record.status === "new") record.status = "training";
    }, now);
    if (updated === undefined) await unlink(tempPath).catch(() => {});
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
      const current = await this.#load(id);
      if (current === null || current.deletedAt !== undefined) return false;
      if (hard) {
        await rm(join(this.#modelsDir, id), { recursive: true, force: true });
        this.#cache.set(id, null);
        return true;
      }
      const copy = structuredClone(current);
      copy.deletedAt = now;
      copy.updatedAt = now;
      await this.#write(copy);
      this.#cache.set(id, copy);
      return true;
    });
  }

  async #load(id: string): Promise<ModelRecord | null> {
    const cached = this.#cache.get(id);
    if (cached !== undefined) return cached;
    let text: string;
    try {
      text = await readFile(join(this.#modelsDir, id, "model.json"), "utf8");
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
    const record = JSON.parse(text) as ModelRecord;
    // Another request may have loaded it meanwhile: keep the first copy.
    const again = this.#cache.get(id);
    if (again !== undefined) return again;
    this.#cache.set(id, record);
    return record;
  }

  async #write(record: ModelRecord): Promise<void> {
    const dir = join(this.#modelsDir, record.id);
    const target = join(dir, "model.json");
    const temp = join(dir, `model.json.${randomBytes(6).toString("hex")}.tmp`);
    const handle = await open(temp, "wx");
    try {
      await handle.writeFile(JSON.stringify(record), "utf8");
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
