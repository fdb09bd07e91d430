// Internal: timers that never keep a finished process alive.

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
