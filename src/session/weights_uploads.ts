/**
 * The session's weights: checkpoints in the background (snapshot, one at a
 * time, under the rate limit, said once when skipped by it) and the final
 * weights (awaited, with progress), or both kept in the journal when the
 * session works offline.
 *
 * @module
 */

import { basename } from "node:path";
import { stat } from "node:fs/promises";
import { HUBError, HUBModelError, toHUBError } from "../common/errors.ts";
import { sha256File } from "../common/hash.ts";
import type { UploadModelOptions, UploadResult } from "../transport/client.ts";
import { CheckpointUploader } from "./checkpoints.ts";
import type { CheckpointOutcome } from "./checkpoints.ts";
import type { MetricsJournal } from "./journal.ts";
import type {
  FinalUploadResult,
  SessionTransport,
  UploadModelCallOptions,
} from "./options.ts";
import { createProgressReporter } from "./progress.ts";
import type { RequestRunner } from "./request_runner.ts";
import { resolveFinalPath } from "./weights_file.ts";
import type { Logger } from "../protocol/types.ts";

/** What the weights uploads need from their session. */
export interface WeightsUploadsOptions {
  /** Runs the uploads with the checkpoint and final budgets. */
  runner: RequestRunner;
  /** The session's transport. */
  transport: SessionTransport;
  /** Where skipped and delivered weights are reported. */
  logger: Logger;
  /** Minimum time between two checkpoint uploads, in milliseconds. */
  interval: number;
  /** The model id, once the model exists. */
  modelId: () => string | undefined;
  /** The model's page, for the closing line. */
  modelUrl: () => string | undefined;
  /** Whether the session works offline (into the journal). */
  offline: () => boolean;
  /** Whether the session is closing. */
  closed: () => boolean;
  /** The model's journal, opened on demand. */
  journal: () => MetricsJournal | undefined;
  /** Runs before the final weights are sent (e.g. send the pending epochs). */
  beforeFinal?: (() => Promise<void>) | undefined;
}

/**
 * Checkpoint and final weights uploads of one session.
 *
 * @example Wired by the session
 * ```ts ignore
 * const weights = new WeightsUploads({ runner, transport, logger,
 *   interval: 900_000, modelId: () => id, modelUrl: () => url,
 *   offline: () => false, closed: () => false, journal: () => undefined });
 * await weights.checkpoint(3, "runs/last.pt", { isBest: true });
 * ```
 */
export class WeightsUploads {
  #o: WeightsUploadsOptions;
  #checkpoints: CheckpointUploader;
  #lastCkptUpload = -Infinity;
  #rateLimitSaid = false;

  /**
   * Creates the uploads of a session.
   *
   * @param options What they need from the session.
   */
  constructor(options: WeightsUploadsOptions) {
    this.#o = options;
    this.#checkpoints = new CheckpointUploader({
      send: (job) =>
        this.#o.runner.run(
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

  /** Checkpoint uploads that failed, in order. */
  get failures(): ReadonlyArray<{ epoch: number; error: HUBError }> {
    return this.#checkpoints.failures;
  }

  /** Resolves once no checkpoint upload runs or waits. */
  idle(): Promise<void> {
    return this.#checkpoints.idle();
  }

  /** Drops a waiting checkpoint, waits for the running one, cleans up. */
  close(): Promise<void> {
    return this.#checkpoints.close();
  }

  /**
   * Uploads a checkpoint in the background (snapshot now, one at a time,
   * under the rate limit), or keeps it in the journal when offline.
   *
   * @param epoch Epoch of the checkpoint.
   * @param path Path of the checkpoint file.
   * @param options Whether it is the best so far, and `force`.
   * @returns What became of it; never rejects.
   */
  checkpoint(
    epoch: number,
    path: string,
    options: UploadModelCallOptions,
  ): Promise<CheckpointOutcome> {
    if (this.#o.closed()) {
      return Promise.resolve({ status: "skipped", epoch, reason: "closed" });
    }
    if (this.#o.modelId() === undefined) {
      this.#o.logger.warn(
        `Checkpoint of epoch ${epoch} not uploaded: the session has no model yet (call createModel() first)`,
      );
      return Promise.resolve({ status: "skipped", epoch, reason: "no-model" });
    }
    if (this.#o.offline()) {
      return Promise.resolve(this.#defer(epoch, path, options, "checkpoint"));
    }
    const now = performance.now();
    if (
      options.force !== true &&
      now - this.#lastCkptUpload < this.#o.interval
    ) {
      this.#sayRateLimited(epoch, now);
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
      if (result.status === "skipped") this.#warnSkipped(result, path);
    });
    this.#lastCkptUpload = now;
    return outcome;
  }

