/**
 * Trainer hooks for a {@linkcode HUBTrainingSession}: the callback set of the
 * Ultralytics `callbacks/hub.py`, in TypeScript. Call each hook from the
 * matching point of a training loop; the session does the rate limiting,
 * retries and snapshotting.
 *
 * Unlike the reference, the end of training does not lose the last epochs:
 * {@linkcode HUBCallbacks.onTrainEnd} sends the pending metrics, uploads the
 * final weights, then flushes and closes the session and returns what could
 * not be delivered.
 *
 * @example Wire the hooks into a training loop
 * ```ts
 * import { hubCallbacks } from "./callbacks.ts";
 * import { HUBTrainingSession } from "./session.ts";
 * import { serveHub } from "../server/mod.ts";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "hub-callbacks-"));
 * const hub = await serveHub({ dataDir: join(dir, "hub") });
 * const session = await HUBTrainingSession.create("tiny.yaml", {
 *   apiRoot: hub.url,
 *   webRoot: hub.url,
 *   settingsFile: false,
 *   logger: "quiet",
 *   journal: false,
 * });
 * const hooks = hubCallbacks(session, { logger: "quiet" });
 * await hooks.onPretrainRoutineStart({ args: { data: "spirals", epochs: 2 } });
 * hooks.onPretrainRoutineEnd();
 * for (let epoch = 0; epoch < 2; epoch++) {
 *   hooks.onFitEpochEnd(epoch, { "train/loss": 1 / (epoch + 1) });
 *   await writeFile(join(dir, "last.pt"), `weights of epoch ${epoch}`);
 *   void hooks.onModelSave(epoch, join(dir, "last.pt"), true);
 * }
 * await writeFile(join(dir, "best.pt"), "final weights");
 * const report = await hooks.onTrainEnd(1, join(dir, "best.pt"), 0.5);
 * console.assert(report.pendingEpochs.length === 0 && report.final !== undefined);
 * await hub.close();
 * await rm(dir, { recursive: true });
 * ```
 *
 * @module
 */

import type { CheckpointOutcome } from "./checkpoints.ts";
import { type HUBError, toHUBError } from "../common/errors.ts";
import { consoleLogger } from "../common/logger.ts";
import type { FinalUploadResult, FlushReport } from "./options.ts";
import type { HUBTrainingSession } from "./session.ts";
import type {
  EpochMetrics,
  Logger,
  ProgressCallback,
  TrainArgs,
} from "../protocol/types.ts";

/**
 * The training arguments a trainer exposes as `args`: the ones the HUB stores
 * are named here; any other argument is kept too.
 *
 * @example A trainer's arguments
 * ```ts
 * import type { TrainerArgs } from "./callbacks.ts";
 *
 * const args: TrainerArgs = { data: "coco8.yaml", epochs: 20, batch: 16, imgsz: 640 };
 * console.assert(args.epochs === 20);
 * ```
 */
export interface TrainerArgs {
  /** Dataset name or URL. */
  readonly data?: string | undefined;
  /** Number of epochs. */
  readonly epochs?: number | undefined;
  /** Batch size; `-1` lets the trainer choose. */
  readonly batch?: number | undefined;
  /** Image (input) size. */
  readonly imgsz?: number | undefined;
  /** Epochs without improvement before stopping early. */
  readonly patience?: number | undefined;
  /** Device, e.g. `"cpu"` or `0`. */
  readonly device?: string | number | undefined;
  /** Dataset cache mode. */
  readonly cache?: string | boolean | undefined;
}

/**
 * What {@linkcode HUBCallbacks.onPretrainRoutineStart} reads from the trainer.
 *
 * @example A minimal trainer
 * ```ts
 * import type { PretrainTrainer } from "./callbacks.ts";
 *
 * const trainer: PretrainTrainer = { args: { data: "coco8.yaml", epochs: 3 } };
 * console.assert(trainer.args.data === "coco8.yaml");
 * ```
 */
export interface PretrainTrainer {
  /** The trainer's arguments, sent to the HUB when the model is created. */
  readonly args: TrainerArgs;
  /**
   * The trainer's stop flag: the hooks set it to `true` when the server says
   * the user stopped the run (the Ultralytics Platform's Stop, see
   * `session.cancelled`). End training after the current epoch; the final
   * upload in `onTrainEnd` is still made.
   */
  stop?: boolean | undefined;
}

