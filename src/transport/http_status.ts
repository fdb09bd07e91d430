/**
 * The HTTP rules of the HUB v1 protocol on the client side: which statuses
 * may succeed when sent again, how long a server asks to wait
 * (`Retry-After`, `X-RateLimit-Reset`), and what to tell the user per status.
 *
 * @module
 */

/** HTTP statuses after which the same request may succeed later. */
export const RETRIABLE_STATUSES: ReadonlySet<number> = new Set([
  408,
  429,
  500,
  502,
  503,
  504,
]);

/** Longest wait a server may ask for, in milliseconds (1 hour). */
export const MAX_RETRY_AFTER = 3_600_000;

/**
 * Whether a reply with this HTTP status may succeed when sent again
 * (408, 429, 500, 502, 503, 504).
 *
 * @param status The HTTP status.
 * @returns `true` when a retry may succeed.
 *
 * @example Classify statuses
 * ```ts
 * import { isRetriableStatus } from "./http_status.ts";
 *
 * console.assert(isRetriableStatus(503));
 * console.assert(!isRetriableStatus(404));
 * ```
 */
export function isRetriableStatus(status: number): boolean {
  return RETRIABLE_STATUSES.has(status);
}

/**
 * Reads how long a server asks the client to wait: `Retry-After` (seconds
 * or an HTTP date), else `X-RateLimit-Reset` (epoch seconds, or seconds from
 * now when small), capped at one hour. Missing or malformed headers give
 * `undefined`.
 *
 * @param headers The reply's headers.
 * @param now The current time in epoch milliseconds. @default {Date.now()}
 * @returns The wait in milliseconds, or `undefined`.
 *
 * @example Read Retry-After
 * ```ts
 * import { parseRetryAfter } from "./http_status.ts";
 *
 * console.assert(parseRetryAfter(new Headers({ "retry-after": "3" })) === 3000);
 * console.assert(parseRetryAfter(new Headers()) === undefined);
 * ```
 */
export function parseRetryAfter(
  headers: Headers,
  now: number = Date.now(),
): number | undefined {
  const cap = (ms: number): number =>
    Math.min(Math.max(0, Math.ceil(ms)), MAX_RETRY_AFTER);
  const retryAfter = headers.get("retry-after")?.trim();
  if (retryAfter) {
    if (/^\d+(\.\d+)?$/.test(retryAfter)) return cap(Number(retryAfter) * 1000);
    const date = Date.parse(retryAfter);
    if (Number.isFinite(date)) return cap(date - now);
  }
  const reset = headers.get("x-ratelimit-reset")?.trim();
  if (reset && /^\d+(\.\d+)?$/.test(reset)) {
    const value = Number(reset);
    // Values this large are epoch seconds; smaller ones count from now.
    return cap(value > 1e9 ? value * 1000 - now : value * 1000);
  }
  return undefined;
}

/**
 * What to tell the user after a refusal with this status.
 *
 * @param status The HTTP status.
 * @returns A hint starting with ": ", or "".
 */
export function hintFor(status: number): string {
  if (status === 401 || status === 403) {
    return ": check the API key";
  }
  if (status === 404) return ": check the model id and the API root";
  if (status === 413) return ": the server refuses a body this large";
  if (status === 429) return ": the server asks to slow down; retry later";
  if (status >= 500) return ": the server failed; retry later";
  return "";
}