  /** Says once, at info level, that checkpoints are rate-limited. */
  #sayRateLimited(epoch: number, now: number): void {
    if (this.#rateLimitSaid) return;
    this.#rateLimitSaid = true;
    const limit = this.#o.interval;
    const next = Math.ceil((this.#lastCkptUpload + limit - now) / 1000);
    this.#o.logger.info(
      `Checkpoints are rate-limited to one every ${
        formatSeconds(limit / 1000)
      } (rateLimits.ckpt): the checkpoint of epoch ${epoch} is skipped, the next one may go in ${
        formatSeconds(next)
      }; the final weights are always uploaded (said once)`,
    );
  }

  #warnSkipped(outcome: CheckpointOutcome, path: string): void {
    if (outcome.status !== "skipped") return;
    if (outcome.reason === "missing-file") {
      this.#o.logger.warn(
        `Model upload issue: missing checkpoint ${path} (epoch ${outcome.epoch})`,
      );
    } else if (outcome.reason === "unreadable-file") {
      this.#o.logger.warn(
        `Model upload issue: checkpoint ${path} (epoch ${outcome.epoch}) ${
          outcome.detail ?? "cannot be read"
        }: check the path and its permissions`,
      );
    }
  }

  #defer(
    epoch: number,
    path: string,
    options: UploadModelCallOptions,
    kind: "checkpoint" | "final",
  ): CheckpointOutcome {
    const journal = this.#o.journal();
    try {
      if (journal === undefined) throw new Error("no journal");
      journal.deferWeights(path, {
        kind,
        epoch,
        isBest: options.isBest ?? false,
        map: options.map ?? 0,
        ...(options.classNames === undefined
          ? {}
          : { classNames: [...options.classNames] }),
      });
      return { status: "deferred", epoch };
    } catch {
      if (kind === "checkpoint") {
        this.#o.logger.warn(
          `Model upload issue: missing checkpoint ${path} (epoch ${epoch})`,
        );
      }
      return { status: "skipped", epoch, reason: "missing-file" };
    }
  }

  /**
   * Uploads the final weights (awaited, with progress), falling back to
   * `last.pt` beside a missing `best.pt`, or keeps them in the journal when
   * offline.
   *
   * @param epoch Epoch of the weights.
   * @param weightsPath Path the trainer passed.
   * @param options `map`, progress and signal.
   * @returns What was delivered.
   */
  async final(
    epoch: number,
    weightsPath: string,
    options: UploadModelCallOptions,
  ): Promise<FinalUploadResult> {
    const id = this.#o.modelId();
    if (id === undefined) {
      throw new HUBModelError(
        "Cannot upload the final weights as the session has no model: call createModel() first",
      );
    }
    const path = await resolveFinalPath(weightsPath, this.#o.logger);
    if (this.#o.offline()) {
      const outcome = this.#defer(epoch, path, options, "final");
      if (outcome.status !== "deferred") {
        throw new HUBError(
          `Cannot keep ${path} in the journal: check that it is readable`,
        );
      }
      const { size } = await stat(path);
      this.#o.logger.info(
        `Final weights kept in the journal: deliver them with syncJournal()`,
      );
      return { path, size, sha256: await sha256File(path), deferred: true };
    }
    await this.#o.beforeFinal?.();
    const reporter = options.onProgress === undefined
      ? createProgressReporter({
        label: `Uploading ${basename(path)}`,
        logger: this.#o.logger,
      })
      : undefined;
    const onProgress = options.onProgress ?? reporter?.onProgress;
    try {
      const result = await this.#o.runner.run(
        "final",
        `final upload of ${basename(path)}`,
        ({ signal }) =>
          this.#sendWeights({
            epoch,
            file: path,
            type: "final",
            map: options.map ?? 0,
            ...(options.classNames === undefined
              ? {}
              : { classNames: options.classNames }),
            onProgress,
            signal,
          }),
        { signal: options.signal },
      );
      reporter?.done();
      this.#o.logger.info(`Final weights uploaded: ${this.#o.modelUrl()}`);
      return {
        path,
        size: result.size,
        sha256: result.sha256,
        deferred: false,
      };
    } catch (error) {
      reporter?.done();
      throw error;
    }
  }

  #sendWeights(options: UploadModelOptions): Promise<UploadResult> {
    const id = this.#o.modelId();
    if (id === undefined) {
      return Promise.reject(
        new HUBModelError("Cannot upload weights as the session has no model"),
      );
    }
    return this.#o.transport.uploadModel(id, options);
  }
}

function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  const m = Math.round(s / 60);
  return m < 120 ? `${m} min` : `${Math.round(m / 60)} h`;
}
