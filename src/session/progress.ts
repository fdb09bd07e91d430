/**
 * Upload progress for humans: a pure {@linkcode formatProgress} line and a
 * terminal bar ({@linkcode createProgressBar}) redrawn in place on standard
 * error, shown only when standard error is a TTY and `CI` is not set.
 *
 * @module
 */

import type { ProgressCallback, UploadProgress } from "../protocol/types.ts";

/** The state {@linkcode formatProgress} renders. */
export interface ProgressLineOptions {
  /** Text before the numbers, e.g. `"Uploading best.pt"`. @default {""} */
  label?: string;
  /** Transfer rate in bytes per second, if known. @default {undefined} */
  rate?: number | undefined;
  /** Bar width in characters; `0` draws no bar. @default {20} */
  width?: number;
}

const UNITS = ["B", "kB", "MB", "GB", "TB"];

/**
 * Formats a byte count with SI units, e.g. `1.5 MB`.
 *
 * @param bytes The byte count.
 * @returns The human-readable size.
 *
 * @example Format sizes
 * ```ts
 * import { formatBytes } from "./progress.ts";
 *
 * console.assert(formatBytes(999) === "999 B");
 * console.assert(formatBytes(1_500_000) === "1.5 MB");
 * ```
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "? B";
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/**
 * Renders one progress line: label, bar, bytes, percent, rate and ETA (the
 * parts that are unknown are left out).
 *
 * @param progress Bytes loaded and the total, if known.
 * @param options Label, rate and bar width.
 * @returns The line, without line break.
 *
 * @example Render a line
 * ```ts
 * import { formatProgress } from "./progress.ts";
 *
 * const line = formatProgress({ loaded: 50_000_000, total: 100_000_000 }, {
 *   label: "Uploading best.pt",
 *   rate: 25_000_000,
 *   width: 10,
 * });
 * console.assert(
 *   line === "Uploading best.pt [#####-----] 50.0 MB/100 MB 50% 25.0 MB/s ETA 0:02",
 * );
 * ```
 */
export function formatProgress(
  progress: UploadProgress,
  options: ProgressLineOptions = {},
): string {
  const { label = "", rate, width = 20 } = options;
  const { loaded, total } = progress;
  const parts: string[] = [];
  if (label !== "") parts.push(label);
  const known = total !== undefined && Number.isFinite(total) && total > 0;
  const fraction = known ? Math.min(1, Math.max(0, loaded / total)) : 0;
  if (width > 0 && known) {
    const filled = Math.floor(fraction * width);
    parts.push(`[${"#".repeat(filled)}${"-".repeat(width - filled)}]`);
  }
  parts.push(
    total === undefined
      ? formatBytes(loaded)
      : `${formatBytes(loaded)}/${formatBytes(total)}`,
  );
  if (known) parts.push(`${Math.floor(fraction * 100)}%`);
  else if (total === 0) parts.push("100%");
  if (rate !== undefined && Number.isFinite(rate) && rate > 0) {
    parts.push(`${formatBytes(rate)}/s`);
    if (known && loaded < total) {
      parts.push(`ETA ${formatDuration((total - loaded) / rate)}`);
    }
  }
  return parts.join(" ");
}

/** Options of {@linkcode createProgressBar}. */
export interface ProgressBarOptions {
  /** Text before the numbers. @default {"Uploading"} */
  label?: string;
  /**
   * Where the line goes. When given, the bar is always drawn; when not, it
   * goes to standard error and only if that is a TTY and `CI` is unset.
   * @default {standard error}
   */
  write?: (text: string) => void;
  /** Shortest time between two redraws in milliseconds. @default {100} */
  interval?: number;
  /** Clock in milliseconds, for tests. @default {performance.now} */
  now?: () => number;
}

/** A terminal progress bar. */
export interface ProgressBar {
  /** Pass as `onProgress`. */
  onProgress: ProgressCallback;
  /** Draws the last state and ends the line; later calls do nothing. */
  done(): void;
}

