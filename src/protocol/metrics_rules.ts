/**
 * What one epoch's metrics may be: the one rule client and server share, so
 * that a client refuses at once what the server would refuse later.
 *
 * The bounds keep what a model holds, and so every page and reply built from
 * it, bounded: at most {@linkcode MAX_EPOCHS_PER_MODEL} epochs of at most
 * {@linkcode MAX_EPOCH_METRICS_BYTES} each, with at most
 * {@linkcode MAX_METRIC_NAMES_PER_MODEL} distinct names over all epochs.
 *
 * @module
 */

/** Largest epoch number. */
export const MAX_EPOCH = 99_999;

/** Most metrics in one epoch. */
export const MAX_METRICS_PER_EPOCH = 128;

/** Longest metric name, in UTF-16 code units. */
export const MAX_METRIC_NAME_LENGTH = 100;

/** Largest JSON encoding of one epoch's metrics, in bytes (UTF-8). */
export const MAX_EPOCH_METRICS_BYTES = 8 * 1024;

/** Most epochs in one metrics post. */
export const MAX_EPOCHS_PER_POST = 1000;

/** Most distinct epochs a model may hold. */
export const MAX_EPOCHS_PER_MODEL = 10_000;

/** Most distinct metric names a model may hold over all its epochs. */
export const MAX_METRIC_NAMES_PER_MODEL = 512;

/**
 * Says what is wrong with an epoch number, or `undefined` when it is valid:
 * an integer from 0 to {@linkcode MAX_EPOCH}.
 *
 * @param epoch The epoch.
 * @returns The problem, as the end of a sentence, or `undefined`.
 *
 * @example Check epochs
 * ```ts
 * import { epochProblem } from "./metrics_rules.ts";
 *
 * console.assert(epochProblem(3) === undefined);
 * console.assert(epochProblem(1e10) !== undefined);
 * ```
 */
export function epochProblem(epoch: number): string | undefined {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > MAX_EPOCH) {
    return `is not an integer from 0 to ${MAX_EPOCH}`;
  }
  return undefined;
}

/** What is wrong with one epoch's metrics. */
export interface MetricsProblem {
  /** The problem, as the end of a sentence ("the metrics of epoch 3 ..."). */
  reason: string;
  /** Whether the metrics are well-formed but over a bound (HTTP 413). */
  tooLarge: boolean;
}

/**
 * Says what is wrong with one epoch's metrics, or `undefined` when they are
 * valid: an object of at most {@linkcode MAX_METRICS_PER_EPOCH} names of
 * 1 to {@linkcode MAX_METRIC_NAME_LENGTH} characters, each a finite number
 * or `null` (a value sent as NaN/Infinity), at most
 * {@linkcode MAX_EPOCH_METRICS_BYTES} as JSON.
 *
 * @param metrics The epoch's metrics.
 * @returns The problem, or `undefined`.
 *
 * @example Check an epoch's metrics
 * ```ts
 * import { metricsProblem } from "./metrics_rules.ts";
 *
 * console.assert(metricsProblem({ "train/loss": 0.5 }) === undefined);
 * console.assert(metricsProblem({ "train/loss": "low" }) !== undefined);
 * ```
 */
export function metricsProblem(metrics: unknown): MetricsProblem | undefined {
  if (
    typeof metrics !== "object" || metrics === null || Array.isArray(metrics)
  ) {
    return { reason: "are not an object of numbers", tooLarge: false };
  }
  let count = 0;
  for (const [name, value] of Object.entries(metrics)) {
    if (++count > MAX_METRICS_PER_EPOCH) {
      return {
        reason: `have more than ${MAX_METRICS_PER_EPOCH} metrics`,
        tooLarge: true,
      };
    }
    if (name.length === 0 || name.length > MAX_METRIC_NAME_LENGTH) {
      return {
        reason:
          `have a metric name of ${name.length} characters, not 1 to ${MAX_METRIC_NAME_LENGTH}`,
        tooLarge: name.length > 0,
      };
    }
    if (
      value !== null && (typeof value !== "number" || !Number.isFinite(value))
    ) {
      return {
        reason: `have the metric ${JSON.stringify(name)} that is not a number`,
        tooLarge: false,
      };
    }
  }
  const bytes = new TextEncoder().encode(JSON.stringify(metrics)).length;
  if (bytes > MAX_EPOCH_METRICS_BYTES) {
    return {
      reason:
        `take ${bytes} bytes as JSON, more than ${MAX_EPOCH_METRICS_BYTES}`,
      tooLarge: true,
    };
  }
  return undefined;
}
