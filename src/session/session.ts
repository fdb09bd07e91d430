/**
 * {@linkcode HUBTrainingSession}: opens (or creates) a model on a HUB, keeps
 * the server told that the trainer is alive, streams per-epoch metrics,
 * uploads checkpoints and the final weights, and loses none of it to a flaky
 * network.
 *
 * The session is the conductor; each job lives in its own file: options and
 * reports (`options.ts`), the metrics pump (`metrics_pump.ts`), checkpoint
 * and final uploads (`weights_uploads.ts`, `checkpoints.ts`,
 * `weights_file.ts`), the heartbeat (`heartbeat.ts`), the journal
 * (`journal.ts`) and the request runner (`request_runner.ts`). What stays
 * here (~800 lines, half of it the documentation of the public methods) is
 * the order in which they run.
 *
 * Failure policy: a call that needs the server (`create()` on a model id,
 * `createModel()`, the final upload) throws a {@linkcode HUBError} subclass
 * whose message names the server and what to do; with a journal enabled,
 * opening a model whose server cannot be reached goes offline instead, with
 * one warning. Background work (metrics, checkpoints, heartbeats) never
 * throws into the training loop: it retries, keeps what was not delivered,
 * and reports it in `flush()`/`close()`. Bad arguments throw `TypeError` or
 * `RangeError`.
 *
 * @module
 */

import { HUBClient } from "../transport/client.ts";
import { sleepUnref } from "../common/timers.ts";
import { granted, setPermissionDebug } from "../common/permissions.ts";
import { readEnv, resolveConfig } from "./config.ts";
import { HUBError, HUBModelError, HUBRequestError } from "../common/errors.ts";
import { Heartbeat } from "./heartbeat.ts";
import { MetricsJournal } from "./journal.ts";
import {
  defaultJournalRoot,
  journalDir,
  recordServer,
} from "./journal_paths.ts";
import { parseIdentifier } from "./identifier.ts";
import { openPlatform } from "./open_platform.ts";
import { parsePlatformUri } from "../protocol/platform.ts";
import { consoleLogger, redactingLogger } from "../common/logger.ts";
import { MetricsQueue } from "./metrics_queue.ts";
import { MetricsPump } from "./metrics_pump.ts";
import { WeightsUploads } from "./weights_uploads.ts";
import type { CheckpointOutcome } from "./checkpoints.ts";
import { isRetriableError, RequestRunner } from "./request_runner.ts";
import { createModelPayload } from "../protocol/model_payload.ts";
import {
  checkRateLimits,
  DEFAULT_RATE_LIMITS,
  type FinalUploadResult,
  type FlushOptions,
  type FlushReport,
  type MetricsUploadResult,
  type RateLimits,
  type SessionOptions,
  type SessionTransport,
  type UploadModelCallOptions,
} from "./options.ts";
import type {
  EpochMetrics,
  Logger,
  ModelDocument,
  TrainArgs,
} from "../protocol/types.ts";

// The public surface (the option and result types) is exported by mod.ts
// from options.ts; this one re-export stays for callers that build a model
// payload next to the session.
export { createModelPayload };

