/**
 * The options and reports of `HUBTrainingSession`: what a caller
 * passes in and what it gets back, in one place.
 *
 * @module
 */

import type { HUBError } from "../common/errors.ts";
import type { HUBClient, RequestOptions } from "../transport/client.ts";
import type { ConfigOptions } from "./config.ts";
import type { BackoffOptions, BudgetOverrides } from "./request_runner.ts";
import type {
  CreateModelPayload,
  Logger,
  ProgressCallback,
  TrainArgs,
} from "../protocol/types.ts";

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

/**
 * What the session needs from a server: one transport per wire protocol
 * (the HUB v1 {@linkcode HUBClient}, the Ultralytics Platform's
 * `PlatformTransport`), with two optional capabilities.
 */
export type SessionTransport =
  & Pick<
    HUBClient,
    "getModel" | "uploadMetrics" | "uploadModel" | "heartbeat"
  >
  & {
    /**
     * Creates the model (or starts the run) from the create payload; the
     * trainer's own arguments come along for protocols that send them.
     */
    createModel(
      payload: CreateModelPayload,
      options?: RequestOptions & { trainArgs?: TrainArgs | undefined },
    ): Promise<string>;
    /** The model's web page, when the server has its own address scheme. */
    modelUrl?: ((id: string) => string) | undefined;
    /**
     * The model's address for programs, when the protocol has no
     * `<apiRoot>/v1/models/<id>` document (the Platform: its model page).
     */
    apiUrl?: ((id: string) => string) | undefined;
    /** Aborted when the server says the user stopped the run. */
    readonly cancelSignal?: AbortSignal | undefined;
  };

/** Options for `HUBTrainingSession.create`. */
export interface SessionOptions extends ConfigOptions {
  /**
   * Ultralytics Platform base URL for a `ul://<owner>/<project>/<name>`
   * identifier; else `ULTRALYTICS_PLATFORM_URL`, else
   * `https://platform.ultralytics.com` (webhooks at `PLATFORM_API_URL` when
   * set). The key comes from `apiKey`, else `ULTRALYTICS_API_KEY`.
   *
   * @default {undefined}
   */
  platformUrl?: string | undefined;
  /** `fetch` to use, e.g. to route through a proxy. @default {globalThis.fetch} */
  fetch?: typeof fetch | undefined;
  /** Aborts every request of the session. @default {undefined} */
  signal?: AbortSignal | undefined;
  /**
   * Where messages go; `"quiet"` drops them. Lines never contain the API key.
   *
   * @default {console, with the "HUB: " prefix}
   */
  logger?: Logger | "quiet" | undefined;
  /** Minimum time between uploads, in milliseconds. @default {DEFAULT_RATE_LIMITS} */
  rateLimits?: Partial<RateLimits> | undefined;
  /**
   * Attempts, overall deadline and per-attempt timeout for each kind of
   * request (`metrics`, `checkpoint`, `final`, `heartbeat`, `other`), in
   * milliseconds.
   *
   * @default {metrics 3 in 30 s, checkpoint 10 in 1 h, final 10 in 1 h, heartbeat 1 of 30 s}
   */
  budgets?: BudgetOverrides | undefined;
  /**
   * Backoff between attempts, with the option names of `@std/async`'s retry.
   *
   * @default {{ minTimeout: 1000, maxTimeout: 60000, multiplier: 2, jitter: 1 }}
   */
  backoff?: BackoffOptions | undefined;
  /** Time limit of one ordinary request, in milliseconds. @default {30000} */
  timeout?: number | undefined;
  /** Send heartbeats while the session is open. @default {true} */
  heartbeat?: boolean | undefined;
  /**
   * Transport to talk to the HUB with, instead of a {@linkcode HUBClient}
   * built from the other options.
   *
   * @default {undefined}
   */
  transport?: SessionTransport | undefined;
  /**
   * Root directory of the crash-safe journal (one directory per server and
   * model), or `false` to keep unacknowledged metrics in memory only.
   *
   * @default {defaultJournalRoot(): the OS cache directory's hub-session/journal}
   */
  journal?: string | false | undefined;
  /**
   * Work without the server: metrics, checkpoints and the final weights go
   * to the journal, to be delivered later with `syncJournal()`. A session
   * whose server cannot be reached when it opens goes offline by itself
   * when a journal is enabled.
   *
   * @default {false}
   */
  offline?: boolean | undefined;
}

/** Options for `HUBTrainingSession.uploadModel`. */
export interface UploadModelCallOptions {
  /** The checkpoint is the best model so far. @default {false} */
  isBest?: boolean | undefined;
  /** Mean average precision of the final model. @default {0} */
  map?: number | undefined;
  /** Upload the final weights (awaited) rather than a checkpoint. @default {false} */
  final?: boolean | undefined;
  /**
   * Class names of the final model, index = class id: the Ultralytics
   * Platform receives them with `training_complete` (a HUB v1 server has no
   * field for them and ignores them). Left out when not given.
   *
   * @default {undefined}
   */
  classNames?: readonly string[] | undefined;
  /** Ignore the checkpoint rate limit. @default {false} */
  force?: boolean | undefined;
  /**
   * Upload progress of the final weights; by default a progress bar is drawn
   * when standard error is a terminal, and a line at a bounded rate when it
   * is not.
   *
   * @default {undefined}
   */
  onProgress?: ProgressCallback | undefined;
  /** Aborts this upload. @default {undefined} */
  signal?: AbortSignal | undefined;
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
  /**
   * Epochs the server refused in this upload (a 400 about that epoch): set
   * aside so that they never block the others.
   */
  rejected: number[];
  /** Why the upload failed, when it did; the epochs stay queued. */
  error?: HUBError | undefined;
}

/** What `HUBTrainingSession.flush` and `close()` report. */
export interface FlushReport {
  /** Everything queued was delivered or given up on before the timeout. */
  settled: boolean;
  /** Epochs the server never acknowledged. */
  pendingEpochs: number[];
  /** Epochs the server refused (a 400 about that epoch), set aside. */
  rejectedEpochs: number[];
  /** Checkpoint uploads that failed, with their errors. */
  failedUploads: Array<{ epoch: number; error: HUBError }>;
  /** Requests still in flight when the report was made. */
  pendingRequests: number;
}

/** Options for `HUBTrainingSession.flush` and `close()`. */
export interface FlushOptions {
  /**
   * How long to wait for queued work, in milliseconds; `Infinity` waits as
   * long as the requests' own budgets allow.
   *
   * @default {30000}
   */
  timeout?: number | undefined;
}

/**
 * Throws unless every rate limit is a finite number of milliseconds >= 0.
 *
 * @param limits The limits to check.
 * @throws {RangeError} On a limit out of range.
 */
export function checkRateLimits(limits: RateLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (typeof value !== "number" || !(value >= 0) || value === Infinity) {
      throw new RangeError(
        `Cannot use rate limit "${name}" of ${value}: pass a finite number of milliseconds >= 0`,
      );
    }
  }
}
