/**
 * {@linkcode HUBTrainingSession}: opens (or creates) a model on a HUB, keeps
 * the server told that the trainer is alive, streams per-epoch metrics,
 * uploads checkpoints and the final weights, and loses none of it to a flaky
 * network.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { stat } from "node:fs/promises";
import {
  HUBClient,
  type UploadModelOptions,
  type UploadResult,
} from "../transport/client.ts";
import { sha256File } from "../common/hash.ts";
import { unrefTimer } from "../common/timers.ts";
import { readEnv, resolveConfig } from "./config.ts";
import type { ConfigOptions } from "./config.ts";
import { HUBError, HUBModelError, HUBRequestError } from "../common/errors.ts";
import { Heartbeat } from "./heartbeat.ts";
import { defaultJournalRoot, journalDir, MetricsJournal } from "./journal.ts";
import { parseIdentifier } from "./identifier.ts";
import { consoleLogger, redactingLogger } from "../common/logger.ts";
import { MetricsQueue } from "./metrics_queue.ts";
import { CheckpointUploader } from "./checkpoints.ts";
import type { CheckpointOutcome } from "./checkpoints.ts";
import { createProgressBar } from "./progress.ts";
import { RequestQueue } from "./request_runner.ts";
import type { RequestBudget, RequestKind } from "./request_runner.ts";
import type {
  CreateModelPayload,
  EpochMetrics,
  Logger,
  ModelDocument,
  ProgressCallback,
  TrainArgs,
} from "../protocol/types.ts";

export type { CheckpointOutcome } from "./checkpoints.ts";

/** Minimum time between two uploads of each kind, in milliseconds. */
export interface RateLimits {
  /** Between two metrics uploads. @default {3000} */
  metrics: number;
  /** Between two checkpoint uploads. @default {900000} */
  ckpt: number;
  /** Between two heartbeats. @default {300000} */
  heartbeat: number;
}

/** The default {@linkcode RateLimits}: those the hosted HUB expected. */
export const DEFAULT_RATE_LIMITS: Readonly<RateLimits> = Object.freeze({
  metrics: 3_000,
  ckpt: 900_000,
  heartbeat: 300_000,
});

/** What the session needs from a HUB: one transport per wire protocol. */
export type SessionTransport = Pick<
  HUBClient,
  "getModel" | "createModel" | "uploadMetrics" | "uploadModel" | "heartbeat"
>;

/** Options for {@linkcode HUBTrainingSession.create}. */
export interface SessionOptions extends ConfigOptions {
  /** `fetch` to use, e.g. to route through a proxy. @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** Aborts every request of the session. @default {undefined} */
  signal?: AbortSignal;
  /**
   * Where messages go; `"quiet"` drops them. Lines never contain the API key.
   *
   * @default {console, with the "HUB: " prefix}
   */
  logger?: Logger | "quiet";
  /** Minimum time between uploads, in milliseconds. @default {DEFAULT_RATE_LIMITS} */
  rateLimits?: Partial<RateLimits>;
  /**
   * Attempts, overall deadline and per-attempt timeout for each kind of
   * request, in milliseconds.
   *
   * @default {metrics 3 in 30 s, checkpoint 10 in 1 h, final 10 in 1 h}
   */
  budgets?: Partial<Record<RequestKind, Partial<RequestBudget>>>;
  /**
   * Backoff between attempts, with the option names of `@std/async`'s retry.
   *
   * @default {{ minTimeout: 1000, maxTimeout: 60000, multiplier: 2, jitter: 1 }}
   */
  backoff?: {
    minTimeout?: number;
    maxTimeout?: number;
    multiplier?: number;
    jitter?: number;
  };
  /** Time limit of one ordinary request, in milliseconds. @default {30000} */
  timeout?: number;
  /** Send heartbeats while the session is open. @default {true} */
  heartbeat?: boolean;
  /**
   * Transport to talk to the HUB with, instead of a {@linkcode HUBClient}
   * built from the other options.
   *
   * @default {undefined}
   */
  transport?: SessionTransport;
  /**
   * Root directory of the crash-safe journal (one directory per server and
   * model), or `false` to keep unacknowledged metrics in memory only.
   *
   * @default {defaultJournalRoot(): the OS cache directory's hub-session/journal}
   */
  journal?: string | false;
  /**
   * Work without the server: metrics, checkpoints and the final weights go
   * to the journal, to be delivered later with `syncJournal()`. A session
   * whose server cannot be reached when it opens goes offline by itself
   * when a journal is enabled.
   *
   * @default {false}
   */
  offline?: boolean;
}