/**
 * Options for {@linkcode hubCallbacks}.
 *
 * @example Draw the final upload's progress yourself
 * ```ts
 * import type { HUBCallbacksOptions } from "./callbacks.ts";
 *
 * const options: HUBCallbacksOptions = {
 *   onProgress: ({ loaded, total }) => console.log(`${loaded}/${total ?? "?"}`),
 *   closeTimeout: 10_000,
 *   logger: "quiet",
 * };
 * console.assert(options.closeTimeout === 10_000);
 * ```
 */
export interface HUBCallbacksOptions {
  /**
   * Progress of the final upload; by default the session draws a progress bar
   * when standard error is a terminal.
   *
   * @default {undefined}
   */
  onProgress?: ProgressCallback | undefined;
  /**
   * How long {@linkcode HUBCallbacks.onTrainEnd} waits for queued metrics and
   * checkpoints when closing the session, in milliseconds.
   *
   * @default {30000}
   */
  closeTimeout?: number | undefined;
  /**
   * Where the hooks' own lines go (the session has its own logger); `"quiet"`
   * drops them.
   *
   * @default {console, with the "HUB: " prefix}
   */
  logger?: Logger | "quiet" | undefined;
}

/**
 * What {@linkcode HUBCallbacks.onTrainEnd} reports: the session's close
 * report plus the outcome of the final upload.
 *
 * @example Check that nothing was lost
 * ```ts
 * import type { TrainEndReport } from "./callbacks.ts";
 *
 * function allDelivered(report: TrainEndReport): boolean {
 *   return report.final !== undefined && report.settled &&
 *     report.pendingEpochs.length === 0 && report.failedUploads.length === 0;
 * }
 * console.assert(typeof allDelivered === "function");
 * ```
 */
export interface TrainEndReport extends FlushReport {
  /** What the final upload delivered; `undefined` when it failed. */
  final: FinalUploadResult | undefined;
  /** Why the final upload failed, when it did. */
  finalError?: HUBError | undefined;
}

/**
 * The hooks returned by {@linkcode hubCallbacks}, named after the reference's
 * `on_pretrain_routine_start`, `on_pretrain_routine_end`, `on_fit_epoch_end`,
 * `on_model_save` and `on_train_end`.
 *
 * @example Call the hooks of a session that already has a model
 * ```ts
 * import { hubCallbacks } from "./callbacks.ts";
 * import type { HUBCallbacks } from "./callbacks.ts";
 * import { HUBTrainingSession } from "./session.ts";
 *
 * const session = await HUBTrainingSession.create("tiny.yaml", {
 *   apiRoot: "http://127.0.0.1:9",
 *   settingsFile: false,
 *   logger: "quiet",
 *   journal: false,
 * });
 * const hooks: HUBCallbacks = hubCallbacks(session, { logger: "quiet" });
 * hooks.onFitEpochEnd(0, { "train/loss": 0.9 }); // queued: no model yet
 * console.assert(session.pendingEpochs.length === 1);
 * await session.close({ timeout: 0 });
 * ```
 */
