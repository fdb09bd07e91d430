/**
 * Upload progress for humans: a pure {@linkcode formatProgress} line, a
 * terminal bar ({@linkcode createProgressBar}) redrawn in place on standard
 * error when it is a TTY and `CI` is not set, and otherwise (CI logs,
 * `nohup`, a parent process reading a pipe) whole lines at a bounded rate
 * ({@linkcode createProgressLines}). Sizes are formatted by `@std/fmt/bytes`.
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import { readEnv } from "../common/permissions.ts";
import type {
  Logger,
  ProgressCallback,
  UploadProgress,
} from "../protocol/types.ts";

/** The state {@linkcode formatProgress} renders. */
export interface ProgressLineOptions {
  /** Text before the numbers, e.g. `"Uploading best.pt"`. @default {""} */
  label?: string | undefined;
  /** Transfer rate in bytes per second, if known. @default {undefined} */
  rate?: number | undefined;
  /** Bar width in characters; `0` draws no bar. @default {20} */
  width?: number | undefined;
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
 *   line === "Uploading best.pt [#####-----] 50 MB/100 MB 50% 25 MB/s ETA 0:02",
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
  label?: string | undefined;
  /**
   * Where the line goes. When given, the bar is always drawn; when not, it
   * goes to standard error and only if that is a TTY and `CI` is unset.
   * @default {standard error}
   */
  write?: ((text: string) => void) | undefined;
  /** Shortest time between two redraws in milliseconds. @default {100} */
  interval?: number | undefined;
  /** Clock in milliseconds, for tests. @default {performance.now} */
  now?: (() => number) | undefined;
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
    env?: { get(name: string): string | undefined } | undefined;
  };
  process?: {
    stderr?: { isTTY?: boolean; write?: (s: string) => boolean };
    env?: Record<string, string | undefined> | undefined;
  };
}

/** Whether standard error is a terminal (and `CI` is unset). */
function stderrWriter(): ((text: string) => void) | undefined {
  const g = globalThis as RuntimeGlobals;
  const ci = readEnv("CI");
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

/** Options of {@linkcode createProgressLines}. */
export interface ProgressLinesOptions {
  /** Text before the numbers. @default {"Uploading"} */
  label?: string | undefined;
  /** Receives each finished line. */
  write: (line: string) => void;
  /** Longest time between two lines while bytes flow, in ms. @default {10000} */
  interval?: number | undefined;
  /** Share of the total after which a line is written, from 0 to 1. @default {0.1} */
  step?: number | undefined;
  /** Clock in milliseconds, for tests. @default {performance.now} */
  now?: (() => number) | undefined;
}

/**
 * Creates a progress reporter for output that is not a terminal: one whole
 * line at the start, after every `step` of the total or `interval` ms
 * (whichever comes first), and at the end, so a log shows the upload is
 * alive without a line per chunk.
 *
 * @param options Label, output, step, interval and clock.
 * @returns The reporter.
 *
 * @example Lines every 10 % of a 100-byte upload
 * ```ts
 * import { createProgressLines } from "./progress.ts";
 *
 * const lines: string[] = [];
 * const progress = createProgressLines({ write: (l) => lines.push(l) });
 * for (let loaded = 0; loaded <= 100; loaded++) {
 *   progress.onProgress({ loaded, total: 100 });
 * }
 * progress.done();
 * console.assert(lines.length === 11);
 * ```
 */
export function createProgressLines(
  options: ProgressLinesOptions,
): ProgressBar {
  const {
    label = "Uploading",
    write,
    interval = 10_000,
    step = 0.1,
    now = () => performance.now(),
  } = options;
  if (typeof write !== "function") {
    throw new TypeError(
      "Cannot create the progress lines as 'write' is not a function",
    );
  }
  let last: UploadProgress | undefined;
  let lastLine: { time: number; fraction: number; loaded: number } | undefined;
  let ended = false;
  const emit = (progress: UploadProgress, time: number): void => {
    try {
      write(formatProgress(progress, { label, width: 0 }));
    } catch {
      // A broken output must not break the upload.
    }
    lastLine = {
      time,
      fraction: fractionOf(progress),
      loaded: progress.loaded,
    };
  };
  return {
    onProgress(progress) {
      if (ended) return;
      const time = now();
      if (progress.loaded < (last?.loaded ?? 0)) lastLine = undefined; // a retry
      last = { loaded: progress.loaded, total: progress.total };
      const complete = progress.total !== undefined &&
        progress.loaded >= progress.total;
      if (complete) return; // the end is written by done()
      if (
        lastLine === undefined ||
        fractionOf(progress) - lastLine.fraction >= step - 1e-9 ||
        (time - lastLine.time >= interval && progress.loaded > lastLine.loaded)
      ) emit(last, time);
    },
    done() {
      if (ended) return;
      ended = true;
      if (last !== undefined) emit(last, now());
    },
  };
}

function fractionOf(progress: UploadProgress): number {
  const { loaded, total } = progress;
  return total !== undefined && total > 0 ? Math.min(1, loaded / total) : 0;
}

/** Options of {@linkcode createProgressReporter}. */
export interface ProgressReporterOptions {
  /** Text before the numbers. @default {"Uploading"} */
  label?: string | undefined;
  /** Where lines go when standard error is not a terminal. @default {console.error} */
  logger?: Pick<Logger, "info"> | undefined;
}

/**
 * The progress display for an upload: the bar on a terminal, bounded-rate
 * lines (through `logger.info`) otherwise.
 *
 * @param options Label and where lines go.
 * @returns The reporter.
 *
 * @example Report into a logger
 * ```ts
 * import { createProgressReporter } from "./progress.ts";
 *
 * const lines: string[] = [];
 * const progress = createProgressReporter({ logger: { info: (l) => lines.push(l) } });
 * progress.onProgress({ loaded: 5, total: 10 });
 * progress.done();
 * ```
 */
export function createProgressReporter(
  options: ProgressReporterOptions = {},
): ProgressBar {
  const { label = "Uploading", logger } = options;
  return createProgressBar({ label }) ?? createProgressLines({
    label,
    write: logger === undefined
      ? (line) => console.error(line)
      : (line) => logger.info(line),
  });
}
