/**
 * The library's logger: a console logger with the `HUB: ` prefix, a quiet
 * one, and a wrapper that scrubs secrets from every line as a last guard.
 *
 * @module
 */

import type { Logger } from "../protocol/types.ts";

/** The prefix of every line the default logger prints. */
export const LOG_PREFIX = "HUB: ";

/**
 * Returns a logger that writes to the console with the `HUB: ` prefix, or
 * one that drops every line when `quiet` is set.
 *
 * @param quiet Drop every line.
 * @returns The logger.
 *
 * @example Log a line
 * ```ts
 * import { consoleLogger } from "./logger.ts";
 *
 * consoleLogger(true).info("this line is dropped");
 * ```
 */
export function consoleLogger(quiet = false): Logger {
  if (quiet) return { info() {}, warn() {}, error() {} };
  return {
    info: (message) => console.log(`${LOG_PREFIX}${message}`),
    warn: (message) => console.warn(`${LOG_PREFIX}WARNING ${message}`),
    error: (message) => console.error(`${LOG_PREFIX}ERROR ${message}`),
  };
}

/**
 * Wraps a logger so that no line can carry one of `secrets`: each occurrence
 * becomes `***`. A logger that throws never breaks the caller.
 *
 * @param logger The logger to write to.
 * @param secrets Values that must never be printed (empty ones are ignored).
 * @returns The guarded logger.
 *
 * @example Scrub a key
 * ```ts
 * import { redactingLogger } from "./logger.ts";
 *
 * const lines: string[] = [];
 * const logger = redactingLogger({
 *   info: (m) => lines.push(m),
 *   warn: (m) => lines.push(m),
 *   error: (m) => lines.push(m),
 * }, ["secret-key"]);
 * logger.warn("retrying with secret-key");
 * console.assert(lines[0] === "retrying with ***");
 * ```
 */
export function redactingLogger(
  logger: Logger,
  secrets: ReadonlyArray<string | undefined>,
): Logger {
  const hidden = secrets.filter((s): s is string =>
    typeof s === "string" && s.length >= 4
  );
  const scrub = (message: string): string => {
    let out = String(message);
    for (const secret of hidden) out = out.split(secret).join("***");
    return out;
  };
  const guard = (write: (m: string) => void) => (message: string): void => {
    try {
      write(scrub(message));
    } catch {
      // A broken logger must not break training.
    }
  };
  const guarded: Logger = {
    info: guard((m) => logger.info(m)),
    warn: guard((m) => logger.warn(m)),
    error: guard((m) => logger.error(m)),
  };
  if (typeof logger.debug === "function") {
    guarded.debug = guard((m) => logger.debug?.(m));
  }
  return guarded;
}