const DEFAULT_FLUSH_TIMEOUT = 30_000;

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
  #runner: RequestRunner;
  #metrics = new MetricsQueue();
  #pump: MetricsPump;
  #weights: WeightsUploads;
  #heartbeat: Heartbeat | undefined;
  #heartbeatEnabled: boolean;
  #rateLimits: RateLimits;
  #apiRoot: string;
  #webRoot: string;
  #abort = new AbortController();
  #neverCancelled = new AbortController().signal;
  #signal: AbortSignal;
  #modelId: string | undefined;
  #model: ModelDocument | undefined;
  #filename: string | undefined;
  #trainArgs: TrainArgs = {};
  #modelFile: string | undefined;
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
    this.#runner = new RequestRunner({
      logger: this.#logger,
      signal: this.#signal,
      budgets: init.options.budgets,
      backoff: init.options.backoff,
    });
    this.#pump = new MetricsPump({
      queue: this.#metrics,
      runner: this.#runner,
      transport: this.#transport,
      logger: this.#logger,
      interval: this.#rateLimits.metrics,
      modelId: () => this.#modelId,
      held: () => this.#offline,
    });
    this.#weights = new WeightsUploads({
      runner: this.#runner,
      transport: this.#transport,
      logger: this.#logger,
      interval: this.#rateLimits.ckpt,
      modelId: () => this.#modelId,
      modelUrl: () => this.modelUrl,
      offline: () => this.#offline,
      closed: () => this.#closed !== undefined,
      journal: () => this.#openJournal(),
      // The epochs go before the final weights: a server that closes the run
      // on the final upload (the Platform's training_complete) has them all.
      beforeFinal: async () => {
        if (this.#metrics.size > 0) await this.#pump.upload();
      },
    });
  }

  /**
   * Opens a session: parses the identifier and credentials and, for a model
   * id, loads the model, derives its training arguments and starts the
   * heartbeat. For a `.pt`/`.yaml` file name no model exists yet: call
   * {@linkcode HUBTrainingSession.createModel} with the training arguments.
   *
   * `ul://<owner>/<project>/<name>` reports to the Ultralytics Platform
   * instead (options `platformUrl` and `apiKey`, else
   * `ULTRALYTICS_PLATFORM_URL` and `ULTRALYTICS_API_KEY`): `createModel()`
   * starts the run, and everything after works as for a HUB. That protocol
   * is taken from the Python trainer's behaviour and tested against the
   * local HUB's Platform endpoints only; the live Platform could not be
   * reached from our test machines.
   *
   * @param identifier Model page URL, `<key>_<id>`, model id, `.pt`/`.yaml` file name, or `ul://<owner>/<project>/<name>`.
   * @param options Roots, credentials, limits and hooks.
   * @returns The open session.
   * @throws {HUBModelError} When the identifier is malformed, or the model is
   * missing, already trained, or its dataset still processing.
   * @throws {HUBConfigError} When the key would travel in clear text.
   * @throws {HUBRequestError} When the server refuses or cannot be reached
   * (and no journal lets the session work offline).
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
    const platformUri = parsePlatformUri(identifier);
    if (platformUri !== undefined) {
      // ul://<owner>/<project>/<name>: the Ultralytics Platform transport.
      // The run starts with createModel(); the Platform has no heartbeat.
      const platform = openPlatform(platformUri, options, env);
      if (typeof options.logger === "object") {
        setPermissionDebug(options.logger.debug?.bind(options.logger));
      }
      const session = new HUBTrainingSession({
        transport: platform.transport,
        logger: platform.logger,
        rateLimits,
        apiRoot: platform.webhooksUrl,
        webRoot: platform.platformUrl,
        options: { ...options, heartbeat: false },
      });
      session.#filename = identifier;
      return session;
    }
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
    if (typeof options.logger === "object") {
      setPermissionDebug(options.logger.debug?.bind(options.logger));
    }
    const transport = options.transport ?? new HUBClient({
      apiRoot: config.apiRoot,
      apiKey: config.apiKey,
      logger,
      fetch: options.fetch,
      signal: options.signal,
      timeout: options.timeout,
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

  /**
   * Web page of the model, once it exists: `<webRoot>/models/<id>` on a HUB;
   * `<platformUrl>/<owner>/<project>/<slug>` on the Ultralytics Platform,
   * with the slug the server answered to `training_started` (e.g.
   * `train-2` when `train` was taken), or `<platformUrl>/models/<id>` when
   * only the model id is known (a journal being delivered).
   */
  get modelUrl(): string | undefined {
    const id = this.#modelId;
    if (id === undefined) return undefined;
    return this.#transport.modelUrl?.(id) ?? `${this.#webRoot}/models/${id}`;
  }

  /**
   * Where a program finds the model, once it exists. On a HUB: the model's
   * JSON document, `<apiRoot>/v1/models/<id>`. On the Ultralytics Platform
   * (`ul://`), whose webhooks are write-only and which has no per-model API
   * in its protocol: the model's page, the same as
   * {@linkcode HUBTrainingSession.modelUrl}, built from the `modelSlug` (or
   * `modelId`) the server answered.
   */
  get apiUrl(): string | undefined {
    const id = this.#modelId;
    if (id === undefined) return undefined;
    return this.#transport.apiUrl?.(id) ?? `${this.#apiRoot}/v1/models/${id}`;
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

  /**
   * Whether the server said the user stopped the run (the Ultralytics
   * Platform's `cancelled: true`): finish the current epoch, then upload the
   * final weights and close as usual. Always `false` on a HUB v1 server.
   */
  get cancelled(): boolean {
    return this.#transport.cancelSignal?.aborted ?? false;
  }

  /**
   * Aborted when the server says the user stopped the run (see
   * {@linkcode HUBTrainingSession.cancelled}); never aborted on a HUB v1
   * server. The session's own requests go on: the final upload is still made.
   */
  get cancelSignal(): AbortSignal {
    return this.#transport.cancelSignal ?? this.#neverCancelled;
  }

  /** Epochs queued but not yet acknowledged by the server. */
  get pendingEpochs(): number[] {
    return this.#metrics.pendingEpochs;
  }

  /** Whether the session works offline (into the journal). */
  get offline(): boolean {
    return this.#offline;
  }

  /**
   * Loads a model, derives the training arguments and starts the heartbeat.
   * When the server cannot be reached and a journal is enabled, the session
   * goes offline with one warning instead of failing.
   *
   * @param modelId Id of the model.
   * @returns The model document.
   * @throws {HUBModelError} When the model does not exist, is already
   * trained, or its dataset is still processing.
   * @throws {HUBRequestError} When the server refuses the request, or cannot
   * be reached and no journal is enabled.
   */
  async loadModel(modelId: string): Promise<ModelDocument> {
    this.#assertOpen("load a model");
    if (this.#offline) return this.#loadOffline(modelId);
    let model: ModelDocument;
    try {
      model = await this.#runner.run(
        "other",
        `loading model ${modelId} from ${this.#apiRoot}`,
        ({ signal }) => this.#transport.getModel(modelId, { signal }),
        { logFailure: false },
      );
    } catch (error) {
      if (error instanceof HUBRequestError && error.status === 404) {
        throw new HUBModelError(
          `Cannot open model ${modelId} as it does not exist on ${this.#apiRoot}: check the id, or pass a .pt/.yaml file name to create a model`,
          { cause: error },
        );
      }
      // Only an unreachable or unavailable server sends the session offline;
      // a refusal or a bug (e.g. a TypeError in a custom transport) is thrown.
      if (
        isRetriableError(error) && this.#journalRoot !== false &&
        !this.#signal.aborted
      ) {
        this.#logger.warn(
          `Cannot reach ${this.#apiRoot} (${
            error instanceof Error ? error.message : String(error)
          }): working offline; metrics and weights go to the journal, deliver them later with syncJournal() or \`hub-session sync\``,
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
    this.#pump.schedule();
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
    const root = this.#journalRoot;
    if (
      !granted({ name: "write", path: root }, "writing the journal") ||
      !granted({ name: "read", path: root }, "reading the journal")
    ) {
      this.#logger.warn(
        `Cannot use the journal in ${root} as Deno's read and write permissions for it are not granted (never prompted): metrics are kept in memory only; run with --allow-read --allow-write, or pass journal: false`,
      );
      this.#journalRoot = false;
      return undefined;
    }
    try {
      this.#journal = MetricsJournal.open(
        journalDir(this.#journalRoot, this.#apiRoot, id),
        { logger: this.#logger },
      );
    } catch (error) {
      this.#logger.warn(
        `Cannot open the journal in ${this.#journalRoot} (${
          error instanceof Error ? error.message : String(error)
        }): metrics are kept in memory only`,
      );
      return undefined;
    }
    // Name the HUB in the journal, to find it again on another address.
    const instance = (this.#transport as { instanceId?: unknown }).instanceId;
    if (typeof instance === "string") {
      try {
        recordServer(root, this.#apiRoot, instance);
      } catch {
        // without the record, sync finds the journal by address only
      }
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
   * trainer's arguments, then starts the heartbeat. Epochs queued before are
   * kept and sent once the model exists.
   *
   * @param trainArgs The trainer's arguments (`data`, `epochs`, `batch`, ...).
   * @returns The new model's id.
   * @throws {HUBModelError} When the session has no file name or already has a model.
   * @throws {HUBRequestError} When the server refuses or cannot be reached;
   * its message names the server.
   */
  async createModel(trainArgs: TrainArgs): Promise<string> {
    this.#assertOpen("create a model");
    if (this.#modelId !== undefined) {
      throw new HUBModelError(
        this.#filename === undefined
          ? `Cannot create a model as the session was opened on existing model ${this.#modelId}: open a new session with a .pt or .yaml file name to create one`
          : `Cannot create a model as this session already created model ${this.#modelId} from ${this.#filename}: open a new session for another model`,
      );
    }
    if (this.#filename === undefined) {
      throw new HUBModelError(
        "Cannot create a model as the session has no .pt or .yaml file name: open it with one",
      );
    }
    const payload = createModelPayload(this.#filename, trainArgs);
    const id = await this.#runner.run(
      "other",
      `creating the model on ${this.#apiRoot}`,
      ({ signal }) =>
        this.#transport.createModel(payload, { signal, trainArgs }),
    );
    this.#modelId = id;
    this.#trainArgs = { ...trainArgs };
    this.#openJournal();
    this.#startHeartbeat();
    this.#logger.info(`View model at ${this.modelUrl}`);
    this.#pump.schedule();
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
      // Through the runner: the heartbeat budget (one attempt with its own
      // time limit) holds whatever the transport does with the signal.
      beat: (agentId, signal) =>
        this.#runner.run(
          "heartbeat",
          "heartbeat",
          async ({ signal }) =>
            (await this.#transport.heartbeat(id, { agentId }, { signal }))
              .agentId,
          { signal, track: false, logFailure: false },
        ),
    });
    this.#heartbeat.start();
  }

  /**
   * Queues the metrics of an epoch; the session uploads them when the metrics
   * rate limit allows (epochs queued before the model exists are sent once
   * it does). O(1); never blocks; never throws on network or disk trouble.
   * Queuing an epoch again replaces its value.
   *
   * @param epoch Epoch number (an integer from 0 to 99,999).
   * @param metrics Flat map of metric name to number; checked against the
   * same rules as the server's (`protocol/metrics_rules.ts`).
   * @throws {RangeError} When the epoch is out of range, or the metrics break
   * the protocol's bounds (count, name length, size).
   * @throws {TypeError} When a value is not a number.
   * @throws {HUBError} When the session is closed.
   */
  queueMetrics(epoch: number, metrics: EpochMetrics): void {
    this.#assertOpen("queue metrics");
    this.#metrics.add(epoch, metrics);
    this.#pump.schedule();
  }

  /**
   * Sends every pending epoch now, after any metrics upload in flight. Epochs
   * leave the queue only once the server acknowledged them, or refused them
   * for good (`rejected`). Never rejects on network trouble.
   *
   * @returns What was sent, refused and is still pending.
   * @throws {HUBError} When the session is closed.
   */
  uploadMetrics(): Promise<MetricsUploadResult> {
    this.#assertOpen("upload metrics");
    return this.#pump.upload();
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
    options?: UploadModelCallOptions & { final?: false | undefined },
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
      this.#assertOpen("upload the final weights");
      return this.#weights.final(epoch, weightsPath, options);
    }
    return this.#weights.checkpoint(epoch, weightsPath, options);
  }

  /**
   * Waits for every queued and in-flight request (pending metrics are sent
   * first), bounded by a timeout, and reports what was not delivered.
   *
   * @param options How long to wait; `Infinity` waits until every request
   * has ended within its own budget.
   * @returns What is still pending, refused or failed.
   * @throws {RangeError} When the timeout is negative or `NaN`.
   */
  async flush(options: FlushOptions = {}): Promise<FlushReport> {
    const { timeout = DEFAULT_FLUSH_TIMEOUT } = options;
    if (typeof timeout !== "number" || !(timeout >= 0)) {
      throw new RangeError(
        `Cannot flush with a timeout of ${timeout}: pass milliseconds >= 0, or Infinity`,
      );
    }
    this.#pump.cancelScheduled();
    const work = (async () => {
      // Send what is pending; retry once more what failed on the way.
      for (
        let round = 0;
        round < 2 && this.#metrics.size > 0 && this.#modelId !== undefined &&
        !this.#offline;
        round++
      ) {
        await this.#pump.upload();
      }
      await this.#weights.idle();
      await this.#pump.idle();
    })();
    const stop = new AbortController();
    const outcome = await Promise.race([
      work.then(() => "done" as const),
      // A timer only for a finite timeout: setTimeout(…, Infinity) fires at once.
      ...(Number.isFinite(timeout)
        ? [
          sleepUnref(timeout, stop.signal).then(
            () => "timeout" as const,
            () => "done" as const,
          ),
        ]
        : []),
    ]);
    stop.abort();
    const rest = await this.#runner.settle({
      timeout: outcome === "done" ? timeout : 0,
    });
    return {
      settled: outcome === "done" && rest.settled,
      pendingEpochs: this.#metrics.pendingEpochs,
      rejectedEpochs: this.#metrics.rejectedEpochs,
      failedUploads: [...this.#weights.failures],
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
      this.#pump.stop();
      this.#abort.abort(new HUBError("The session was closed"));
      this.#runner.abort(new HUBError("The session was closed"));
      await this.#heartbeat?.stop();
      await this.#weights.close();
      this.#metrics.detachJournal();
      await this.#journal?.close({
        pending: report.pendingEpochs.length,
        remove: true,
      });
      const pending = report.pendingEpochs;
      if (pending.length > 0 && this.#modelId === undefined) {
        this.#logger.warn(
          `${pending.length} epoch(s) of metrics were never sent as the session has no model: ${
            pending.join(", ")
          }; call createModel() (or open a model id) before close()`,
        );
      } else if (pending.length > 0 && !this.#offline) {
        this.#logger.warn(
          `${pending.length} epoch(s) of metrics were not delivered: ${
            pending.join(", ")
          }; ${
            this.#journal === undefined
              ? "they are lost as the journal is off"
              : "they stay in the journal: deliver them with syncJournal() or `hub-session sync`"
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