/** Options for {@linkcode HUBTrainingSession.uploadModel}. */
export interface UploadModelCallOptions {
  /** The checkpoint is the best model so far. @default {false} */
  isBest?: boolean;
  /** Mean average precision of the final model. @default {0} */
  map?: number;
  /** Upload the final weights (awaited) rather than a checkpoint. @default {false} */
  final?: boolean;
  /** Ignore the checkpoint rate limit. @default {false} */
  force?: boolean;
  /**
   * Upload progress of the final weights; by default a progress bar is drawn
   * when standard error is a terminal.
   *
   * @default {undefined}
   */
  onProgress?: ProgressCallback;
  /** Aborts this upload. @default {undefined} */
  signal?: AbortSignal;
}

/** What the final upload delivered. */
export interface FinalUploadResult {
  /** Path of the file that was sent (`last.pt` when `best.pt` was missing). */
  path: string;
  /** The weights were kept in the journal (offline) rather than uploaded. */
  deferred: boolean;
  /** Bytes of the file. */
  size: number;
  /** SHA-256 of the file, lowercase hex. */
  sha256: string;
}

/** What a metrics upload did. */
export interface MetricsUploadResult {
  /** Epochs the server acknowledged in this upload. */
  sent: number[];
  /** Epochs still waiting after this upload. */
  pending: number[];
  /** Why the upload failed, when it did; the epochs stay queued. */
  error?: HUBError;
}

/** What {@linkcode HUBTrainingSession.flush} and `close()` report. */
export interface FlushReport {
  /** Everything queued was delivered or given up on before the timeout. */
  settled: boolean;
  /** Epochs the server never acknowledged. */
  pendingEpochs: number[];
  /** Checkpoint uploads that failed, with their errors. */
  failedUploads: Array<{ epoch: number; error: HUBError }>;
  /** Requests still in flight when the report was made. */
  pendingRequests: number;
}

/** Options for {@linkcode HUBTrainingSession.flush} and `close()`. */
export interface FlushOptions {
  /** How long to wait for queued work, in milliseconds. @default {30000} */
  timeout?: number;
}

const DEFAULT_FLUSH_TIMEOUT = 30_000;

function checkRateLimits(limits: RateLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (typeof value !== "number" || !(value >= 0) || value === Infinity) {
      throw new RangeError(
        `Cannot use rate limit "${name}" of ${value}: pass a finite number of milliseconds >= 0`,
      );
    }
  }
}

function toHUBError(error: unknown, what: string): HUBError {
  if (error instanceof HUBError) return error;
  return new HUBError(
    `${what}: ${error instanceof Error ? error.message : String(error)}`,
    {
      cause: error,
    },
  );
}

/**
 * A training session on one HUB model.
 *
 * Open it with {@linkcode HUBTrainingSession.create}; during training call
 * {@linkcode HUBTrainingSession.queueMetrics} at the end of each epoch and
 * {@linkcode HUBTrainingSession.uploadModel} after each checkpoint save; at
 * the end upload the final weights and {@linkcode HUBTrainingSession.close}.
 *
 * @example Train against the local HUB
 * ```ts
 * import { HUBTrainingSession } from "./session.ts";
 * import { serveHub } from "../server/mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const hub = await serveHub({ port: 0, dataDir });
 * const session = await HUBTrainingSession.create("yolov8n.yaml", {
 *   apiRoot: hub.url,
 *   webRoot: hub.url,
 *   settingsFile: false,
 *   logger: "quiet",
 * });
 * await session.createModel({ data: "coco8.yaml", epochs: 2 });
 * session.queueMetrics(0, { "train/loss": 1.2 });
 * session.queueMetrics(1, { "train/loss": 0.9 });
 * const report = await session.close();
 * console.assert(report.pendingEpochs.length === 0);
 * await hub.close();
 * await rm(dataDir, { recursive: true });
 * ```
 */
export class HUBTrainingSession {
  #transport: SessionTransport;
  #logger: Logger;
  #queue: RequestQueue;
  #metrics = new MetricsQueue();
  #checkpoints: CheckpointUploader;
  #heartbeat: Heartbeat | undefined;
  #heartbeatEnabled: boolean;
  #rateLimits: RateLimits;
  #apiRoot: string;
  #webRoot: string;
  #abort = new AbortController();
  #signal: AbortSignal;
  #modelId: string | undefined;
  #model: ModelDocument | undefined;
  #filename: string | undefined;
  #trainArgs: TrainArgs = {};
  #modelFile: string | undefined;
  #lastMetricsUpload = -Infinity;
  #lastCkptUpload = -Infinity;
  #metricsChain: Promise<unknown> = Promise.resolve();
  #metricsTimer: ReturnType<typeof setTimeout> | undefined;
  #metricsScheduled = false;
  #closed: Promise<FlushReport> | undefined;
  #journalRoot: string | false;
  #journal: MetricsJournal | undefined;
  #offline: boolean;

