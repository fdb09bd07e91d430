/**
 * Background checkpoint uploads: at most one runs at a time, each sends the
 * file as it was when it was submitted (a snapshot copy), and a newer
 * checkpoint replaces one still waiting.
 *
 * @module
 */

import { copyFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { HUBError } from "../common/errors.ts";
import { classifyFileError, readDenied } from "./weights_file.ts";

/** What became of a checkpoint upload. */
export type CheckpointOutcome =
  | { status: "uploaded"; epoch: number; size: number; sha256: string }
  | { status: "superseded"; epoch: number }
  | { status: "deferred"; epoch: number }
  | {
    status: "skipped";
    epoch: number;
    reason:
      | "rate-limit"
      | "missing-file"
      | "unreadable-file"
      | "closed"
      | "no-model";
    /** What was wrong with the file, e.g. "is a directory". */
    detail?: string | undefined;
  }
  | { status: "failed"; epoch: number; error: HUBError };

/** A submitted checkpoint, as handed to the sender. */
export interface CheckpointJob {
  /** Epoch of the checkpoint. */
  epoch: number;
  /** Path of the snapshot copy to send. */
  path: string;
  /** Path the trainer passed. */
  source: string;
  /** Whether it is the best model so far. */
  isBest: boolean;
}

/** Options for {@linkcode CheckpointUploader}. */
export interface CheckpointUploaderOptions {
  /** Sends one snapshot; rejects with a typed error when its budget is spent. */
  send(
    job: CheckpointJob,
  ): Promise<{ size: number; sha256: string }>;
  /** Turns whatever `send` rejected with into a typed error. */
  toError(error: unknown): HUBError;
}

interface Waiting {
  job: CheckpointJob;
  resolve: (outcome: CheckpointOutcome) => void;
}

/**
 * Runs checkpoint uploads one at a time from snapshot copies.
 *
 * @example Submit a checkpoint
 * ```ts
 * import { CheckpointUploader } from "./checkpoints.ts";
 * import { HUBError } from "../common/errors.ts";
 *
 * const uploader = new CheckpointUploader({
 *   send: () => Promise.resolve({ size: 0, sha256: "" }),
 *   toError: (e) => new HUBError(String(e)),
 * });
 * const outcome = await uploader.submit(1, "missing.pt", false);
 * console.assert(outcome.status === "skipped");
 * await uploader.close();
 * ```
 */
export class CheckpointUploader {
  #options: CheckpointUploaderOptions;
  #dir: string | undefined;
  #waiting: Waiting | undefined;
  #running: Promise<void> | undefined;
  #closed = false;
  #failures: Array<{ epoch: number; error: HUBError }> = [];
  #seq = 0;

  /**
   * Creates an uploader.
   *
   * @param options How to send a snapshot.
   */
  constructor(options: CheckpointUploaderOptions) {
    this.#options = options;
  }

  /** Checkpoints whose upload failed, in order. */
  get failures(): ReadonlyArray<{ epoch: number; error: HUBError }> {
    return this.#failures;
  }

  /** Whether an upload is running or waiting. */
  get busy(): boolean {
    return this.#running !== undefined || this.#waiting !== undefined;
  }

  /**
   * Snapshots `path` now (synchronously, so the trainer may overwrite it as
   * soon as this returns) and queues its upload.
   *
   * @param epoch Epoch of the checkpoint.
   * @param path Path of the checkpoint file.
   * @param isBest Whether it is the best model so far.
   * @returns The outcome; the promise never rejects.
   */
  submit(
    epoch: number,
    path: string,
    isBest: boolean,
  ): Promise<CheckpointOutcome> {
    if (this.#closed) {
      return Promise.resolve({ status: "skipped", epoch, reason: "closed" });
    }
    let snapshot: string;
    const denied = readDenied(path);
    if (denied !== undefined) {
      return Promise.resolve({
        status: "skipped",
        epoch,
        reason: "unreadable-file",
        detail: denied.detail,
      });
    }
    try {
      const info = statSync(path);
      if (!info.isFile()) {
        return Promise.resolve({
          status: "skipped",
          epoch,
          reason: "unreadable-file",
          detail: info.isDirectory() ? "is a directory" : "is not a file",
        });
      }
      this.#dir ??= mkdtempSync(join(tmpdir(), "hub-session-"));
      snapshot = join(this.#dir, `ckpt-${++this.#seq}-epoch-${epoch}.pt`);
      copyFileSync(path, snapshot);
    } catch (error) {
      const { reason, detail } = classifyFileError(error);
      return Promise.resolve(
        reason === "missing"
          ? { status: "skipped", epoch, reason: "missing-file" }
          : { status: "skipped", epoch, reason: "unreadable-file", detail },
      );
    }
    const job: CheckpointJob = { epoch, path: snapshot, source: path, isBest };
    return new Promise<CheckpointOutcome>((resolve) => {
      const previous = this.#waiting;
      this.#waiting = { job, resolve };
      if (previous !== undefined) {
        void this.#discard(previous.job);
        previous.resolve({ status: "superseded", epoch: previous.job.epoch });
      }
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#running !== undefined || this.#waiting === undefined) return;
    const { job, resolve } = this.#waiting;
    this.#waiting = undefined;
    this.#running = (async () => {
      let outcome: CheckpointOutcome;
      try {
        const result = await this.#options.send(job);
        outcome = { status: "uploaded", epoch: job.epoch, ...result };
      } catch (cause) {
        const error = this.#options.toError(cause);
        this.#failures.push({ epoch: job.epoch, error });
        outcome = { status: "failed", epoch: job.epoch, error };
      }
      await this.#discard(job);
      resolve(outcome);
    })().finally(() => {
      this.#running = undefined;
      this.#pump();
    });
  }

  async #discard(job: CheckpointJob): Promise<void> {
    await rm(job.path, { force: true }).catch(() => {});
  }

  /**
   * Resolves once nothing is running or waiting.
   *
   * @returns A promise that resolves when the uploader is idle.
   */
  async idle(): Promise<void> {
    while (this.#running !== undefined) await this.#running;
  }

  /**
   * Drops a waiting checkpoint (its outcome: skipped, closed), waits for the
   * running one to settle, and removes the snapshot directory. Abort the
   * running upload through the sender's signal to end it sooner.
   *
   * @returns A promise that resolves once everything is cleaned up.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting !== undefined) {
      await this.#discard(waiting.job);
      waiting.resolve({
        status: "skipped",
        epoch: waiting.job.epoch,
        reason: "closed",
      });
    }
    await this.idle();
    if (this.#dir !== undefined) {
      try {
        rmSync(this.#dir, { recursive: true, force: true });
      } catch {
        // A temp directory we cannot remove is left for the OS to clean.
      }
      this.#dir = undefined;
    }
  }
}
