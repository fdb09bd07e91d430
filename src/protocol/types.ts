/**
 * Public data types shared by the client, the session and the local server.
 *
 * @module
 */

/** Training status of a model on the HUB. */
export type ModelStatus = "new" | "training" | "trained";

/** The training arguments a HUB stores for a model. */
export interface TrainArgs {
  /** Batch size; `-1` lets the trainer choose. */
  batch?: number;
  /** Number of epochs. */
  epochs?: number;
  /** Image size in pixels. */
  imgsz?: number;
  /** Epochs without improvement before stopping early. */
  patience?: number;
  /** Device, e.g. `0`, `"0,1"` or `"cpu"`; `""` lets the trainer choose. */
  device?: string | number;
  /** Dataset cache mode, e.g. `"ram"`, `"disk"` or `false`. */
  cache?: string | boolean;
  /** Dataset URL or name. */
  data?: string;
  /** Whether training resumes from the last checkpoint. */
  resume?: boolean;
  /** Any further argument the trainer understands. */
  [name: string]: unknown;
}

/**
 * The model document a HUB answers to `GET /v1/models/{id}` (`data`).
 *
 * Fields follow the v1 wire protocol; a server may send more.
 */
export interface ModelDocument {
  /** Model id (20 characters). */
  id: string;
  /** Training status. */
  status: ModelStatus;
  /** Dataset URL; missing or empty while the dataset is still processing. */
  data?: string;
  /** Architecture file, e.g. `yolov8n.yaml`. */
  cfg?: string;
  /** URL of the best or parent weights. */
  weights?: string;
  /** URL of the last checkpoint. */
  resume?: string;
  /** A checkpoint exists: training can resume. */
  has_last_weights?: boolean;
  /** Final (best) weights exist. */
  has_best_weights?: boolean;
  /** The model starts from pretrained parent weights. */
  is_pretrained?: boolean;
  /** The model is a custom one. */
  is_custom?: boolean;
  /** The training arguments stored by the server. */
  train_args?: TrainArgs;
  /** Batch size (top-level copy of the config). */
  batch_size?: number;
  /** Epochs (top-level copy of the config). */
  epochs?: number;
  /** Image size (top-level copy of the config). */
  imgsz?: number;
  /** Patience (top-level copy of the config). */
  patience?: number;
  /** Device (top-level copy of the config). */
  device?: string;
  /** Cache mode (top-level copy of the config). */
  cache?: string;
  /** Any further field the server sends. */
  [field: string]: unknown;
}

/** The payload of `POST /v1/models`, exactly as the protocol defines it. */
export interface CreateModelPayload {
  /** Training configuration. */
  config: {
    batchSize: number;
    epochs: number;
    imageSize: number;
    patience: number;
    device: string;
    cache: string;
  };
  /** Dataset reference. */
  dataset: { name: string | undefined };
  /** Architecture and (for `.pt` files) parent weights. */
  lineage: {
    architecture: { name: string };
    parent: { name?: string };
  };
  /** Display metadata. */
  meta: { name: string };
}

/** One epoch's metrics: a flat map of metric name to value. */
export type EpochMetrics = Record<string, number>;

/** An epoch's stored metrics as `GET /v1/models/{id}/metrics` lists them. */
export interface StoredEpochMetrics {
  /** Epoch number. */
  epoch: number;
  /**
   * The metrics of that epoch; `null` where the trainer sent a value JSON
   * cannot carry (NaN, Infinity).
   */
  metrics: Record<string, number | null>;
}

/** Progress of a request body: bytes handed to the network so far. */
export interface UploadProgress {
  /** Body bytes sent so far in this attempt. */
  loaded: number;
  /** Total body bytes, when known. */
  total: number | undefined;
}

/** Receives upload progress; errors it throws are isolated and logged once. */
export type ProgressCallback = (progress: UploadProgress) => void;

/**
 * Where the library writes its messages. Each method receives one finished
 * line without the `HUB: ` prefix; API keys never appear in it.
 */
export interface Logger {
  /** Routine progress, e.g. the model URL. */
  info(message: string): void;
  /** Something went wrong but work continues. */
  warn(message: string): void;
  /** Something failed and was not recovered. */
  error(message: string): void;
  /**
   * Details for whoever debugs a run, e.g. what was skipped for want of a
   * Deno permission; optional.
   */
  debug?(message: string): void;
}