interface RuntimeGlobals {
  Deno?: {
    stderr?: {
      isTerminal?: () => boolean;
      writeSync?: (b: Uint8Array) => number;
    };
    env?: { get(name: string): string | undefined };
  };
  process?: {
    stderr?: { isTTY?: boolean; write?: (s: string) => boolean };
    env?: Record<string, string | undefined>;
  };
}

function readCI(g: RuntimeGlobals): string | undefined {
  try {
    if (g.Deno?.env !== undefined) return g.Deno.env.get("CI");
  } catch {
    return undefined; // No --allow-env: count it as unset.
  }
  return g.process?.env?.CI;
}

function stderrWriter(): ((text: string) => void) | undefined {
  const g = globalThis as RuntimeGlobals;
  const ci = readCI(g);
  if (ci !== undefined && ci !== "" && ci !== "0" && ci !== "false") {
    return undefined;
  }
  const denoErr = g.Deno?.stderr;
  if (denoErr?.isTerminal !== undefined && denoErr.writeSync !== undefined) {
    if (!denoErr.isTerminal()) return undefined;
    const encoder = new TextEncoder();
    const write = denoErr.writeSync.bind(denoErr);
    return (text) => {
      write(encoder.encode(text));
    };
  }
  const nodeErr = g.process?.stderr;
  if (nodeErr?.isTTY === true && nodeErr.write !== undefined) {
    const write = nodeErr.write.bind(nodeErr);
    return (text) => {
      write(text);
    };
  }
  return undefined;
}

/**
 * Creates a one-line progress bar (bytes, percent, rate, ETA) redrawn in
 * place with `\r` at most every `interval` ms and ended with a line break.
 * Without `write`, returns `undefined` unless standard error is a TTY and
 * `CI` is unset: callers then report nothing.
 *
 * @param options Label, output, redraw interval and clock.
 * @returns The bar, or `undefined` when there is no terminal to draw on.
 *
 * @example Draw into a string
 * ```ts
 * import { createProgressBar } from "./progress.ts";
 *
 * let out = "";
 * const bar = createProgressBar({ label: "Uploading", write: (t) => out += t });
 * bar?.onProgress({ loaded: 10, total: 10 });
 * bar?.done();
 * console.assert(out.endsWith("\n"));
 * ```
 */
export function createProgressBar(
  options: ProgressBarOptions = {},
): ProgressBar | undefined {
  const {
    label = "Uploading",
    write: given,
    interval = 100,
    now = () => performance.now(),
  } = options;
  if (given !== undefined && typeof given !== "function") {
    throw new TypeError(
      "Cannot create the progress bar as 'write' is not a function",
    );
  }
  if (typeof interval !== "number" || !(interval >= 0)) {
    throw new RangeError(
      `Cannot create the progress bar as 'interval' must be a non-negative number, got ${interval}`,
    );
  }
  const write = given ?? stderrWriter();
  if (write === undefined) return undefined;

  let last: UploadProgress | undefined;
  let lastDraw = -Infinity;
  let width = 0;
  let ended = false;
  let start: { time: number; loaded: number } | undefined;
  const draw = (progress: UploadProgress, time: number): void => {
    const elapsed = start === undefined ? 0 : (time - start.time) / 1000;
    const rate = start !== undefined && elapsed > 0
      ? (progress.loaded - start.loaded) / elapsed
      : undefined;
    const line = formatProgress(progress, { label, rate });
    const pad = Math.max(0, width - line.length);
    width = line.length;
    try {
      write(`\r${line}${" ".repeat(pad)}`);
    } catch {
      // A broken terminal must not break the upload.
    }
    lastDraw = time;
  };
  return {
    onProgress(progress) {
      if (ended) return;
      const time = now();
      // A retried attempt restarts from 0: measure the rate afresh.
      if (start === undefined || progress.loaded < (last?.loaded ?? 0)) {
        start = { time, loaded: progress.loaded };
      }
      last = { loaded: progress.loaded, total: progress.total };
      const complete = progress.total !== undefined &&
        progress.loaded >= progress.total;
      if (complete || time - lastDraw >= interval) draw(last, time);
    },
    done() {
      if (ended) return;
      ended = true;
      if (last !== undefined) {
        draw(last, now());
        try {
          write("\n");
        } catch {
          // Ignore: see above.
        }
      }
    },
  };
}