export interface HUBCallbacks {
  /**
   * Creates the model on the HUB from the trainer's arguments when the
   * session was opened on a `.pt`/`.yaml` name and has no model yet; does
   * nothing when it has one.
   *
   * @param trainer The trainer, for its `args`.
   * @returns The model's id.
   * @throws {HUBModelError} When the session has no model and no file name.
   * @throws {HUBRequestError} When the server refuses or cannot be reached.
   */
  onPretrainRoutineStart(trainer: PretrainTrainer): Promise<string>;
  /**
   * Marks the start of training; warns when the session has no model yet,
   * and sets the trainer's `stop` flag when the run was stopped on the server
   * before it started. The reference restarted its rate-limit timers here;
   * the session keeps its own, so nothing else is needed.
   */
  onPretrainRoutineEnd(): void;
  /**
   * Queues an epoch's metrics (O(1), never blocks); at epoch 0 the model
   * information (`model/parameters`, `model/GFLOPs`, ...) is merged in. The
   * session uploads them under its metrics rate limit.
   *
   * @param epoch Zero-based epoch number.
   * @param metrics The epoch's losses and validation metrics.
   * @param modelInfo Model information, merged at epoch 0 only.
   * @throws {RangeError} When the epoch is not a non-negative integer.
   * @throws {TypeError} When a metric value is not a number.
   * @throws {HUBError} When the session is closed.
   */
  onFitEpochEnd(
    epoch: number,
    metrics: EpochMetrics,
    modelInfo?: EpochMetrics,
  ): void;
  /**
   * Uploads a checkpoint in the background: the file is snapshotted now (the
   * trainer may overwrite it at once), the session's checkpoint rate limit
   * applies, and a newer checkpoint supersedes one still waiting. Never
   * throws and never rejects; there is no need to await it.
   *
   * @param epoch Epoch of the checkpoint.
   * @param lastPath Path of the checkpoint, e.g. `weights/last.pt`.
   * @param isBest Whether this epoch is the best so far.
   * @returns What became of the checkpoint.
   */
  onModelSave(
    epoch: number,
    lastPath: string,
    isBest: boolean,
  ): Promise<CheckpointOutcome>;
  /**
   * Ends the session: sends the pending metrics, uploads the final weights
   * (`best.pt`, else `last.pt` beside it) with progress, then flushes and
   * closes the session. Never rejects on network trouble: the report says
   * what was not delivered.
   *
   * @param epoch Last epoch trained.
   * @param bestPath Path of the final weights, e.g. `weights/best.pt`.
   * @param map Final mean average precision (or another fitness in [0, 1]).
   * @returns The close report and the final upload's outcome.
   */
  onTrainEnd(
    epoch: number,
    bestPath: string,
    map?: number,
  ): Promise<TrainEndReport>;
}

/**
 * Returns the trainer hooks of a session: call them from a training loop or
 * register them with a trainer that has callbacks.
 *
 * @param session The open session (opened on a model, or on a `.pt`/`.yaml`
 * name for a new model).
 * @param options Final upload progress, close timeout and logger.
 * @returns The hooks.
 * @throws {RangeError} When `closeTimeout` is not a number of milliseconds >= 0.
 * @throws {TypeError} When `onProgress` is not a function.
 *
 * @example Train with the hooks against the local HUB
 * ```ts
 * import { hubCallbacks } from "./callbacks.ts";
 * import { HUBTrainingSession } from "./session.ts";
 * import { serveHub } from "../server/mod.ts";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "hub-callbacks-"));
 * const hub = await serveHub({ dataDir: join(dir, "hub") });
 * const session = await HUBTrainingSession.create("tiny.yaml", {
 *   apiRoot: hub.url,
 *   webRoot: hub.url,
 *   settingsFile: false,
 *   logger: "quiet",
 *   journal: false,
 * });
 * const hooks = hubCallbacks(session, { logger: "quiet" });
 * const id = await hooks.onPretrainRoutineStart({ args: { data: "spirals", epochs: 1 } });
 * hooks.onFitEpochEnd(0, { "train/loss": 0.7 }, { "model/parameters": 1234 });
 * await writeFile(join(dir, "best.pt"), "final weights");
 * const report = await hooks.onTrainEnd(0, join(dir, "best.pt"));
 * console.assert(id === session.modelId && report.pendingEpochs.length === 0);
 * await hub.close();
 * await rm(dir, { recursive: true });
 * ```
 */
