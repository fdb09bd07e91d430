/**
 * {@linkcode RequestRunner}: runs the session's requests with a retry budget
 * per kind (metrics, checkpoint, final upload, heartbeat), keeps track of
 * them so that `settle()` can wait for all of them and `abort()` can stop
 * them.
 *
 * Retries are `@std/async`'s `retry` (its backoff options, `isRetriable`,
 * `signal`). What std does not do is a thin layer here: a time limit per
 * attempt, an overall deadline, honouring the server's
 * `Retry-After`/`X-RateLimit-Reset` (the next attempt starts no earlier than
 * the server asked), and one log line per retry and per final failure.
 *
 * Length (~530 lines, a third of it documentation): the runner's option and
 * report types stay beside the one class whose methods take and return them;
 * the budgets are in `request_budget.ts`, the error classification and log
 * wording in `request_errors.ts`.
 *
 * @module
 */

import { abortable } from "@std/async/abortable";
import { delay } from "@std/async/delay";
import { retry, RetryError, type RetryOptions } from "@std/async/retry";
import {
  HUBRequestError,
  HUBTimeoutError,
  toHUBError,
} from "../common/errors.ts";
import {
  type BackoffOptions,
  type BudgetOverrides,
  DEFAULT_BUDGETS,
  mergeBudget,
  REQUEST_KINDS,
  type RequestBudget,
  type RequestKind,
} from "./request_budget.ts";
import {
  advise,
  describeError,
  isRetriableError,
  retryKey,
} from "./request_errors.ts";

export {
  type BackoffOptions,
  type BudgetOverrides,
  DEFAULT_BUDGETS,
  type RequestBudget,
  type RequestKind,
} from "./request_budget.ts";
export { describeError, isRetriableError } from "./request_errors.ts";
import type { Logger } from "../protocol/types.ts";

type StdBackoff = Pick<
  RetryOptions,
  "minTimeout" | "maxTimeout" | "multiplier" | "jitter"
>;

/** Options for {@linkcode RequestRunner}. */
export interface RequestRunnerOptions {
  /** Where retries (warn) and final failures (error) are reported. */
  logger: Logger;
  /**
   * Overrides of {@linkcode DEFAULT_BUDGETS}, per kind and per field.
   *
   * @default {{}}
   */
  budgets?: BudgetOverrides | undefined;
  /**
   * Backoff between attempts.
   *
   * @default {{ minTimeout: 1000, maxTimeout: 60000, multiplier: 2, jitter: 1 }}
   */
  backoff?: BackoffOptions | undefined;
  /**
   * Aborts every request of the runner, like {@linkcode RequestRunner.abort}.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** Options of one {@linkcode RequestRunner.run} call. */
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
  /**
   * Whether {@linkcode RequestRunner.settle} waits for this request (a
   * heartbeat is not waited for: stopping the heartbeat ends it).
   *
   * @default {true}
   */
  track?: boolean | undefined;
  /**
   * Whether a final failure is logged as an error (the caller may prefer to
   * report it itself, once).
   *
   * @default {true}
   */
  logFailure?: boolean | undefined;
}

/** What the operation passed to {@linkcode RequestRunner.run} receives. */
export interface RequestContext {
  /** Number of this attempt, starting at 1. */
  attempt: number;
  /** Aborts on the attempt timeout, the deadline, or an abort; pass it to `fetch`. */
  signal: AbortSignal;
}

/** Counters of a {@linkcode RequestRunner}. */
export interface RequestStats {
  /** Retries made, by reason: the HTTP status, `"network"` or `"timeout"`. */
  retries: Record<string, number>;
  /** Requests that failed for good (aborts not counted). */
  failed: number;
  /** Requests that succeeded. */
  succeeded: number;
}

/** What {@linkcode RequestRunner.settle} reports. */
export interface SettleReport {
  /** Every tracked request settled before the timeout. */
  settled: boolean;
  /** Requests still in flight when `settle()` returned. */
  pending: number;
}