  private constructor(init: {
    transport: SessionTransport;
    logger: Logger;
    rateLimits: RateLimits;
    apiRoot: string;
    webRoot: string;
    options: SessionOptions;
  }) {
    this.#transport = init.transport;
    this.#logger = init.logger;
    this.#rateLimits = init.rateLimits;
    this.#apiRoot = init.apiRoot;
    this.#webRoot = init.webRoot;
    this.#heartbeatEnabled = init.options.heartbeat ?? true;
    this.#journalRoot = init.options.journal ?? defaultJournalRoot();
    this.#offline = init.options.offline ?? false;
    if (this.#offline && this.#journalRoot === false) {
      throw new TypeError(
        "Cannot work offline without a journal: remove `journal: false` or `offline: true`",
      );
    }
    this.#signal = init.options.signal === undefined
      ? this.#abort.signal
      : AbortSignal.any([this.#abort.signal, init.options.signal]);
    this.#queue = new RequestQueue({
      logger: this.#logger,
      signal: this.#signal,
      ...(init.options.budgets === undefined
        ? {}
        : { budgets: init.options.budgets }),
      ...(init.options.backoff === undefined
        ? {}
        : { backoff: init.options.backoff }),
    });
    this.#checkpoints = new CheckpointUploader({
      send: (job) =>
        this.#queue.run(
          "checkpoint",
          `checkpoint upload of epoch ${job.epoch}`,
          ({ signal }) =>
            this.#sendWeights({
              epoch: job.epoch,
              file: job.path,
              type: "epoch",
              isBest: job.isBest,
              signal,
            }),
        ),
      toError: (error) => toHUBError(error, "Checkpoint upload failed"),
    });
  }

  /**
   * Opens a session: parses the identifier and credentials and, for a model
   * id, loads the model, derives its training arguments and starts the
   * heartbeat. For a `.pt`/`.yaml` file name no model exists yet: call
   * {@linkcode HUBTrainingSession.createModel} with the training arguments.
   *
   * @param identifier Model page URL, `<key>_<id>`, model id, or `.pt`/`.yaml` file name.
   * @param options Roots, credentials, limits and hooks.
   * @returns The open session.
   * @throws {HUBModelError} When the identifier is malformed, or the model is
   * missing, already trained, or its dataset still processing.
   * @throws {HUBConfigError} When the key would travel in clear text.
   * @throws {RangeError} When a rate limit is not a finite number >= 0.
   *
   * @example Open a session for a new model
   * ```ts
   * import { HUBTrainingSession } from "./session.ts";
   *
   * const session = await HUBTrainingSession.create("yolov8n.pt", {
   *   apiRoot: "http://127.0.0.1:9",
   *   settingsFile: false,
   *   logger: "quiet",
   * });
   * console.assert(session.filename === "yolov8n.pt" && session.modelId === undefined);
   * await session.close();
   * ```
   */
  static async create(
    identifier: string,
    options: SessionOptions = {},
  ): Promise<HUBTrainingSession> {
    const rateLimits = { ...DEFAULT_RATE_LIMITS, ...options.rateLimits };
    checkRateLimits(rateLimits);
    options.signal?.throwIfAborted();
    const env = options.env ?? readEnv;
    // Roots first (the web root decides which model URLs parse), keys after.
    const base = await resolveConfig({
      ...options,
      apiKey: undefined,
      settingsFile: false,
      env: (name) => name === "HUB_API_KEY" ? undefined : env(name),
    });
    const parsed = parseIdentifier(identifier, { webRoot: base.webRoot });
    const config = await resolveConfig(options, parsed.apiKey);
    const logger = redactingLogger(
      options.logger === "quiet"
        ? consoleLogger(true)
        : options.logger ?? consoleLogger(),
      [config.apiKey],
    );
    const transport = options.transport ?? new HUBClient({
      apiRoot: config.apiRoot,
      apiKey: config.apiKey,
      logger,
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.timeout === undefined ? {} : { timeout: options.timeout }),
    });
    const session = new HUBTrainingSession({
      transport,
      logger,
      rateLimits,
      apiRoot: config.apiRoot,
      webRoot: config.webRoot,
      options,
    });
    if (parsed.filename !== undefined) session.#filename = parsed.filename;
    if (parsed.modelId !== undefined) {
      try {
        await session.loadModel(parsed.modelId);
      } catch (error) {
        await session.close({ timeout: 0 });
        throw error;
      }
    }
    return session;
  }

  /** Id of the server's heartbeat agent, once assigned. */
  get agentId(): string | null {
    return this.#heartbeat?.agentId ?? null;
  }

  /** Id of the model, once loaded or created. */
  get modelId(): string | undefined {
    return this.#modelId;
  }

  /** Web page of the model: `<webRoot>/models/<id>`. */
  get modelUrl(): string | undefined {
    return this.#modelId === undefined
      ? undefined
      : `${this.#webRoot}/models/${this.#modelId}`;
  }

  /** API URL of the model: `<apiRoot>/v1/models/<id>`. */
  get apiUrl(): string | undefined {
    return this.#modelId === undefined
      ? undefined
      : `${this.#apiRoot}/v1/models/${this.#modelId}`;
  }

  /** The local `.pt`/`.yaml` file name the session was opened with. */
  get filename(): string | undefined {
    return this.#filename;
  }

  /** Training arguments derived from the model (a copy). */
  get trainArgs(): TrainArgs {
    return { ...this.#trainArgs };
  }

  /** Weights URL or architecture file to start training from. */
  get modelFile(): string | undefined {
    return this.#modelFile;
  }

  /** The model document as last loaded. */
  get model(): ModelDocument | undefined {
    return this.#model;
  }

  /** Rate limits in milliseconds (a copy). */
  get rateLimits(): RateLimits {
    return { ...this.#rateLimits };
  }

  /** Whether the heartbeat loop is running. */
  get alive(): boolean {
    return this.#heartbeat?.alive ?? false;
  }

  /** Epochs queued but not yet acknowledged by the server. */
  get pendingEpochs(): number[] {
    return this.#metrics.pendingEpochs;
  }

  /**
   * Loads a model, derives the training arguments and starts the heartbeat.
   *
   * @param modelId Id of the model.
   * @returns The model document.
   * @throws {HUBModelError} When the model does not exist, is already
   * trained, or its dataset is still processing.
   */
  async loadModel(modelId: string): Promise<ModelDocument> {
    this.#assertOpen("load a model");
    if (this.#offline) return this.#loadOffline(modelId);
    let model: ModelDocument;
    try {
      model = await this.#queue.run(
        "other",
        `loading model ${modelId}`,
        ({ signal }) => this.#transport.getModel(modelId, { signal }),
      );
    } catch (error) {
      if (error instanceof HUBRequestError && error.status === 404) {
        throw new HUBModelError(
          `Cannot open model ${modelId} as it does not exist on ${this.#apiRoot}: check the id, or pass a .pt/.yaml file name to create a model`,
          { cause: error },
        );
      }
      const unreachable = !(error instanceof HUBRequestError) ||
        error.status === undefined ||
        error.retriable;
      if (unreachable && this.#journalRoot !== false && !this.#signal.aborted) {
        this.#logger.warn(
          `Cannot reach ${this.#apiRoot}: working offline; metrics and weights go to the journal, deliver them later with syncJournal()`,
        );
        this.#offline = true;
        return this.#loadOffline(modelId);
      }
      throw error;
    }
    this.#modelId = model.id || modelId;
    this.#model = model;
    this.#setTrainArgs(model);
    this.#openJournal()?.saveModel(model);
    this.#startHeartbeat();
    this.#logger.info(`View model at ${this.modelUrl}`);
    this.#scheduleMetrics();
    return model;
  }

  #loadOffline(modelId: string): ModelDocument {
    this.#modelId = modelId;
    const journal = this.#openJournal();
    const model = journal?.loadModel() ??
      { id: modelId, status: "training" as const };
    this.#model = model;
    if (typeof model.data === "string" && model.data !== "") {
      this.#setTrainArgs(model);
    } else {
      this.#logger.warn(
        `No saved arguments for model ${modelId}: pass the training arguments to the trainer yourself`,
      );
    }
    return model;
  }

  #openJournal(): MetricsJournal | undefined {
    if (this.#journal !== undefined || this.#journalRoot === false) {
      return this.#journal;
    }
    const id = this.#modelId;
    if (id === undefined) return undefined;
    try {
      this.#journal = MetricsJournal.open(
        journalDir(this.#journalRoot, this.#apiRoot, id),
      );
    } catch (error) {
      this.#logger.warn(
        `Cannot open the journal in ${this.#journalRoot} (${
          error instanceof Error ? error.message : String(error)
        }): metrics are kept in memory only`,
      );
      return undefined;
    }
    const restored = this.#metrics.attachJournal(this.#journal);
    if (restored.length > 0) {
      this.#logger.info(
        `Re-sending ${restored.length} epoch(s) the server never acknowledged: ${
          restored.join(", ")
        }`,
      );
    }
    return this.#journal;
  }

  /** Whether the session works offline (into the journal). */
  get offline(): boolean {
    return this.#offline;
  }

  #setTrainArgs(model: ModelDocument): void {
    const url = `${this.#webRoot}/models/${this.#modelId}`;
    if (model.status === "trained") {
      throw new HUBModelError(
        `Cannot train model ${this.#modelId} as it is already trained: see ${url}, or open a new model`,
      );
    }
    const data = typeof model.data === "string" ? model.data.trim() : "";
    if (data === "") {
      throw new HUBModelError(
        `Cannot train model ${this.#modelId} as its dataset is still processing: wait a minute and try again`,
      );
    }
    if (model.has_last_weights === true) {
      this.#trainArgs = { data, resume: true };
      this.#modelFile = model.resume;
    } else {
      const args: TrainArgs = { ...model.train_args };
      const pick = <K extends keyof ModelDocument>(
        key: K,
        name: string,
      ): void => {
        if (args[name] === undefined && model[key] !== undefined) {
          args[name] = model[key];
        }
      };
      pick("batch_size", "batch");
      pick("epochs", "epochs");
      pick("imgsz", "imgsz");
      pick("patience", "patience");
      pick("device", "device");
      pick("cache", "cache");
      args.data = data;
      this.#trainArgs = args;
      this.#modelFile = model.is_pretrained === true
        ? model.weights
        : model.cfg;
    }
  }

  /**
   * Creates the model from the file name the session was opened with and the
   * trainer's arguments, then starts the heartbeat.
   *
   * @param trainArgs The trainer's arguments (`data`, `epochs`, `batch`, ...).
   * @returns The new model's id.
   * @throws {HUBModelError} When the session has no file name or already has a model.
   * @throws {HUBRequestError} When the server refuses or cannot be reached.
   */
  async createModel(trainArgs: TrainArgs): Promise<string> {
    this.#assertOpen("create a model");
    if (this.#filename === undefined || this.#modelId !== undefined) {
      throw new HUBModelError(
        "Cannot create a model as the session was opened on an existing model: open it with a .pt or .yaml file name instead",
      );
    }
    const payload = createModelPayload(this.#filename, trainArgs);
    const id = await this.#queue.run(
      "other",
      "creating the model",
      ({ signal }) => this.#transport.createModel(payload, { signal }),
    );
    this.#modelId = id;
    this.#trainArgs = { ...trainArgs };
    this.#openJournal();
    this.#startHeartbeat();
    this.#logger.info(`View model at ${this.modelUrl}`);
    this.#scheduleMetrics();
    return id;
  }

  #startHeartbeat(): void {
    const id = this.#modelId;
    if (
      !this.#heartbeatEnabled || id === undefined ||
      this.#heartbeat !== undefined
    ) return;
    this.#heartbeat = new Heartbeat({
      interval: this.#rateLimits.heartbeat,
      logger: this.#logger,
      signal: this.#signal,
      beat: async (agentId, signal) =>
        (await this.#transport.heartbeat(id, { agentId }, { signal })).agentId,
    });
    this.#heartbeat.start();
  }

  /**
   * Queues the metrics of an epoch; the session uploads them when the metrics
   * rate limit allows. O(1); never blocks; never throws on network trouble.
   * Queuing an epoch again replaces its value.
   *
   * @param epoch Epoch number (a non-negative integer).
   * @param metrics Flat map of metric name to number.
   * @throws {RangeError} When the epoch is not a non-negative integer.
   * @throws {TypeError} When a value is not a number.
   * @throws {HUBError} When the session is closed.
   */
  queueMetrics(epoch: number, metrics: EpochMetrics): void {
    this.#assertOpen("queue metrics");
    this.#metrics.add(epoch, metrics);
    this.#scheduleMetrics();
  }

  #scheduleMetrics(): void {
    if (
      this.#metricsScheduled || this.#modelId === undefined ||
      this.#metrics.size === 0
    ) return;
    if (this.#closed !== undefined) return;
    const wait = this.#lastMetricsUpload + this.#rateLimits.metrics -
      performance.now();
    this.#metricsScheduled = true;
    const go = (): void => {
      this.#metricsTimer = undefined;
      this.#metricsScheduled = false;
      void this.uploadMetrics();
    };
    if (wait <= 0) {
      queueMicrotask(go);
    } else {
      this.#metricsTimer = setTimeout(go, wait);
      unrefTimer(this.#metricsTimer);
    }
  }

  /**
   * Sends every pending epoch now, after any metrics upload in flight. Epochs
   * leave the queue only once the server acknowledged them. Never rejects.
   *
   * @returns What was sent and what is still pending.
   */
  uploadMetrics(): Promise<MetricsUploadResult> {
    const run = this.#metricsChain.then(() => this.#sendMetrics());
    this.#metricsChain = run;
    return run;
  }

  async #sendMetrics(): Promise<MetricsUploadResult> {
    const id = this.#modelId;
    const batch = this.#metrics.take();
    if (id === undefined || batch.metrics.size === 0 || this.#offline) {
      return { sent: [], pending: this.#metrics.pendingEpochs };
    }
    this.#lastMetricsUpload = performance.now();
    try {
      await this.#queue.run(
        "metrics",
        `metrics upload of ${batch.metrics.size} epoch(s)`,
        ({ signal }) =>
          this.#transport.uploadMetrics(id, batch.metrics, { signal }),
      );
      const sent = this.#metrics.ack(batch);
      this.#lastMetricsUpload = performance.now();
      this.#scheduleMetrics();
      return { sent, pending: this.#metrics.pendingEpochs };
    } catch (error) {
      // What failed stays queued: the next epoch, flush() or close() resends it.
      this.#lastMetricsUpload = performance.now();
      return {
        sent: [],
        pending: this.#metrics.pendingEpochs,
        error: toHUBError(error, "Metrics upload failed"),
      };
    }
  }

  /**
   * Uploads weights. A checkpoint (`final` unset) is snapshotted now and sent
   * in the background, one at a time, under the checkpoint rate limit; its
   * promise resolves to an outcome and never rejects. The final upload is
   * awaited: it falls back to `last.pt` beside a missing `best.pt`, retries
   * within its budget, and reports progress.
   *
   * @param epoch Epoch of the weights.
   * @param weightsPath Path of the weights file.
   * @param options Whether it is the best or the final model, and hooks.
   * @returns The checkpoint's outcome, or what the final upload delivered.
   */
  uploadModel(
    epoch: number,
    weightsPath: string,
    options: UploadModelCallOptions & { final: true },
  ): Promise<FinalUploadResult>;
  /**
   * Uploads a checkpoint in the background (see above); the promise resolves
   * to its outcome and never rejects.
   *
   * @param epoch Epoch of the checkpoint.
   * @param weightsPath Path of the checkpoint file.
   * @param options Whether it is the best model so far, and `force`.
   * @returns What became of the checkpoint.
   */
  uploadModel(
    epoch: number,
    weightsPath: string,
    options?: UploadModelCallOptions & { final?: false },
  ): Promise<CheckpointOutcome>;
  /**
   * Uploads a checkpoint or, with `final: true`, the final weights.
   *
   * @param epoch Epoch of the weights.
   * @param weightsPath Path of the weights file.
   * @param options Whether it is the best or the final model, and hooks.
   * @returns The checkpoint's outcome, or what the final upload delivered.
   */
  uploadModel(
    epoch: number,
    weightsPath: string,
    options?: UploadModelCallOptions,
  ): Promise<FinalUploadResult | CheckpointOutcome>;
  uploadModel(
    epoch: number,
    weightsPath: string,
    options: UploadModelCallOptions = {},
  ): Promise<FinalUploadResult | CheckpointOutcome> {
    if (!Number.isInteger(epoch) || epoch < 0) {
      throw new RangeError(
        `Cannot upload weights of epoch ${epoch}: the epoch must be a non-negative integer`,
      );
    }
    if (options.final === true) {
      return this.#uploadFinal(epoch, weightsPath, options);
    }
    return this.#uploadCheckpoint(epoch, weightsPath, options);
  }

  #uploadCheckpoint(
    epoch: number,
    path: string,
    options: UploadModelCallOptions,
  ): Promise<CheckpointOutcome> {
    if (this.#closed !== undefined) {
      return Promise.resolve({ status: "skipped", epoch, reason: "closed" });
    }
    if (this.#modelId === undefined) {
      this.#logger.warn(
        `Checkpoint of epoch ${epoch} not uploaded: the session has no model yet (call createModel() first)`,
      );
      return Promise.resolve({ status: "skipped", epoch, reason: "no-model" });
    }
    if (this.#offline) {
      return Promise.resolve(this.#defer(epoch, path, options, "checkpoint"));
    }
    const now = performance.now();
    if (
      options.force !== true &&
      now - this.#lastCkptUpload < this.#rateLimits.ckpt
    ) {
      return Promise.resolve({
        status: "skipped",
        epoch,
        reason: "rate-limit",
      });
    }
    const outcome = this.#checkpoints.submit(
      epoch,
      path,
      options.isBest ?? false,
    );
    void outcome.then((result) => {
      if (result.status === "skipped" && result.reason === "missing-file") {
        this.#logger.warn(
          `Model upload issue: missing checkpoint ${path} (epoch ${epoch})`,
        );
      }
    });
    this.#lastCkptUpload = now;
    return outcome;
  }

  #defer(
    epoch: number,
    path: string,
    options: UploadModelCallOptions,
    kind: "checkpoint" | "final",
  ): CheckpointOutcome {
    const journal = this.#openJournal();
    try {
      if (journal === undefined) throw new Error("no journal");
      journal.deferWeights(path, {
        kind,
        epoch,
        isBest: options.isBest ?? false,
        map: options.map ?? 0,
      });
      return { status: "deferred", epoch };
    } catch {
      if (kind === "checkpoint") {
        this.#logger.warn(
          `Model upload issue: missing checkpoint ${path} (epoch ${epoch})`,
        );
      }
      return { status: "skipped", epoch, reason: "missing-file" };
    }
  }

  async #uploadFinal(
    epoch: number,
    weightsPath: string,
    options: UploadModelCallOptions,
  ): Promise<FinalUploadResult> {
    this.#assertOpen("upload the final weights");
    const id = this.#modelId;
    if (id === undefined) {
      throw new HUBModelError(
        "Cannot upload the final weights as the session has no model: call createModel() first",
      );
    }
    const path = await this.#resolveFinalPath(weightsPath);
    if (this.#offline) {
      const outcome = this.#defer(epoch, path, options, "final");
      if (outcome.status !== "deferred") {
        throw new HUBError(
          `Cannot keep ${path} in the journal: check that it is readable`,
        );
      }
      const { size } = await stat(path);
      this.#logger.info(
        `Final weights kept in the journal: deliver them with syncJournal()`,
      );
      return { path, size, sha256: await sha256File(path), deferred: true };
    }
    let bar: ReturnType<typeof createProgressBar> | undefined;
    let onProgress = options.onProgress;
    if (onProgress === undefined) {
      bar = createProgressBar({ label: `Uploading ${basename(path)}` });
      onProgress = bar?.onProgress;
    }
    try {
      const result = await this.#queue.run(
        "final",
        `final upload of ${basename(path)}`,
        ({ signal }) =>
          this.#sendWeights({
            epoch,
            file: path,
            type: "final",
            map: options.map ?? 0,
            ...(onProgress === undefined ? {} : { onProgress }),
            signal,
          }),
        options.signal === undefined ? {} : { signal: options.signal },
      );
      bar?.done();
      this.#logger.info(`Final weights uploaded: ${this.modelUrl}`);
      return {
        path,
        size: result.size,
        sha256: result.sha256,
        deferred: false,
      };
    } catch (error) {
      bar?.done();
      throw error;
    }
  }

  async #resolveFinalPath(weightsPath: string): Promise<string> {
    const isFile = async (p: string): Promise<boolean> => {
      try {
        return (await stat(p)).isFile();
      } catch {
        return false;
      }
    };
    if (await isFile(weightsPath)) return weightsPath;
    const fallback = join(dirname(weightsPath), "last.pt");
    if (basename(weightsPath) === "best.pt" && await isFile(fallback)) {
      this.#logger.warn(
        `${weightsPath} is missing: uploading ${fallback} as the final model`,
      );
      return fallback;
    }
    throw new HUBError(
      `Cannot upload the final weights as ${weightsPath} does not exist: pass the path of the trained weights file`,
    );
  }

  #sendWeights(options: UploadModelOptions): Promise<UploadResult> {
    const id = this.#modelId;
    if (id === undefined) {
      return Promise.reject(
        new HUBModelError("Cannot upload weights as the session has no model"),
      );
    }
    return this.#transport.uploadModel(id, options);
  }

  /**
   * Waits for every queued and in-flight request (pending metrics are sent
   * first), bounded by a timeout, and reports what was not delivered.
   *
   * @param options How long to wait.
   * @returns What is still pending or failed.
   */
  async flush(options: FlushOptions = {}): Promise<FlushReport> {
    const { timeout = DEFAULT_FLUSH_TIMEOUT } = options;
    if (!(timeout >= 0)) {
      throw new RangeError(
        `Cannot flush with a timeout of ${timeout}: pass milliseconds >= 0`,
      );
    }
    if (this.#metricsTimer !== undefined) {
      clearTimeout(this.#metricsTimer);
      this.#metricsTimer = undefined;
      this.#metricsScheduled = false;
    }
    const work = (async () => {
      // Send what is pending; retry once more what failed on the way.
      for (
        let round = 0;
        round < 2 && this.#metrics.size > 0 && this.#modelId !== undefined;
        round++
      ) {
        await this.uploadMetrics();
      }
      await this.#checkpoints.idle();
      await this.#metricsChain;
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeout);
      unrefTimer(timer);
    });
    const outcome = await Promise.race([
      work.then(() => "done" as const),
      timedOut,
    ]);
    clearTimeout(timer);
    const rest = await this.#queue.flush({
      timeout: outcome === "done" ? timeout : 0,
    });
    return {
      settled: outcome === "done" && rest.settled,
      pendingEpochs: this.#metrics.pendingEpochs,
      failedUploads: [...this.#checkpoints.failures],
      pendingRequests: rest.pending,
    };
  }

  /**
   * Flushes (bounded by the timeout), stops the heartbeat, aborts what is
   * still in flight and releases every resource; after it nothing keeps the
   * process alive. Calling it again returns the same report.
   *
   * @param options How long to wait for queued work.
   * @returns What was not delivered.
   */
  close(options: FlushOptions = {}): Promise<FlushReport> {
    this.#closed ??= (async () => {
      const report = await this.flush(options);
      this.#abort.abort(new HUBError("The session was closed"));
      this.#queue.abort(new HUBError("The session was closed"));
      await this.#heartbeat?.stop();
      await this.#checkpoints.close();
      this.#metrics.detachJournal();
      await this.#journal?.close({
        pending: report.pendingEpochs.length,
        remove: true,
      });
      if (report.pendingEpochs.length > 0 && !this.#offline) {
        this.#logger.warn(
          `${report.pendingEpochs.length} epoch(s) of metrics were not delivered: ${
            report.pendingEpochs.join(", ")
          }`,
        );
      }
      return report;
    })();
    return this.#closed;
  }

  /** Closes the session (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(action: string): void {
    if (this.#closed !== undefined) {
      throw new HUBError(
        `Cannot ${action} as the session is closed: open a new session`,
      );
    }
  }
}

/**
 * Builds the exact create-model payload of the v1 protocol from a file name
 * and the trainer's arguments.
 *
 * @param filename Local `.pt` or `.yaml` file name.
 * @param args The trainer's arguments.
 * @returns The payload.
 *
 * @example Payload for a pretrained model
 * ```ts
 * import { createModelPayload } from "./session.ts";
 *
 * const payload = createModelPayload("yolov8n.pt", { data: "coco8.yaml" });
 * console.assert(payload.lineage.parent.name === "yolov8n.pt");
 * console.assert(payload.config.imageSize === 640);
 * ```
 */
export function createModelPayload(
  filename: string,
  args: TrainArgs,
): CreateModelPayload {
  const num = (value: unknown, fallback: number): number =>
    typeof value === "number" && Number.isFinite(value) ? value : fallback;
  const name = basename(filename);
  const payload: CreateModelPayload = {
    config: {
      batchSize: num(args.batch, -1),
      epochs: num(args.epochs, 300),
      imageSize: num(args.imgsz, 640),
      patience: num(args.patience, 100),
      device: String(args.device ?? ""),
      cache: String(args.cache ?? "ram"),
    },
    dataset: { name: typeof args.data === "string" ? args.data : undefined },
    lineage: {
      architecture: { name: name.replace(/\.pt$/, "").replace(/\.yaml$/, "") },
      parent: {},
    },
    meta: { name },
  };
  if (name.endsWith(".pt")) payload.lineage.parent.name = name;
  return payload;
}
