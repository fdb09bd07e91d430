/**
 * `retry()` and `delay()` with the option names and defaults of `@std/async`,
 * extended with a per-attempt timeout, an overall deadline and `Retry-After`
 * hints, so that a flaky or stalled network can never hang the caller.
 *
 * @module
 */

import { unrefTimer } from "../common/timers.ts";
import { HUBError, HUBTimeoutError } from "../common/errors.ts";

/** Options for {@linkcode delay}. */
export interface DelayOptions {
  /**
   * Signal used to abort the delay; the promise rejects with its reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
  /**
   * Whether the timer keeps the process alive. With `false` the timer is
   * unref'd on Deno (`Deno.unrefTimer`) and on Node/Bun (`timer.unref()`).
   *
   * @default {true}
   */
  persistent?: boolean | undefined;
}

/** What {@linkcode RetryOptions.onRetry} receives before each wait. */
export interface RetryInfo {
  /** The error of the attempt that failed. */
  error: unknown;
  /** Number of the attempt that failed, starting at 1. */
  attempt: number;
  /** Milliseconds that will be waited before the next attempt. */
  delay: number;
}

/** What the retried function receives on each attempt. */
export interface RetryContext {
  /** Number of this attempt, starting at 1. */
  attempt: number;
  /**
   * Aborts when this attempt times out, the deadline passes or the caller's
   * signal aborts; pass it on to `fetch`.
   */
  signal: AbortSignal;
}

/** Options for {@linkcode retry}. */
export interface RetryOptions {
  /**
   * How much to back off after each retry.
   *
   * @default {2}
   */
  multiplier?: number | undefined;
  /**
   * The maximum milliseconds of computed backoff between attempts.
   *
   * @default {60000}
   */
  maxTimeout?: number | undefined;
  /**
   * The maximum number of attempts until failure.
   *
   * @default {5}
   */
  maxAttempts?: number | undefined;
  /**
   * The initial and minimum amount of milliseconds between attempts.
   *
   * @default {1000}
   */
  minTimeout?: number | undefined;
  /**
   * Amount of jitter (0 to 1) applied to the time between attempts: `1` waits
   * a random time between 0 and the backoff, `0` waits the full backoff.
   *
   * @default {1}
   */
  jitter?: number | undefined;
  /**
   * Decides whether an error may succeed on a later attempt; an error it
   * refuses is rethrown as is.
   *
   * @default {() => true}
   */
  isRetriable?: ((error: unknown) => boolean) | undefined;
  /**
   * Aborts the whole operation: the running attempt's signal aborts, no
   * further attempt starts, and the promise rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
  /**
   * Overall time limit in milliseconds, waits included. A running attempt is
   * aborted when it passes, and a retry whose wait would pass it is not made:
   * the promise rejects with a {@linkcode HUBTimeoutError} whose `cause` is
   * the last attempt's error.
   *
   * @default {Infinity}
   */
  deadline?: number | undefined;
  /**
   * Time limit of each attempt in milliseconds. A late attempt's signal aborts
   * with a {@linkcode HUBTimeoutError}, which is then treated like any other
   * error of the attempt (see `isRetriable`).
   *
   * @default {Infinity}
   */
  attemptTimeout?: number | undefined;
  /**
   * Reads the server's requested wait (milliseconds) from an error. The wait
   * before the next attempt is `max(backoff, hint)`, the hint capped at
   * `maxRetryAfter`.
   *
   * @default {(error) => error.retryAfter when it is a number}
   */
  retryAfter?: (error: unknown) => number | undefined;
  /**
   * Upper bound of an honoured `retryAfter` hint, in milliseconds.
   *
   * @default {3600000}
   */
  maxRetryAfter?: number | undefined;
  /**
   * Called before each wait with the failed attempt's error; an error it
   * throws ends the retry loop with that error.
   *
   * @default {undefined}
   */
  onRetry?: ((info: RetryInfo) => void) | undefined;
  /**
   * Source of randomness for the jitter, returning numbers in `[0, 1)`.
   *
   * @default {Math.random}
   */
  random?: (() => number) | undefined;
}