/** Options of {@linkcode RequestRunner.settle}. */
export interface SettleOptions {
  /**
   * Longest wait in milliseconds; `Infinity` waits as long as it takes.
   *
   * @default {Infinity}
   */
  timeout?: number | undefined;
}

/**
 * Runs requests with a retry budget per kind, and keeps track of them.
 *
 * Each request is retried per its kind's {@linkcode RequestBudget} when
 * {@linkcode isRetriableError} says it may succeed; each retry is logged as a
 * warning with a short reason, a final failure once as an error with the
 * server's message and what to do. The promise `run()` returns rejects with
 * the last attempt's error (a {@linkcode HUBError} for every failure of the
 * server or the network; a {@linkcode HUBTimeoutError} when the deadline
 * passed), or with the abort reason; the runner's own tracking never causes
 * an unhandled rejection.
 *
 * @example Send a request with retries, then wait for everything
 * ```ts
 * import { RequestRunner } from "./request_runner.ts";
 *
 * const runner = new RequestRunner({
 *   logger: console,
 *   backoff: { minTimeout: 1, maxTimeout: 10 },
 * });
 * let calls = 0;
 * const answer = await runner.run("metrics", "metrics upload", () => {
 *   calls++;
 *   return Promise.resolve(42);
 * });
 * const report = await runner.settle({ timeout: 1_000 });
 * console.assert(answer === 42 && calls === 1 && report.settled);
 * ```
 */
export class RequestRunner {
  #logger: Logger;
  #budgets: Record<RequestKind, RequestBudget>;
  #backoff: StdBackoff;
  #controller = new AbortController();
  #signal: AbortSignal;
  #tracked = new Set<Promise<void>>();

  /** Counters of retries, failures and successes so far. */
  readonly stats: RequestStats = { retries: {}, failed: 0, succeeded: 0 };

