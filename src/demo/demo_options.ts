/**
 * The options and the summary of `runDemo()`, and the demo's rate
 * limits.
 *
 * @module
 */

import type { TrainEndReport } from "../session/callbacks.ts";
import type { RateLimits } from "../session/options.ts";
import type { Logger, ProgressCallback } from "../protocol/types.ts";
import type { TinyTrainerOptions } from "./trainer_options.ts";

/**
 * The demo's rate limits, in milliseconds: small, so that a few seconds of
 * training show several uploads (the hosted HUB wanted 3 s for metrics and
 * 15 min for checkpoints).
 *
 * @example Read the demo's limits
 * ```ts
 * import { DEMO_RATE_LIMITS } from "./demo_options.ts";
 *
 * console.log(`metrics every ${DEMO_RATE_LIMITS.metrics} ms`);
 * ```
 */
export const DEMO_RATE_LIMITS: Readonly<RateLimits> = Object.freeze({
  metrics: 500,
  ckpt: 1_000,
  heartbeat: 300_000,
});

/**
 * Options for `runDemo()`.
 *
 * @example Options for a short run in a scratch directory
 * ```ts
 * import type { DemoOptions } from "./demo_options.ts";
 *
 * const options: DemoOptions = {
 *   epochs: 3,
 *   dir: "/tmp/hub-demo",
 *   trainer: { samples: 200, hidden: 8 },
 *   write: () => {},
 *   logger: "quiet",
 * };
 * console.assert(options.epochs === 3);
 * ```
 */
export interface DemoOptions {
  /**
   * API root of a HUB to train against instead of the embedded local one.
   *
   * @default {undefined: start the embedded local HUB on a free port}
   */
  hub?: string | undefined;
  /**
   * API key for `hub`; never printed.
   *
   * @default {env HUB_API_KEY, else the Ultralytics settings file (only with `hub`)}
   */
  apiKey?: string | undefined;
  /**
   * Number of epochs to train.
   *
   * @default {20}
   */
  epochs?: number | undefined;
  /**
   * Directory for the embedded HUB's data, the journal and the local weights
   * (`runs/<model id>/weights`); relative paths start at the working
   * directory.
   *
   * @default {"./.hub-data"}
   */
  dir?: string | undefined;
  /**
   * Further options of the tiny trainer (`epochs` comes from `epochs`).
   *
   * @default {{ hidden: 64, samples: 6000 }}
   */
  trainer?: Omit<TinyTrainerOptions, "epochs" | "signal"> | undefined;
  /**
   * Rate limits of the session.
   *
   * @default {DEMO_RATE_LIMITS}
   */
  rateLimits?: Partial<RateLimits> | undefined;
  /**
   * Receives each line the demo prints.
   *
   * @default {console.log}
   */
  write?: ((line: string) => void) | undefined;
  /**
   * Where the session's and the hooks' own messages go; `"quiet"` drops them.
   *
   * @default {console, with the "HUB: " prefix}
   */
  logger?: Logger | "quiet" | undefined;
  /**
   * Progress of the final upload.
   *
   * @default {a progress bar when standard error is a terminal}
   */
  onProgress?: ProgressCallback | undefined;
  /**
   * Stops the training and the demo.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/**
 * What `runDemo()` did, as read back from the HUB.
 *
 * @example Decide whether the demo succeeded
 * ```ts
 * import type { DemoSummary } from "./demo_options.ts";
 *
 * function succeeded(summary: DemoSummary): boolean {
 *   return summary.allEpochsStored && summary.final.match;
 * }
 * console.assert(typeof succeeded === "function");
 * ```
 */
export interface DemoSummary {
  /** API root the demo trained against. */
  hubUrl: string;
  /** Whether the HUB was the embedded local one (stopped at the end). */
  embedded: boolean;
  /** Absolute directory of the embedded HUB's data, journal and local weights. */
  dir: string;
  /** Id of the model created on the HUB. */
  modelId: string;
  /** API URL of the model document: `<hub>/v1/models/<id>`. */
  modelUrl: string;
  /** Number of epochs trained. */
  epochs: number;
  /** Epochs whose metrics the HUB has stored, read back after training. */
  storedEpochs: number[];
  /** Every trained epoch is stored on the HUB. */
  allEpochsStored: boolean;
  /** Training loss of the first and of the last epoch. */
  loss: { first: number; last: number };
  /** Validation accuracy of the first and of the last epoch. */
  accuracy: { first: number; last: number };
  /** Epochs whose checkpoint was uploaded. */
  checkpointsUploaded: number[];
  /** Checkpoints not uploaded: rate limit, superseded by a newer one, or failed. */
  checkpointsSkipped: number;
  /** The final weights. */
  final: {
    /** Local path of the uploaded file. */
    path: string;
    /** Size in bytes. */
    size: number;
    /** SHA-256 of the local file. */
    sha256: string;
    /** SHA-256 the HUB stored for the file. */
    serverSha256: string;
    /** The two hashes are equal. */
    match: boolean;
  };
  /** Directory of the local weights (`last.pt`, `best.pt`). */
  weightsDir: string;
  /** Directory of the model's files on the embedded HUB. */
  serverModelDir: string | undefined;
  /** The report of the end of training (close report and final upload). */
  report: TrainEndReport;
  /** Wall-clock duration in milliseconds. */
  durationMs: number;
}