/**
 * Thrown by {@linkcode retry} when every allowed attempt failed with a
 * retriable error; `cause` is the last attempt's error.
 *
 * @example Tell exhausted retries apart
 * ```ts
 * import { retry, RetryError } from "./retry.ts";
 *
 * try {
 *   await retry(() => {
 *     throw new Error("Service unavailable");
 *   }, { maxAttempts: 2, minTimeout: 1 });
 * } catch (error) {
 *   console.assert(error instanceof RetryError && error.attempts === 2);
 * }
 * ```
 */
export class RetryError extends HUBError {
  /** Number of attempts that were made. */
  readonly attempts: number;

  /**
   * Creates an error.
   *
   * @param cause The last attempt's error.
   * @param attempts The number of attempts that were made.
   */
  constructor(cause: unknown, attempts: number) {
    super(
      `Cannot complete the operation as all ${attempts} attempts failed: ${
        describeCause(cause)
      }`,
      { cause },
    );
    this.name = "RetryError";
    this.attempts = attempts;
  }
}

/**
 * Resolves after `ms` milliseconds, like `@std/async`'s `delay`.
 *
 * If the signal aborts first, the promise rejects with the signal's reason
 * and the timer is cleared. Durations beyond the 32-bit timer limit are
 * supported.
 *
 * @param ms Milliseconds to wait; negative or `NaN` counts as 0.
 * @param options The abort signal and whether the timer keeps the process alive.
 * @returns A promise that resolves after the delay.
 *
 * @example Wait, or stop waiting when a signal aborts
 * ```ts
 * import { delay } from "./retry.ts";
 *
 * await delay(10);
 *
 * const controller = new AbortController();
 * const waiting = delay(60_000, { signal: controller.signal });
 * controller.abort(new Error("Closed"));
 * await waiting.catch((error) => console.assert(error.message === "Closed"));
 * ```
 */