export function hubCallbacks(
  session: HUBTrainingSession,
  options: HUBCallbacksOptions = {},
): HUBCallbacks {
  const { onProgress, closeTimeout = 30_000, logger: given } = options;
  if (
    typeof session !== "object" || session === null ||
    typeof session.queueMetrics !== "function"
  ) {
    throw new TypeError(
      "Cannot create the HUB callbacks as the session is not a HUBTrainingSession",
    );
  }
  if (
    typeof closeTimeout !== "number" || !(closeTimeout >= 0) ||
    closeTimeout === Infinity
  ) {
    throw new RangeError(
      `Cannot create the HUB callbacks with a closeTimeout of ${closeTimeout}: pass a finite number of milliseconds >= 0`,
    );
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError(
      "Cannot create the HUB callbacks as 'onProgress' is not a function",
    );
  }
  const logger = given === "quiet"
    ? consoleLogger(true)
    : given ?? consoleLogger();

  // The trainer whose stop flag a server-side Stop sets.
  let stoppable: PretrainTrainer | undefined;
  const applyStop = (): void => {
    if (stoppable === undefined || stoppable.stop === true) return;
    stoppable.stop = true;
    logger.info(
      "Training was stopped from the server: ending after this epoch, the final weights are still uploaded",
    );
  };
  session.cancelSignal.addEventListener("abort", applyStop, { once: true });

  return {
    async onPretrainRoutineStart(trainer: PretrainTrainer): Promise<string> {
      if (typeof trainer === "object" && trainer !== null) {
        stoppable = trainer;
      }
      if (session.modelId !== undefined) return session.modelId;
      if (
        typeof trainer !== "object" || trainer === null ||
        typeof trainer.args !== "object" || trainer.args === null
      ) {
        throw new TypeError(
          "Cannot create the model as the trainer has no 'args' object",
        );
      }
      const args: TrainArgs = {};
      for (const [name, value] of Object.entries(trainer.args)) {
        if (value !== undefined) args[name] = value;
      }
      return await session.createModel(args);
    },

    onPretrainRoutineEnd(): void {
      // A run stopped before it started: the trainer resets its flag while
      // setting up, so it is set again here.
      if (session.cancelled && stoppable !== undefined) stoppable.stop = true;
      if (session.modelId === undefined) {
        logger.warn(
          "Training starts without a HUB model: call onPretrainRoutineStart() first, or metrics and weights stay local",
        );
      }
    },

    onFitEpochEnd(
      epoch: number,
      metrics: EpochMetrics,
      modelInfo?: EpochMetrics,
    ): void {
      if (
        modelInfo !== undefined &&
        (typeof modelInfo !== "object" || modelInfo === null)
      ) {
        throw new TypeError(
          `Cannot queue the metrics of epoch ${epoch} as the model info is not an object`,
        );
      }
      const all = epoch === 0 && modelInfo !== undefined
        ? { ...metrics, ...modelInfo }
        : metrics;
      session.queueMetrics(epoch, all);
    },

    onModelSave(
      epoch: number,
      lastPath: string,
      isBest: boolean,
    ): Promise<CheckpointOutcome> {
      try {
        return session.uploadModel(epoch, lastPath, { isBest }).catch(
          (error: unknown): CheckpointOutcome => ({
            status: "failed",
            epoch,
            error: toHUBError(error, "Checkpoint upload failed"),
          }),
        );
      } catch (error) {
        const failure = toHUBError(
          error,
          `Cannot upload the checkpoint of epoch ${epoch}`,
        );
        logger.warn(failure.message);
        return Promise.resolve({ status: "failed", epoch, error: failure });
      }
    },

    async onTrainEnd(
      epoch: number,
      bestPath: string,
      map = 0,
    ): Promise<TrainEndReport> {
      logger.info("Syncing final model...");
      // The last epochs go first: the reference lost them right here.
      const metrics = session.modelId === undefined
        ? Promise.resolve(undefined)
        : session.uploadMetrics();
      let final: FinalUploadResult | undefined;
      let finalError: HUBError | undefined;
      try {
        final = await session.uploadModel(epoch, bestPath, {
          final: true,
          map,
          onProgress,
        });
      } catch (error) {
        finalError = toHUBError(error, "Final upload failed");
        logger.error(
          `The final weights were not uploaded: ${finalError.message}`,
        );
      }
      await metrics;
      const report = await session.close({ timeout: closeTimeout });
      return {
        ...report,
        final,
        finalError,
      };
    },
  };
}

/**
 * The hooks of {@linkcode hubCallbacks}, under their former name.
 *
 * @deprecated Use {@linkcode HUBCallbacks}: every export spells `HUB` in capitals.
 */
export type HubCallbacks = HUBCallbacks;
/**
 * The options of {@linkcode hubCallbacks}, under their former name.
 *
 * @deprecated Use {@linkcode HUBCallbacksOptions}.
 */
export type HubCallbacksOptions = HUBCallbacksOptions;
