/**
 * The records the HUB's storage keeps: a model's document, one epoch's
 * metrics, what is known about a stored weights file. Shared by every storage
 * implementation (files, PostgreSQL, S3) and by the server.
 *
 * @module
 */

import type { ModelStatus } from "../../protocol/types.ts";

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