export function delay(ms: number, options: DelayOptions = {}): Promise<void> {
  const { signal, persistent = true } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = (): void => {
      timer.clear();
      reject(signal?.reason);
    };
    const timer = startTimer(
      () => {
        signal?.removeEventListener("abort", abort);
        resolve();
      },
      ms,
      persistent,
    );
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/**
 * Calls `fn` until it succeeds, up to `maxAttempts` times, waiting an
 * exponential backoff with jitter between attempts (as `@std/async`'s
 * `retry`: `min(maxTimeout, minTimeout * multiplier ** n)` reduced by up to
 * `jitter` of itself, `n` counting retries from 0).
 *
 * Each attempt receives its own signal, which aborts when the attempt times
 * out (`attemptTimeout`), when the overall `deadline` passes, or when the
 * caller's `signal` aborts. An attempt that ignores its signal is abandoned
 * at that moment (its late result is discarded). A server's `Retry-After`
 * hint lengthens the wait to `max(backoff, hint)`.
 *
 * @typeParam T The result of `fn`.
 * @param fn The operation; receives the attempt number and signal.
 * @param options Backoff, limits, hooks and the abort signal.
 * @returns The first successful result of `fn`.
 * @throws {RangeError} If an option is out of range (before any attempt).
 * @throws {RetryError} If every attempt failed with a retriable error.
 * @throws {HUBTimeoutError} If the deadline passed, or the next wait would pass it.
 * @throws The error of an attempt that `isRetriable` refuses, as is.
 * @throws The signal's reason when `signal` aborts.
 *
 * @example Retry a flaky operation with small waits
 * ```ts
 * import { retry } from "./retry.ts";
 *
 * let calls = 0;
 * const result = await retry(({ attempt }) => {
 *   calls++;
 *   if (attempt < 3) throw new Error("Service unavailable");
 *   return "done";
 * }, { minTimeout: 1, maxTimeout: 10, attemptTimeout: 1_000 });
 * console.assert(result === "done" && calls === 3);
 * ```
 */
export async function retry<T>(
  fn: (context: RetryContext) => Promise<T> | T,
  options: RetryOptions = {},
): Promise<T> {
  const {
    multiplier = 2,
    maxTimeout = 60_000,
    maxAttempts = 5,
    minTimeout = 1_000,
    jitter = 1,
    isRetriable = () => true,
    signal,
    deadline = Infinity,
    attemptTimeout = Infinity,
    retryAfter = readRetryAfter,
    maxRetryAfter = 3_600_000,
    onRetry,
    random = Math.random,
  } = options;

  if (typeof fn !== "function") {
    throw new TypeError(
      `Cannot retry as 'fn' must be a function: received ${typeof fn}`,
    );
  }
  assertNumber("maxAttempts", maxAttempts);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new RangeError(
      `Cannot retry as 'maxAttempts' must be a positive integer: current value is ${maxAttempts}`,
    );
  }
  assertNumber("multiplier", multiplier);
  if (!Number.isFinite(multiplier) || multiplier < 1) {
    throw new RangeError(
      `Cannot retry as 'multiplier' must be a finite number >= 1: current value is ${multiplier}`,
    );
  }
  assertNumber("maxTimeout", maxTimeout);
  if (Number.isNaN(maxTimeout) || maxTimeout <= 0) {
    throw new RangeError(
      `Cannot retry as 'maxTimeout' must be a positive number: current value is ${maxTimeout}`,
    );
  }
  assertNumber("minTimeout", minTimeout);
  if (Number.isNaN(minTimeout) || minTimeout < 0) {
    throw new RangeError(
      `Cannot retry as 'minTimeout' must be >= 0: current value is ${minTimeout}`,
    );
  }
  if (minTimeout > maxTimeout) {
    throw new RangeError(
      `Cannot retry as 'minTimeout' must be <= 'maxTimeout': current values 'minTimeout=${minTimeout}', 'maxTimeout=${maxTimeout}'`,
    );
  }
  assertNumber("jitter", jitter);
  if (Number.isNaN(jitter) || jitter < 0 || jitter > 1) {
    throw new RangeError(
      `Cannot retry as 'jitter' must be between 0 and 1: current value is ${jitter}`,
    );
  }
  assertNumber("deadline", deadline);
  if (Number.isNaN(deadline) || deadline <= 0) {
    throw new RangeError(
      `Cannot retry as 'deadline' must be a positive number: current value is ${deadline}`,
    );
  }
  assertNumber("attemptTimeout", attemptTimeout);
  if (Number.isNaN(attemptTimeout) || attemptTimeout <= 0) {
    throw new RangeError(
      `Cannot retry as 'attemptTimeout' must be a positive number: current value is ${attemptTimeout}`,
    );
  }
  assertNumber("maxRetryAfter", maxRetryAfter);
  if (Number.isNaN(maxRetryAfter) || maxRetryAfter < 0) {
    throw new RangeError(
      `Cannot retry as 'maxRetryAfter' must be >= 0: current value is ${maxRetryAfter}`,
    );
  }
  assertFunction("isRetriable", isRetriable);
  assertFunction("retryAfter", retryAfter);
  assertFunction("random", random);
  if (onRetry !== undefined) assertFunction("onRetry", onRetry);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError("Cannot retry as 'signal' must be an AbortSignal");
  }

  signal?.throwIfAborted();
  const start = performance.now();
  let lastError: unknown = undefined;

  for (let attempt = 1;; attempt++) {
    const remaining = deadline - (performance.now() - start);
    const outcome = await runAttempt(fn, {
      attempt,
      signal,
      attemptTimeout,
      remaining,
      deadline,
      lastError,
    });
    if (outcome.ok) return outcome.value;
    const error = outcome.error;

    if (signal?.aborted) throw signal.reason;
    if (outcome.deadlinePassed) throw error;
    if (!isRetriable(error)) throw error;
    if (attempt >= maxAttempts) throw new RetryError(error, attempt);
    lastError = error;

    let wait = backoff(minTimeout, maxTimeout, multiplier, attempt - 1) *
      (1 - jitter * random());
    const hint = retryAfter(error);
    if (typeof hint === "number" && Number.isFinite(hint) && hint > 0) {
      wait = Math.max(wait, Math.min(hint, maxRetryAfter));
    }
    wait = Math.ceil(wait);
    const elapsed = performance.now() - start;
    if (elapsed + wait >= deadline) {
      throw new HUBTimeoutError(
        `Cannot retry within the deadline of ${deadline} ms: attempt ${attempt} failed after ${
          Math.round(elapsed)
        } ms and the next one would start after ${wait} ms more`,
        { timeout: deadline, cause: error },
      );
    }
    onRetry?.({ error, attempt, delay: wait });
    await delay(wait, { signal });
  }
}

