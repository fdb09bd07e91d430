// Internal: timers that never keep a finished process alive.
//
// `@std/async`'s `delay({ persistent: false })` unrefs its timer on Deno only
// (on Bun it prints a warning and keeps the process alive), so the waits that
// must not hold a finished trainer open are written here.

interface DenoTimers {
  unrefTimer(id: number): void;
}

/** Unrefs a timer handle on Deno (numeric id) and on Node/Bun (`unref()`). */
export function unrefTimer(handle: ReturnType<typeof setTimeout>): void {
  const deno = (globalThis as { Deno?: DenoTimers }).Deno;
  if (deno !== undefined && typeof handle === "number") {
    deno.unrefTimer(handle);
  } else {
    (handle as { unref?: () => void }).unref?.();
  }
}

/**
 * Resolves after `ms` milliseconds through an unref'd timer, or rejects with
 * the signal's reason when it aborts first.
 */
export function sleepUnref(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = (): void => {
      clearTimeout(handle);
      reject(signal?.reason);
    };
    const handle = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, Math.min(Math.max(ms, 0), 2 ** 31 - 1));
    unrefTimer(handle);
    signal?.addEventListener("abort", abort, { once: true });
  });
}
