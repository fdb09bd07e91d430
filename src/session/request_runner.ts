/**
 * Background requests with a retry budget per kind (metrics, checkpoint,
 * final upload, heartbeat), tracked so that `flush()` can wait for all of
 * them and `abort()` can stop them.
 *
 * @module
 */

import { HUBRequestError, HUBTimeoutError } from "../common/errors.ts";
import type { Logger } from "../protocol/types.ts";
import { delay, retry, RetryError } from "./retry.ts";

/** What a request is for; each kind has its own {@linkcode RequestBudget}. */
export type RequestKind =
  | "metrics"
  | "checkpoint"
  | "final"
  | "heartbeat"
  | "other";

/** How much effort one request may take before it is given up. */
export interface RequestBudget {
  /** Attempts at most, the first included. */
  maxAttempts: number;
  /** Overall time limit in milliseconds, waits included. */
  deadline: number;
  /** Time limit of each attempt in milliseconds. */
  attemptTimeout: number;
}

const KINDS: readonly RequestKind[] = [
  "metrics",
  "checkpoint",
  "final",
  "heartbeat",
  "other",
];

/**
 * The budget of each kind of request: metrics 3 attempts within 30 s (what
 * fails stays queued for the next upload), checkpoint and final uploads 10
 * within 1 h, a heartbeat 1 (the next beat is the retry), anything else 5
 * within 1 min.
 *
 * @example Read a budget
 * ```ts
 * import { DEFAULT_BUDGETS } from "./request_runner.ts";
 *
 * console.assert(DEFAULT_BUDGETS.final.maxAttempts === 10);
 * ```
 */
export const DEFAULT_BUDGETS: Readonly<Record<RequestKind, RequestBudget>> =
  Object.freeze({
    metrics: Object.freeze({
      maxAttempts: 3,
      deadline: 30_000,
      attemptTimeout: 10_000,
    }),
    checkpoint: Object.freeze({
      maxAttempts: 10,
      deadline: 3_600_000,
      attemptTimeout: 600_000,
    }),
    final: Object.freeze({
      maxAttempts: 10,
      deadline: 3_600_000,
      attemptTimeout: 1_800_000,
    }),
    heartbeat: Object.freeze({
      maxAttempts: 1,
      deadline: 30_000,
      attemptTimeout: 30_000,
    }),
    other: Object.freeze({
      maxAttempts: 5,
      deadline: 60_000,
      attemptTimeout: 30_000,
    }),
  });

const NETWORK_ERROR_CODE =
  /^(E(CONNREFUSED|CONNRESET|CONNABORTED|PIPE|TIMEDOUT|AI_AGAIN|NETUNREACH|HOSTUNREACH|NETDOWN)|Connection\w*|FailedToOpenSocket|UND_ERR\w*)$/;
const NETWORK_ERROR_MESSAGE =
  /fetch failed|network|error sending request|connect|socket|connection|reset|closed|terminated|broken pipe|unexpected eof/i;

/**
 * Whether sending the same request again may succeed: a
 * {@linkcode HUBRequestError} that says so (network errors, 408, 429, 5xx),
 * a {@linkcode HUBTimeoutError} (an attempt ran out of time), and the raw
 * network errors `fetch` throws. Never an abort by the caller, nor a
 * programming error.
 *
 * @param error Anything an attempt threw.
 * @returns `true` if a retry may succeed.
 *
 * @example Classify errors
 * ```ts
 * import { isRetriableError } from "./request_runner.ts";
 * import { HUBRequestError } from "../common/errors.ts";
 *
 * const busy = new HUBRequestError("Cannot upload metrics: Busy", {
 *   method: "POST",
 *   path: "/v1/models/abc",
 *   status: 503,
 *   retriable: true,
 * });
 * console.assert(isRetriableError(busy));
 * console.assert(!isRetriableError(new DOMException("Closed", "AbortError")));
 * ```
 */
export function isRetriableError(error: unknown): boolean {
  if (error instanceof HUBRequestError) return error.retriable;
  if (error instanceof HUBTimeoutError) return true;
  if (!(error instanceof Error)) return false;
  if (error.name === "AbortError") return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && NETWORK_ERROR_CODE.test(code)) return true;
  return error instanceof TypeError &&
    NETWORK_ERROR_MESSAGE.test(error.message);
}

