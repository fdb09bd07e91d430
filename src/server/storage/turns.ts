/**
 * One-at-a-time work per key (a model id): a promise chain whose waiters can
 * give up. The file store's per-model lock and the weights commit gate use
 * it; a request whose time is up stops waiting behind a stuck holder instead
 * of queueing for ever, and the holders after it still wait for that holder.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

/** Resolves with `previous`, or rejects with the signal's reason first. */
function waitFor(
  previous: Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (signal === undefined) return previous;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    void previous.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}

/**
 * Runs `fn` once every earlier turn of `key` has ended.
 *
 * @param turns The chain of each key (shared by every caller of one store).
 * @param key E.g. a model id.
 * @param fn The work; it starts only if `signal` was not aborted meanwhile.
 * @param signal Gives up waiting (rejecting with its reason).
 * @returns `fn`'s result.
 *
 * @example Two turns of one key run one after another
 * ```ts
 * import { inTurn } from "./turns.ts";
 *
 * const turns = new Map<string, Promise<void>>();
 * const order: number[] = [];
 * await Promise.all([
 *   inTurn(turns, "a", async () => { order.push(1); }),
 *   inTurn(turns, "a", async () => { order.push(2); }),
 * ]);
 * console.assert(order.join() === "1,2");
 * ```
 */
export async function inTurn<T>(
  turns: Map<string, Promise<void>>,
  key: string,
  fn: () => Promise<T>,
  signal?: AbortSignal | undefined,
): Promise<T> {
  const previous = turns.get(key) ?? Promise.resolve();
  const run = waitFor(previous, signal).then(() => {
    signal?.throwIfAborted();
    return fn();
  });
  // The next turn waits for this one and for the one before it: a waiter
  // that gave up does not let the next one past a holder still running.
  const tail = Promise.all([previous, run.catch(() => {})]).then(() => {});
  turns.set(key, tail);
  try {
    return await run;
  } finally {
    if (turns.get(key) === tail) turns.delete(key);
  }
}
