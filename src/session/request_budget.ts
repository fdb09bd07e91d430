/**
 * The retry budget of each kind of request the session makes, and the
 * backoff between attempts: data, separate from the runner that applies it.
 *
 * @module
 */

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

/**
 * Backoff between the attempts of a request: the option names and defaults
 * of `@std/async`'s `retry`. A server's `Retry-After` may ask for a longer
 * wait, which is honoured.
 */
export interface BackoffOptions {
  /**
   * Minimum (and first) wait in milliseconds.
   *
   * @default {1000}
   */
  minTimeout?: number | undefined;
  /**
   * Maximum computed wait in milliseconds.
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

/** Budget overrides, per kind and per field. */
export type BudgetOverrides = Partial<
  Record<RequestKind, Partial<RequestBudget> | undefined>
>;

/** Every kind of request, in the order budgets are listed. */
export const REQUEST_KINDS: readonly RequestKind[] = [
  "metrics",
  "checkpoint",
  "final",
  "heartbeat",
  "other",
];

/**
 * The budget of each kind of request: metrics 3 attempts within 30 s (what
 * fails stays queued for the next upload), checkpoint and final uploads 10
 * within 1 h, a heartbeat 1 attempt of at most 30 s (the next beat is the
 * retry), anything else 5 within 1 min.
 *
 * @example Read a budget
 * ```ts
 * import { DEFAULT_BUDGETS } from "./request_budget.ts";
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

/**
 * Applies overrides to a budget and checks the result.
 *
 * @param base The budget to start from.
 * @param override Fields to replace.
 * @param kind The kind, for messages.
 * @returns The merged budget.
 * @throws {RangeError} When a value is out of range.
 */
export function mergeBudget(
  base: RequestBudget,
  override: Partial<RequestBudget> | undefined,
  kind: string,
): RequestBudget {
  const budget = { ...base };
  if (override !== undefined) {
    for (const key of ["maxAttempts", "deadline", "attemptTimeout"] as const) {
      if (override[key] !== undefined) budget[key] = override[key];
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
  for (const key of ["deadline", "attemptTimeout"] as const) {
    const value: unknown = budget[key];
    if (typeof value !== "number" || Number.isNaN(value) || value <= 0) {
      throw new RangeError(
        `Cannot use the ${kind} budget as '${key}' must be a positive number of milliseconds: current value is ${
          String(value)
        }`,
      );
    }
  }
  return budget;
}
