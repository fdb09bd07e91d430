/**
 * The records the HUB's storage keeps: a model's document, one epoch's
 * metrics, what is known about a stored weights file. Shared by every storage
 * implementation (files, PostgreSQL, S3) and by the server.
 *
 * @module
 */

import { randomBytes, randomInt } from "node:crypto";
import type { CreateModelPayload, ModelStatus } from "../../protocol/types.ts";

/**
 * Training configuration as the create payload's `config` carries it (batch
 * size, `-1` letting the trainer choose; epochs; image size; patience;
 * device; cache mode).
 */
export type StoredConfig = CreateModelPayload["config"];

/** One epoch's metrics; `null` stands for a value sent as NaN/Infinity. */
export type StoredMetrics = Record<string, number | null>;

/**
 * The distinct metric names of some epochs.
 *
 * @param values The epochs' metrics.
 * @returns The names.
 */
export function namesOf(values: Iterable<StoredMetrics>): Set<string> {
  const names = new Set<string>();
  for (const metrics of values) {
    for (const name of Object.keys(metrics)) names.add(name);
  }
  return names;
}

/** What the store knows about a weights file. */
export interface WeightsInfo {
  /** Epoch the file was uploaded for. */
  epoch: number;
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256 of the file. */
  sha256: string;
  /**
   * Key of the file in the weights store (`BlobStore` of `contract.ts`), e.g.
   * `<model id>/<sha256>`. Missing in documents written before weights were
   * content-addressed (the file store migrates them when it loads them).
   */
  blob?: string;
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
  /** Document format version (1 kept metrics inside `model.json`). */
  version: 2;
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

/** One epoch's stored metrics. */
export interface EpochEntry {
  /** Epoch number. */
  epoch: number;
  /** The epoch's metrics. */
  metrics: StoredMetrics;
}

const ID_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/**
 * Creates a random 20-character model id of `[A-Za-z0-9]`.
 *
 * @returns The id.
 *
 * @example A fresh id
 * ```ts
 * import { createModelId } from "./records.ts";
 *
 * console.log(createModelId().length); // 20
 * ```
 */
export function createModelId(): string {
  let id = "";
  for (let i = 0; i < 20; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

/**
 * The document of a model just created, the same on every backend: status
 * `new`, no weights, no exports, a fresh download token.
 *
 * @param id The new model's id.
 * @param init Its initial fields.
 * @param now Creation time, ms since the epoch.
 * @returns The document.
 *
 * @example Start a model
 * ```ts
 * import { createModelId, newModelRecord } from "./records.ts";
 *
 * const record = newModelRecord(createModelId(), {
 *   name: "yolov8n.pt",
 *   dataset: "coco8.yaml",
 *   architecture: "yolov8n",
 *   config: {
 *     batchSize: -1,
 *     epochs: 3,
 *     imageSize: 640,
 *     patience: 100,
 *     device: "",
 *     cache: "ram",
 *   },
 * }, Date.now());
 * console.log(record.status); // "new"
 * ```
 */
export function newModelRecord(
  id: string,
  init: NewModel,
  now: number,
): ModelRecord {
  return {
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
}