type AttemptOutcome<T> =
  | { ok: true; value: T }
  | { ok: false; error: unknown; deadlinePassed: boolean };

interface AttemptSettings {
  attempt: number;
  signal: AbortSignal | undefined;
  attemptTimeout: number;
  remaining: number;
  deadline: number;
  lastError: unknown;
}

/** Runs one attempt under its own timeout; never rejects. */
function runAttempt<T>(
  fn: (context: RetryContext) => Promise<T> | T,
  settings: AttemptSettings,
): Promise<AttemptOutcome<T>> {
  const { attempt, signal, attemptTimeout, remaining, deadline, lastError } =
    settings;
  const controller = new AbortController();
  const attemptSignal = signal === undefined
    ? controller.signal
    : AbortSignal.any([signal, controller.signal]);
  const byDeadline = remaining <= attemptTimeout;
  const limit = Math.min(attemptTimeout, remaining);

  return new Promise<AttemptOutcome<T>>((resolve) => {
    let settled = false;
    let timer: Timer | undefined;
    const finish = (outcome: AttemptOutcome<T>): void => {
      if (settled) return;
      settled = true;
      timer?.clear();
      attemptSignal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const onAbort = (): void => {
      finish({
        ok: false,
        error: attemptSignal.reason,
        deadlinePassed: controller.signal.aborted && byDeadline,
      });
    };
    attemptSignal.addEventListener("abort", onAbort);
    if (Number.isFinite(limit)) {
      timer = startTimer(
        () => {
          controller.abort(
            byDeadline
              ? new HUBTimeoutError(
                `Cannot finish the operation within the deadline of ${deadline} ms: attempt ${attempt} was still running`,
                { timeout: deadline, cause: lastError },
              )
              : new HUBTimeoutError(
                `Cannot finish attempt ${attempt} within the attempt timeout of ${attemptTimeout} ms`,
                { timeout: attemptTimeout },
              ),
          );
        },
        limit,
        true,
      );
    }
    if (attemptSignal.aborted) {
      onAbort();
      return;
    }
    let result: Promise<T> | T;
    try {
      result = fn({ attempt, signal: attemptSignal });
    } catch (error) {
      finish({ ok: false, error, deadlinePassed: false });
      return;
    }
    Promise.resolve(result).then(
      (value) => finish({ ok: true, value }),
      (error: unknown) => finish({ ok: false, error, deadlinePassed: false }),
    );
  });
}

function backoff(
  minTimeout: number,
  maxTimeout: number,
  multiplier: number,
  retryIndex: number,
): number {
  return Math.min(maxTimeout, minTimeout * multiplier ** retryIndex);
}

function readRetryAfter(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const value = (error as { retryAfter?: unknown }).retryAfter;
  return typeof value === "number" ? value : undefined;
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) return cause.message || cause.name;
  return String(cause);
}

function assertNumber(name: string, value: unknown): void {
  if (typeof value !== "number") {
    throw new TypeError(
      `Cannot retry as '${name}' must be a number: received ${typeof value}`,
    );
  }
}

function assertFunction(name: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new TypeError(
      `Cannot retry as '${name}' must be a function: received ${typeof value}`,
    );
  }
}

interface Timer {
  clear(): void;
}

const I32_MAX = 2 ** 31 - 1;

/** A clearable timeout of any length (chained beyond the 32-bit limit). */
function startTimer(
  callback: () => void,
  ms: number,
  persistent: boolean,
): Timer {
  const total = Math.trunc(Math.max(ms, 0) || 0);
  const end = performance.now() + total;
  let handle: ReturnType<typeof setTimeout>;
  const schedule = (wait: number): void => {
    handle = wait > I32_MAX
      ? setTimeout(() => schedule(end - performance.now()), I32_MAX)
      : setTimeout(callback, Math.max(0, wait));
    if (!persistent) unrefTimer(handle);
  };
  schedule(total);
  return { clear: () => clearTimeout(handle) };
}
