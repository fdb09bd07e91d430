/**
 * The errors of the storage contract (`contract.ts`), which every backend
 * throws and the server maps to replies (`503`, `413`, `400`), and the
 * per-model bounds every backend checks with
 * {@linkcode checkMetricsUsage}. `contract.ts` re-exports them all.
 *
 * Internal to the server.
 *
 * @module
 */

import {
  MAX_EPOCHS_PER_MODEL,
  MAX_METRIC_NAMES_PER_MODEL,
} from "../../protocol/metrics_rules.ts";

/**
 * A backend cannot be reached right now; the server answers `503` with
 * `Retry-After`.
 *
 * @example Refuse while the database restarts
 * ```ts
 * import { StorageUnavailableError } from "./errors.ts";
 *
 * const error = new StorageUnavailableError(
 *   "Cannot reach PostgreSQL as the connection was refused",
 *   { retryAfterSeconds: 2 },
 * );
 * console.log(error.retryAfterSeconds); // 2
 * ```
 */
export class StorageUnavailableError extends Error {
  /** Seconds the client should wait before retrying. */
  readonly retryAfterSeconds: number;

  /**
   * Creates the error.
   *
   * @param message What cannot be reached, sentence case.
   * @param options `retryAfterSeconds` (default 1) and `cause`.
   */
  constructor(
    message: string,
    options?: { retryAfterSeconds?: number | undefined; cause?: unknown },
  ) {
    super(
      message,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "StorageUnavailableError";
    this.retryAfterSeconds = Math.max(
      1,
      Math.ceil(options?.retryAfterSeconds ?? 1),
    );
  }
}

/**
 * A write would make a model hold more than the bounds of
 * `protocol/metrics_rules.ts` (epochs, distinct metric names) or of the
 * server (document size); nothing was written. The server answers `413`.
 *
 * @example Refuse one epoch too many
 * ```ts
 * import { ModelLimitError } from "./errors.ts";
 *
 * const error = new ModelLimitError(
 *   "Cannot store the metrics as the model would hold more than 10000 epochs",
 * );
 * console.log(error.name); // "ModelLimitError"
 * ```
 */
export class ModelLimitError extends Error {
  /**
   * Creates the error.
   *
   * @param message What limit the write would pass, sentence case.
   */
  constructor(message: string) {
    super(message);
    this.name = "ModelLimitError";
  }
}

/** What a model would hold after a metrics upsert. */
export interface MetricsUsage {
  /** Distinct epochs. */
  epochs: number;
  /** Distinct metric names over all its epochs. */
  names: number;
}

/**
 * The per-model bounds of `MetricsStore.upsertMetrics` (`contract.ts`), in one
 * place for every backend: each computes, inside its atomic step, what the
 * model would hold and calls this before it writes anything. The storage
 * contract tests check every backend against it.
 *
 * @param usage What the model would hold after the upsert.
 * @throws {ModelLimitError} When it would hold more than
 * `MAX_EPOCHS_PER_MODEL` epochs or `MAX_METRIC_NAMES_PER_MODEL` distinct
 * metric names.
 *
 * @example Refuse the epoch after the last one allowed
 * ```ts
 * import { checkMetricsUsage, ModelLimitError } from "./errors.ts";
 *
 * checkMetricsUsage({ epochs: 10, names: 3 }); // within the bounds
 * try {
 *   checkMetricsUsage({ epochs: 10_001, names: 3 });
 * } catch (error) {
 *   console.log(error instanceof ModelLimitError); // true
 * }
 * ```
 */
export function checkMetricsUsage(usage: MetricsUsage): void {
  if (usage.epochs > MAX_EPOCHS_PER_MODEL) {
    throw new ModelLimitError(
      `Cannot store the metrics as the model would hold more than ${MAX_EPOCHS_PER_MODEL} epochs`,
    );
  }
  if (usage.names > MAX_METRIC_NAMES_PER_MODEL) {
    throw new ModelLimitError(
      `Cannot store the metrics as the model would hold more than ${MAX_METRIC_NAMES_PER_MODEL} distinct metric names`,
    );
  }
}

/**
 * The bytes of a blob do not have the sha256 the client sent; the server
 * answers `400`.
 *
 * @example Report a mismatch
 * ```ts
 * import { BlobChecksumError } from "./errors.ts";
 *
 * const error = new BlobChecksumError("a".repeat(64), "b".repeat(64));
 * console.log(error.actual === "a".repeat(64)); // true
 * ```
 */
export class BlobChecksumError extends Error {
  /** The sha256 of the bytes received. */
  readonly actual: string;
  /** The sha256 the client sent. */
  readonly expected: string;

  /**
   * Creates the error.
   *
   * @param actual The sha256 of the bytes received.
   * @param expected The sha256 the client sent.
   */
  constructor(actual: string, expected: string) {
    super(
      `Checksum mismatch: the file part's sha256 is ${actual}, the client sent ${expected}`,
    );
    this.name = "BlobChecksumError";
    this.actual = actual;
    this.expected = expected;
  }
}