/**
 * A short, single-line reason for an error, fit for a log line: the status
 * and the server's message for a {@linkcode HUBRequestError}, the message
 * otherwise. Query strings and `key=`/`token=` values are removed, so no API
 * key can leak through it.
 *
 * @param error Anything that was thrown.
 * @returns The reason, at most 300 characters.
 *
 * @example Describe a refused request
 * ```ts
 * import { describeError } from "./request_runner.ts";
 * import { HUBRequestError } from "../common/errors.ts";
 *
 * const error = new HUBRequestError("Cannot load the model: Not found", {
 *   method: "GET",
 *   path: "/v1/models/abc",
 *   status: 404,
 *   serverMessage: "Model not found",
 *   retriable: false,
 * });
 * console.assert(describeError(error) === "HTTP 404: Model not found");
 * ```
 */
export function describeError(error: unknown): string {
  let text: string;
  if (error instanceof HUBRequestError) {
    if (error.status !== undefined) {
      text = `HTTP ${error.status}: ${error.serverMessage ?? error.message}`;
    } else {
      text = `network error: ${error.message}`;
    }
  } else if (error instanceof RetryError) {
    text = `${error.attempts} attempts failed, last with ${
      describeError(error.cause)
    }`;
  } else if (error instanceof Error) {
    const base = error.name === "Error" || error instanceof HUBTimeoutError
      ? error.message
      : `${error.name}: ${error.message}`;
    const cause = error.cause instanceof Error ? error.cause.message : "";
    text = cause && !base.includes(cause) ? `${base} (${cause})` : base;
  } else {
    text = String(error);
  }
  text = text
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s?#"'<>]*)[?#][^\s"'<>)]*/gi, "$1")
    .replace(/\b(api[_-]?key|key|token|secret)=[^&\s"']+/gi, "$1=***")
    .replace(/\s+/g, " ")
    .trim();
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}

/** Backoff between the attempts of a request, as in {@linkcode retry}. */
export interface RequestBackoff {
  /**
   * Minimum (and first) wait in milliseconds.
   *
   * @default {1000}
   */
  minTimeout?: number | undefined;
  /**
   * Maximum computed wait in milliseconds (a server's `Retry-After` may ask for more).
   *
   * @default {60000}
   */
  maxTimeout?: number | undefined;
  /**
   * Growth of the wait after each retry.
   *
   * @default {2}
   */
  multiplier?: number | undefined;
  /**
   * Share of the wait that is randomised, from 0 to 1.
   *
   * @default {1}
   */
  jitter?: number | undefined;
}

/** Options for {@linkcode RequestQueue}. */
export interface RequestQueueOptions {
  /** Where retries (warn) and final failures (error) are reported. */
  logger: Logger;
  /**
   * Overrides of {@linkcode DEFAULT_BUDGETS}, per kind and per field.
   *
   * @default {{}}
   */
  budgets?: Partial<Record<RequestKind, Partial<RequestBudget>>> | undefined;
  /**
   * Backoff between attempts.
   *
   * @default {{ minTimeout: 1000, maxTimeout: 60000, multiplier: 2, jitter: 1 }}
   */
  backoff?: RequestBackoff | undefined;
  /**
   * Aborts every request of the queue, like {@linkcode RequestQueue.abort}.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** Options of one {@linkcode RequestQueue.run} call. */
export interface RunOptions {
  /**
   * Aborts this request only; it rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
  /**
   * Overrides of the kind's budget for this request.
   *
   * @default {{}}
   */
  budget?: Partial<RequestBudget> | undefined;
}

/** What the operation passed to {@linkcode RequestQueue.run} receives. */
export interface RequestContext {
  /** Number of this attempt, starting at 1. */
  attempt: number;
  /** Aborts on the attempt timeout, the deadline, or an abort; pass it to `fetch`. */
  signal: AbortSignal;
}

/** Counters of a {@linkcode RequestQueue}. */
export interface RequestStats {
  /** Retries made, by reason: the HTTP status, `"network"` or `"timeout"`. */
  retries: Record<string, number>;
  /** Requests that failed for good (aborts not counted). */
  failed: number;
  /** Requests that succeeded. */
  succeeded: number;
}

/** What {@linkcode RequestQueue.flush} reports. */
export interface FlushResult {
  /** Every tracked request settled before the timeout. */
  settled: boolean;
  /** Requests still in flight when `flush()` returned. */
  pending: number;
}

/** Options of {@linkcode RequestQueue.flush}. */
export interface FlushOptions {
  /**
   * Longest wait in milliseconds.
   *
   * @default {Infinity}
   */
  timeout?: number | undefined;
}

/**
 * Runs requests in the background with a retry budget per kind, and keeps
 * track of them.
 *
 * Each request is retried per its kind's {@linkcode RequestBudget} when
 * {@linkcode isRetriableError} says it may succeed; each retry is logged as a
 * warning with a short reason, a final failure once as an error with the
 * server's message and what to do. The promise `run()` returns rejects with
 * that final error, so the caller must handle it; the queue's own tracking
 * never causes an unhandled rejection.
 *
 * @example Send a request with retries, then wait for everything
 * ```ts
 * import { RequestQueue } from "./request_runner.ts";
 *
 * const queue = new RequestQueue({
 *   logger: console,
 *   backoff: { minTimeout: 1, maxTimeout: 10 },
 * });
 * let calls = 0;
 * const answer = await queue.run("metrics", "metrics upload", () => {
 *   calls++;
 *   return Promise.resolve(42);
 * });
 * const report = await queue.flush({ timeout: 1_000 });
 * console.assert(answer === 42 && calls === 1 && report.settled);
 * ```
 */
export class RequestQueue {
  #logger: Logger;
  #budgets: Record<RequestKind, RequestBudget>;
  #backoff: {
    minTimeout: number;
    maxTimeout: number;
    multiplier: number;
    jitter: number;
  };
  #controller = new AbortController();
  #signal: AbortSignal;
  #tracked = new Set<Promise<void>>();

  /** Counters of retries, failures and successes so far. */
  readonly stats: RequestStats = { retries: {}, failed: 0, succeeded: 0 };

  /**
   * Creates a queue.
   *
   * @param options The logger, and optional budgets, backoff and signal.
   * @throws {TypeError} If the logger lacks a method or a budget names an unknown kind.
   * @throws {RangeError} If a budget or backoff value is out of range.
   */
  constructor(options: RequestQueueOptions) {
    const { logger, budgets = {}, backoff = {}, signal } = options ?? {};
    if (
      typeof logger?.info !== "function" ||
      typeof logger.warn !== "function" ||
      typeof logger.error !== "function"
    ) {
      throw new TypeError(
        "Cannot create the request queue as 'logger' must have info, warn and error methods",
      );
    }
    for (const kind of Object.keys(budgets)) {
      if (!KINDS.includes(kind as RequestKind)) {
        throw new TypeError(
          `Cannot create the request queue as budget kind "${kind}" is unknown: use one of ${
            KINDS.join(", ")
          }`,
        );
      }
    }
    const merged = {} as Record<RequestKind, RequestBudget>;
    for (const kind of KINDS) {
      merged[kind] = mergeBudget(DEFAULT_BUDGETS[kind], budgets[kind], kind);
    }
    const {
      minTimeout = 1_000,
      maxTimeout = 60_000,
      multiplier = 2,
      jitter = 1,
    } = backoff;
    checkNumber("backoff.minTimeout", minTimeout, 0, false);
    checkNumber("backoff.maxTimeout", maxTimeout, 0, true);
    if (minTimeout > maxTimeout) {
      throw new RangeError(
        `Cannot create the request queue as 'backoff.minTimeout' must be <= 'backoff.maxTimeout': current values ${minTimeout} and ${maxTimeout}`,
      );
    }
    checkNumber("backoff.multiplier", multiplier, 1, false);
    if (!Number.isFinite(multiplier)) {
      throw new RangeError(
        `Cannot create the request queue as 'backoff.multiplier' must be finite: current value is ${multiplier}`,
      );
    }
    checkNumber("backoff.jitter", jitter, 0, false);
    if (jitter > 1) {
      throw new RangeError(
        `Cannot create the request queue as 'backoff.jitter' must be between 0 and 1: current value is ${jitter}`,
      );
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        "Cannot create the request queue as 'signal' must be an AbortSignal",
      );
    }
    this.#logger = logger;
    this.#budgets = merged;
    this.#backoff = { minTimeout, maxTimeout, multiplier, jitter };
    this.#signal = signal === undefined
      ? this.#controller.signal
      : AbortSignal.any([this.#controller.signal, signal]);
  }

  /** Number of tracked requests still in flight. */
  get pending(): number {
    return this.#tracked.size;
  }

  /**
   * Runs `fn` with the retry budget of `kind`, and tracks it until it settles.
   *
   * @typeParam T The result of `fn`.
   * @param kind What the request is for; selects the budget.
   * @param label What the request does, as the subject of log lines
   * ("<Label> failed: ..."), e.g. `"metrics upload of epoch 3"`; must not
   * contain secrets.
   * @param fn One attempt; receives the attempt number and its signal.
   * @param options A signal for this request, and budget overrides.
   * @returns The result of the first successful attempt. Rejects with the
   * non-retriable error as is, a {@linkcode RetryError} when every attempt
   * failed, a {@linkcode HUBTimeoutError} when the deadline passed, or the
   * abort reason.
   * @throws {TypeError} If `kind`, `label` or `fn` is unusable.
   * @throws {RangeError} If a budget override is out of range.
   *
   * @example Give up on a request the server refuses
   * ```ts
   * import { RequestQueue } from "./request_runner.ts";
   * import { HUBRequestError } from "../common/errors.ts";
   *
   * const queue = new RequestQueue({
   *   logger: { info() {}, warn() {}, error() {} },
   * });
   * const refused = new HUBRequestError("Cannot create the model: Bad data", {
   *   method: "POST",
   *   path: "/v1/models",
   *   status: 400,
   *   serverMessage: "Bad data",
   *   retriable: false,
   * });
   * const error = await queue
   *   .run("other", "creating the model", () => Promise.reject(refused))
   *   .catch((e) => e);
   * console.assert(error === refused && queue.stats.failed === 1);
   * ```
   */
  run<T>(
    kind: RequestKind,
    label: string,
    fn: (context: RequestContext) => Promise<T>,
    options: RunOptions = {},
  ): Promise<T> {
    if (!KINDS.includes(kind)) {
      throw new TypeError(
        `Cannot run the request as kind "${kind}" is unknown: use one of ${
          KINDS.join(", ")
        }`,
      );
    }
    if (typeof label !== "string" || label.length === 0) {
      throw new TypeError(
        "Cannot run the request as 'label' must be a non-empty string",
      );
    }
    if (typeof fn !== "function") {
      throw new TypeError("Cannot run the request as 'fn' must be a function");
    }
    const { signal, budget } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        "Cannot run the request as 'signal' must be an AbortSignal",
      );
    }
    const effective = mergeBudget(this.#budgets[kind], budget, kind);
    const combined = signal === undefined
      ? this.#signal
      : AbortSignal.any([this.#signal, signal]);

    const execution = this.#execute(label, fn, effective, combined);
    const tracked = execution.then(ignore, ignore);
    this.#tracked.add(tracked);
    void tracked.then(() => this.#tracked.delete(tracked));
    // A promise of its own for the caller: its rejection is the caller's to
    // handle, while the tracking copy above is always handled.
    return execution.then((value) => value);
  }

  /**
   * Waits until every tracked request has settled, including requests
   * started while waiting, or until the timeout passes. Never rejects on a
   * request's failure.
   *
   * @param options The longest wait.
   * @returns Whether everything settled, and how many requests are still in flight.
   * @throws {RangeError} If `timeout` is negative or `NaN`.
   *
   * @example Wait at most one second
   * ```ts
   * import { RequestQueue } from "./request_runner.ts";
   *
   * const queue = new RequestQueue({ logger: console });
   * const report = await queue.flush({ timeout: 1_000 });
   * console.assert(report.settled && report.pending === 0);
   * ```
   */
  async flush(options: FlushOptions = {}): Promise<FlushResult> {
    const { timeout = Infinity } = options;
    if (typeof timeout !== "number" || Number.isNaN(timeout) || timeout < 0) {
      throw new RangeError(
        `Cannot flush the request queue as 'timeout' must be >= 0: current value is ${timeout}`,
      );
    }
    const end = performance.now() + timeout;
    while (this.#tracked.size > 0) {
      const remaining = end - performance.now();
      if (remaining <= 0) {
        return { settled: false, pending: this.#tracked.size };
      }
      const all = Promise.all(this.#tracked).then(() => false);
      if (!Number.isFinite(remaining)) {
        await all;
        continue;
      }
      const stop = new AbortController();
      const timedOut = await Promise.race([
        all,
        delay(remaining, { signal: stop.signal }).then(() => true, () => false),
      ]);
      stop.abort();
      if (timedOut) return { settled: false, pending: this.#tracked.size };
    }
    return { settled: true, pending: 0 };
  }

  /**
   * Aborts every request in flight and every later one: their attempts'
   * signals abort, and their promises reject with `reason`. Used by `close()`
   * after a flush timed out.
   *
   * @param reason The abort reason; an `AbortError` `DOMException` when omitted.
   *
   * @example Abort what is still running
   * ```ts
   * import { RequestQueue } from "./request_runner.ts";
   *
   * const queue = new RequestQueue({ logger: { info() {}, warn() {}, error() {} } });
   * const stalled = queue.run("other", "loading the model", ({ signal }) =>
   *   new Promise((_, reject) =>
   *     signal.addEventListener("abort", () => reject(signal.reason))
   *   )
   * );
   * queue.abort(new Error("Closed"));
   * const error = await stalled.catch((e: Error) => e);
   * console.assert(error instanceof Error && error.message === "Closed");
   * ```
   */
  abort(reason?: unknown): void {
    if (this.#controller.signal.aborted) return;
    if (this.#tracked.size > 0) {
      this.#logger.warn(
        `Aborting ${this.#tracked.size} request(s) still in flight`,
      );
    }
    this.#controller.abort(
      reason ??
        new DOMException("The request queue was aborted", "AbortError"),
    );
  }

  async #execute<T>(
    label: string,
    fn: (context: RequestContext) => Promise<T>,
    budget: RequestBudget,
    signal: AbortSignal,
  ): Promise<T> {
    const subject = label.charAt(0).toUpperCase() + label.slice(1);
    try {
      const value = await retry(fn, {
        ...this.#backoff,
        maxAttempts: budget.maxAttempts,
        deadline: budget.deadline,
        attemptTimeout: budget.attemptTimeout,
        signal,
        isRetriable: isRetriableError,
        onRetry: ({ error, attempt, delay }) => {
          const key = retryKey(error);
          this.stats.retries[key] = (this.stats.retries[key] ?? 0) + 1;
          this.#logger.warn(
            `${subject} failed (${
              describeError(error)
            }): retrying in ${delay} ms, attempt ${
              attempt + 1
            } of ${budget.maxAttempts}`,
          );
        },
      });
      this.stats.succeeded++;
      return value;
    } catch (error) {
      if (signal.aborted && error === signal.reason) throw error;
      this.stats.failed++;
      this.#logger.error(
        `${subject} failed: ${describeError(error)}; ${advise(error)}`,
      );
      throw error;
    }
  }
}

function ignore(): void {}

function retryKey(error: unknown): string {
  if (error instanceof HUBRequestError) {
    return error.status === undefined ? "network" : String(error.status);
  }
  if (error instanceof HUBTimeoutError) return "timeout";
  return "network";
}

function advise(error: unknown): string {
  if (error instanceof HUBRequestError && error.status !== undefined) {
    const status = error.status;
    if (status === 401 || status === 403) {
      return "check the API key (option apiKey or HUB_API_KEY) and its access to this model";
    }
    if (status === 404) return "check the model id or URL";
    if (status >= 400 && status < 500 && !error.retriable) {
      return "the server refused the request; fix what its message says and try again";
    }
  }
  if (error instanceof HUBTimeoutError) {
    return "the server did not answer in time; check the network and the server, then try again";
  }
  if (error instanceof RetryError) {
    return "the server or the network stayed unavailable; check them and try again later";
  }
  return "check the network and the server, then try again";
}

function mergeBudget(
  base: RequestBudget,
  override: Partial<RequestBudget> | undefined,
  kind: string,
): RequestBudget {
  const budget = { ...base };
  if (override !== undefined) {
    if (override.maxAttempts !== undefined) {
      budget.maxAttempts = override.maxAttempts;
    }
    if (override.deadline !== undefined) budget.deadline = override.deadline;
    if (override.attemptTimeout !== undefined) {
      budget.attemptTimeout = override.attemptTimeout;
    }
  }
  if (
    typeof budget.maxAttempts !== "number" ||
    !Number.isInteger(budget.maxAttempts) || budget.maxAttempts < 1
  ) {
    throw new RangeError(
      `Cannot use the ${kind} budget as 'maxAttempts' must be a positive integer: current value is ${budget.maxAttempts}`,
    );
  }
  checkNumber(`${kind} budget deadline`, budget.deadline, 0, true);
  checkNumber(`${kind} budget attemptTimeout`, budget.attemptTimeout, 0, true);
  return budget;
}

function checkNumber(
  name: string,
  value: unknown,
  min: number,
  exclusive: boolean,
): void {
  if (
    typeof value !== "number" || Number.isNaN(value) ||
    (exclusive ? value <= min : value < min)
  ) {
    throw new RangeError(
      `Cannot use '${name}' as it must be ${
        exclusive ? ">" : ">="
      } ${min}: current value is ${String(value)}`,
    );
  }
}
