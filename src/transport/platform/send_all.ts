/**
 * {@linkcode sendAll}: sends one request per item (the Platform's one
 * `epoch_end` per epoch) a few at a time, and gets a backlog through a flaky
 * server in one call:
 *
 * - a few requests at a time until the server has answered one, then more
 *   (`concurrency`, then `wideConcurrency`): after an outage the backlog
 *   drains at the wider width, while a server that is still down gets only
 *   the first few;
 * - once the server has answered a request of the call, an item whose
 *   request failed on a retriable error (network, timeout, 408, 429, 5xx) is
 *   tried again in the same call, after the `Retry-After` the server asked
 *   for, up to `maxTries` times, as long as the server answers more requests
 *   than it fails (else the call ends: a server that is down is sent only
 *   the first few requests of the backlog);
 * - when nothing is left to send and a request has been waiting far longer
 *   than the others took (`hedgeAfter`), one copy of it is sent: the first
 *   answer wins and the other is cancelled. Sending an item twice must be
 *   harmless (an epoch is its own idempotency key).
 *
 * Written here rather than with `@std/async`'s `pooledMap`, which has a
 * fixed width, stops at the first rejection and cannot re-queue or hedge.
 *
 * @module
 */

import { HUBRequestError, HUBTimeoutError } from "../../common/errors.ts";

/** Options of {@linkcode sendAll}. */
export interface SendAllOptions {
  /** Requests in flight until the server has answered one. @default {4} */
  concurrency?: number | undefined;
  /** Requests in flight once it has. @default {16} */
  wideConcurrency?: number | undefined;
  /** Attempts per item in this call. @default {3} */
  maxTries?: number | undefined;
  /**
   * Least time, in ms, before a request still waiting when nothing else is
   * left to send gets a copy; four times the slowest answer of this call
   * when that is longer. @default {1000}
   */
  hedgeAfter?: number | undefined;
  /** Longest `Retry-After` honoured within the call, in ms (a longer one ends the item's tries). @default {5000} */
  maxRetryAfter?: number | undefined;
  /** Stops starting requests (those in flight end on their own). @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Whether to stop starting requests, e.g. after a 401. @default {() => false} */
  halted?: (() => boolean) | undefined;
}

/** What {@linkcode sendAll} did. */
export interface SendAllResult<T> {
  /** Items the server acknowledged. */
  sent: T[];
  /** Items not acknowledged, with the last error of each (none when never tried). */
  failed: Array<{ item: T; error: unknown }>;
}

interface Entry<T> {
  item: T;
  tries: number;
  done: boolean;
  copies: number;
  hedged: boolean;
  notBefore: number;
  error: unknown;
}

interface Flight<T> {
  entry: Entry<T>;
  started: number;
  abort: AbortController;
}

function isRetriable(error: unknown): boolean {
  if (error instanceof HUBTimeoutError) return true;
  return error instanceof HUBRequestError && error.retriable;
}

/**
 * Sends every item with `send`, a few at a time, retrying and hedging as
 * described in the module's documentation. Never rejects: what was not
 * acknowledged is in `failed`.
 *
 * @param items The items, in the order to send them.
 * @param send Sends one item; rejects on failure. Its signal aborts a copy that lost.
 * @param options Widths, tries, hedging and the stop signal.
 * @returns What was acknowledged and what was not.
 *
 * @example Send three items
 * ```ts
 * import { sendAll } from "./send_all.ts";
 *
 * const seen: number[] = [];
 * const result = await sendAll([1, 2, 3], (n) => {
 *   seen.push(n);
 *   return Promise.resolve();
 * });
 * console.assert(result.sent.length === 3 && result.failed.length === 0);
 * ```
 */