  /**
   * Creates a runner.
   *
   * @param options The logger, and optional budgets, backoff and signal.
   * @throws {TypeError} If the logger lacks a method or a budget names an unknown kind.
   * @throws {RangeError} If a budget value is out of range (backoff values
   * are checked by `@std/async`'s `retry` on the first retry).
   */
  constructor(options: RequestRunnerOptions) {
    const { logger, budgets = {}, backoff = {}, signal } = options ?? {};
    if (
      typeof logger?.info !== "function" ||
      typeof logger.warn !== "function" ||
      typeof logger.error !== "function"
    ) {
      throw new TypeError(
        "Cannot create the request runner as 'logger' must have info, warn and error methods",
      );
    }
    for (const kind of Object.keys(budgets)) {
      if (!REQUEST_KINDS.includes(kind as RequestKind)) {
        throw new TypeError(
          `Cannot create the request runner as budget kind "${kind}" is unknown: use one of ${
            REQUEST_KINDS.join(", ")
          }`,
        );
      }
    }
    const merged = {} as Record<RequestKind, RequestBudget>;
    for (const kind of REQUEST_KINDS) {
      merged[kind] = mergeBudget(DEFAULT_BUDGETS[kind], budgets[kind], kind);
    }
    this.#logger = logger;
    this.#budgets = merged;
    // std's options do not take `undefined`: pass only what was given.
    this.#backoff = Object.fromEntries(
      Object.entries(backoff).filter(([, value]) => value !== undefined),
    ) as StdBackoff;
    this.#signal = signal === undefined
      ? this.#controller.signal
      : AbortSignal.any([this.#controller.signal, signal]);
  }

  /** Number of tracked requests still in flight. */
  get pending(): number {
    return this.#tracked.size;
  }

  /** The budget of a kind, overrides applied (a copy). */
  budget(kind: RequestKind): RequestBudget {
    return { ...this.#budgets[kind] };
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
   * @param options A signal for this request, budget overrides, tracking.
   * @returns The result of the first successful attempt.
   * @throws {TypeError} If `kind`, `label` or `fn` is unusable.
   * @throws {RangeError} If a budget override is out of range.
   *
   * @example Give up on a request the server refuses
   * ```ts
   * import { RequestRunner } from "./request_runner.ts";
   * import { HUBRequestError } from "../common/errors.ts";
   *
   * const runner = new RequestRunner({
   *   logger: { info() {}, warn() {}, error() {} },
   * });
   * const refused = new HUBRequestError("Cannot create the model: Bad data", {
   *   method: "POST",
   *   path: "/v1/models",
   *   status: 400,
   *   serverMessage: "Bad data",
   *   retriable: false,
   * });
   * const error = await runner
   *   .run("other", "creating the model", () => Promise.reject(refused))
   *   .catch((e) => e);
   * console.assert(error === refused && runner.stats.failed === 1);
   * ```
   */
  run<T>(
    kind: RequestKind,
    label: string,
    fn: (context: RequestContext) => Promise<T>,
    options: RunOptions = {},
  ): Promise<T> {
    if (!REQUEST_KINDS.includes(kind)) {
      throw new TypeError(
        `Cannot run the request as kind "${kind}" is unknown: use one of ${
          REQUEST_KINDS.join(", ")
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
    const { signal, budget, track = true, logFailure = true } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        "Cannot run the request as 'signal' must be an AbortSignal",
      );
    }
    const effective = mergeBudget(this.#budgets[kind], budget, kind);
    const combined = signal === undefined
      ? this.#signal
      : AbortSignal.any([this.#signal, signal]);

    const execution = this.#execute(
      label,
      fn,
      effective,
      combined,
      logFailure,
    );
    if (track) {
      const tracked = execution.then(ignore, ignore);
      this.#tracked.add(tracked);
      void tracked.then(() => this.#tracked.delete(tracked));
    }
    return execution;
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
   * import { RequestRunner } from "./request_runner.ts";
   *
   * const runner = new RequestRunner({ logger: console });
   * const report = await runner.settle({ timeout: 1_000 });
   * console.assert(report.settled && report.pending === 0);
   * ```
   */
  async settle(options: SettleOptions = {}): Promise<SettleReport> {
    const { timeout = Infinity } = options;
    if (typeof timeout !== "number" || Number.isNaN(timeout) || timeout < 0) {
      throw new RangeError(
        `Cannot wait for the requests as 'timeout' must be >= 0: current value is ${timeout}`,
      );
    }
    const stop = new AbortController();
    const timedOut = delay(timeout, { signal: stop.signal }).then(
      () => true,
      () => false,
    );
    try {
      while (this.#tracked.size > 0) {
        const all = Promise.all(this.#tracked).then(() => false);
        if (await Promise.race([all, timedOut])) {
          return { settled: false, pending: this.#tracked.size };
        }
      }
      return { settled: true, pending: 0 };
    } finally {
      stop.abort();
    }
  }

  /**
   * Aborts every request in flight and every later one: their attempts'
   * signals abort, and their promises reject with `reason`.
   *
   * @param reason The abort reason; an `AbortError` `DOMException` when omitted.
   *
   * @example Abort what is still running
   * ```ts
   * import { RequestRunner } from "./request_runner.ts";
   *
   * const runner = new RequestRunner({ logger: { info() {}, warn() {}, error() {} } });
   * const stalled = runner.run("other", "loading the model", ({ signal }) =>
   *   new Promise((_, reject) =>
   *     signal.addEventListener("abort", () => reject(signal.reason))
   *   )
   * );
   * runner.abort(new Error("Closed"));
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
        new DOMException("The request runner was aborted", "AbortError"),
    );
  }

  async #execute<T>(
    label: string,
    fn: (context: RequestContext) => Promise<T>,
    budget: RequestBudget,
    signal: AbortSignal,
    logFailure: boolean,
  ): Promise<T> {
    const subject = label.charAt(0).toUpperCase() + label.slice(1);
    const start = performance.now();
    const overall = new AbortController();
    const overallSignal = AbortSignal.any([signal, overall.signal]);
    const deadlineTimer = startTimer(budget.deadline, () =>
      overall.abort(
        new HUBTimeoutError(
          `${subject} did not finish within its deadline of ${budget.deadline} ms: check the network and the server, then try again`,
          { timeout: budget.deadline },
        ),
      ));
    let attempt = 0;
    // The server's Retry-After: the next attempt starts no earlier.
    let notBefore = 0;
    let gaveUp: HUBTimeoutError | undefined;
    try {
      const value = await retry(async () => {
        attempt++;
        const wait = notBefore - performance.now();
        if (wait > 0) await delay(wait, { signal: overallSignal });
        return await runAttempt(fn, attempt, budget, overallSignal, subject);
      }, {
        ...this.#backoff,
        maxAttempts: budget.maxAttempts,
        signal: overallSignal,
        isRetriable: (error) => {
          if (overallSignal.aborted || !isRetriableError(error)) return false;
          if (attempt >= budget.maxAttempts) return true; // std gives up
          const hint = error instanceof HUBRequestError
            ? error.retryAfter
            : undefined;
          const now = performance.now();
          if (hint !== undefined && hint > 0) {
            if (now - start + hint >= budget.deadline) {
              gaveUp = new HUBTimeoutError(
                `${subject} cannot be retried within its deadline of ${budget.deadline} ms: the server asked to wait ${hint} ms (${
                  describeError(error)
                })`,
                { timeout: budget.deadline, cause: error },
              );
              return false;
            }
            notBefore = now + hint;
          }
          const key = retryKey(error);
          this.stats.retries[key] = (this.stats.retries[key] ?? 0) + 1;
          this.#logger.warn(
            `${subject} failed (${describeError(error)}): retrying${
              hint !== undefined && hint > 0
                ? ` in ${hint} ms as the server asked`
                : ""
            }, attempt ${attempt + 1} of ${budget.maxAttempts}`,
          );
          return true;
        },
      });
      this.stats.succeeded++;
      return value;
    } catch (caught) {
      if (signal.aborted) throw signal.reason;
      let error: unknown = gaveUp ?? caught;
      if (error instanceof RetryError) error = error.cause;
      if (overall.signal.aborted) error = overall.signal.reason;
      // Failures of the server or the network join the HUBError family;
      // programming errors (TypeError, RangeError, ...) stay as they are.
      if (isRetriableError(error)) error = toHUBError(error, subject);
      this.stats.failed++;
      const reported = error instanceof HUBRequestError && error.reported;
      if (logFailure && !reported) {
        this.#logger.error(
          `${subject} failed${
            attempt > 1 ? ` after ${attempt} attempts` : ""
          }: ${describeError(error)}; ${advise(error)}`,
        );
      }
      throw error;
    } finally {
      deadlineTimer.clear();
    }
  }
}

/** Runs one attempt under its own time limit; abandons one that ignores its signal. */
async function runAttempt<T>(
  fn: (context: RequestContext) => Promise<T>,
  attempt: number,
  budget: RequestBudget,
  signal: AbortSignal,
  subject: string,
): Promise<T> {
  signal.throwIfAborted();
  const controller = new AbortController();
  const attemptSignal = AbortSignal.any([signal, controller.signal]);
  const timer = startTimer(budget.attemptTimeout, () =>
    controller.abort(
      new HUBTimeoutError(
        `${subject}: attempt ${attempt} got no answer within ${budget.attemptTimeout} ms`,
        { timeout: budget.attemptTimeout },
      ),
    ));
  try {
    let pending: Promise<T>;
    try {
      pending = Promise.resolve(fn({ attempt, signal: attemptSignal }));
    } catch (error) {
      pending = Promise.reject(error);
    }
    // An abandoned attempt's late failure is moot: never unhandled.
    pending.catch(ignore);
    return await abortable(pending, attemptSignal);
  } finally {
    timer.clear();
  }
}

const I32_MAX = 2 ** 31 - 1;

/**
 * A timer that keeps the process alive while a request runs (it is cleared
 * when the request ends); none for limits beyond what a timer can hold
 * (~24 days).
 */
function startTimer(ms: number, callback: () => void): { clear(): void } {
  if (!Number.isFinite(ms) || ms > I32_MAX) return { clear: ignore };
  const handle = setTimeout(callback, ms);
  return { clear: () => clearTimeout(handle) };
}

function ignore(): void {}