export async function sendAll<T>(
  items: readonly T[],
  send: (item: T, signal: AbortSignal) => Promise<unknown>,
  options: SendAllOptions = {},
): Promise<SendAllResult<T>> {
  const {
    concurrency = 4,
    wideConcurrency = Math.max(16, concurrency),
    maxTries = 3,
    hedgeAfter = 1_000,
    maxRetryAfter = 5_000,
    signal,
    halted = () => false,
  } = options;
  const entries: Entry<T>[] = items.map((item) => ({
    item,
    tries: 0,
    done: false,
    copies: 0,
    hedged: false,
    notBefore: 0,
    error: undefined,
  }));
  const waiting = [...entries];
  const flights = new Set<Flight<T>>();
  let sent = 0;
  let failures = 0;
  let slowest = 0;
  let wake: () => void = () => {};

  const launch = (entry: Entry<T>): void => {
    const abort = new AbortController();
    const flight: Flight<T> = { entry, started: performance.now(), abort };
    flights.add(flight);
    entry.copies++;
    const requestSignal = signal === undefined
      ? abort.signal
      : AbortSignal.any([signal, abort.signal]);
    let attempt: Promise<unknown>;
    try {
      attempt = send(entry.item, requestSignal);
    } catch (error) {
      attempt = Promise.reject(error);
    }
    attempt.then(
      () => {
        slowest = Math.max(slowest, performance.now() - flight.started);
        if (!entry.done) {
          entry.done = true;
          sent++;
        }
        // The copy that lost is cancelled.
        for (const other of flights) {
          if (other.entry === entry && other !== flight) {
            other.abort.abort(new Error("answered by another copy"));
          }
        }
      },
      (error: unknown) => {
        if (entry.done || abort.signal.aborted) return;
        entry.error = error;
        if (entry.copies > 1) return; // its other copy may still succeed
        failures++;
        const retryAfter = error instanceof HUBRequestError
          ? error.retryAfter ?? 0
          : 0;
        if (
          isRetriable(error) && entry.tries < maxTries &&
          retryAfter <= maxRetryAfter && !signal?.aborted && !halted()
        ) {
          entry.notBefore = performance.now() + retryAfter;
          waiting.push(entry);
        }
      },
    ).finally(() => {
      entry.copies--;
      flights.delete(flight);
      wake();
    });
  };

  while (true) {
    const stopped = signal?.aborted === true || halted() ||
      // More failures than answers: the server is down, stop sending.
      (failures >= concurrency && failures > sent);
    const width = sent > 0 ? wideConcurrency : concurrency;
    const now = performance.now();
    let next = Infinity;
    if (!stopped) {
      for (let i = 0; i < waiting.length && flights.size < width;) {
        const entry = waiting[i]!;
        // An item is tried again in this call only once the server has
        // answered a request of it: before that, the caller's backoff rules.
        if (entry.tries > 0 && sent === 0) {
          i++;
          continue;
        }
        if (entry.notBefore > now) {
          next = Math.min(next, entry.notBefore);
          i++;
          continue;
        }
        waiting.splice(i, 1);
        entry.tries++;
        launch(entry);
      }
      if (waiting.length === 0) {
        const patience = Math.max(hedgeAfter, 4 * slowest);
        for (const flight of [...flights]) {
          if (flights.size >= width) break;
          const { entry } = flight;
          if (entry.hedged || entry.done || entry.copies > 1) continue;
          const due = flight.started + patience;
          if (due <= now) {
            entry.hedged = true;
            launch(entry);
          } else {
            next = Math.min(next, due);
          }
        }
      }
    }
    // Nothing in flight and nothing that may start later: the call ends.
    if (flights.size === 0 && (stopped || next === Infinity)) break;
    await new Promise<void>((resolve) => {
      const timer = next === Infinity
        ? undefined
        : setTimeout(resolve, Math.max(0, next - performance.now()));
      wake = () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      };
    });
    wake = () => {};
  }
  return {
    sent: entries.filter((e) => e.done).map((e) => e.item),
    failed: entries.filter((e) => !e.done).map((e) => ({
      item: e.item,
      error: e.error,
    })),
  };
}
