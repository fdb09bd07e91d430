/**
 * How the request runner reads an error: whether a retry may succeed
 * (decided by type and code, never by message text), a one-line reason for a
 * log line, and what to advise.
 *
 * @module
 */

import {
  HUBError,
  HUBRequestError,
  HUBTimeoutError,
} from "../common/errors.ts";
import { redact } from "../common/redact.ts";

/** Error codes Node, Deno and Bun give a failed connection. */
const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ENETDOWN",
  "ConnectionRefused",
  "ConnectionReset",
  "ConnectionClosed",
  "FailedToOpenSocket",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/**
 * Whether sending the same request again may succeed, decided by the error's
 * type and code, never by its message: a {@linkcode HUBRequestError} that
 * says so (network errors, 408, 429, 5xx), a {@linkcode HUBTimeoutError} (an
 * attempt ran out of time), and an error whose `code` names a failed
 * connection (`ECONNREFUSED`, `ECONNRESET`, ...). Never an abort, and never
 * a programming error such as a `TypeError` from a custom transport.
 *
 * @param error Anything an attempt threw.
 * @returns `true` if a retry may succeed.
 *
 * @example Classify errors
 * ```ts
 * import { isRetriableError } from "./request_errors.ts";
 * import { HUBRequestError } from "../common/errors.ts";
 *
 * const busy = new HUBRequestError("Cannot upload metrics: Busy", {
 *   method: "POST",
 *   path: "/v1/models/abc",
 *   status: 503,
 *   retriable: true,
 * });
 * console.assert(isRetriableError(busy));
 * console.assert(!isRetriableError(new TypeError("x is not a function")));
 * console.assert(!isRetriableError(new DOMException("Closed", "AbortError")));
 * ```
 */
export function isRetriableError(error: unknown): boolean {
  if (error instanceof HUBRequestError) return error.retriable;
  if (error instanceof HUBTimeoutError) return true;
  if (!(error instanceof Error) || error.name === "AbortError") return false;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && NETWORK_ERROR_CODES.has(code);
}

/**
 * A short, single-line reason for an error, fit for a log line: the status
 * and the server's message for a {@linkcode HUBRequestError}, the message
 * otherwise, passed through {@linkcode redact}.
 *
 * @param error Anything that was thrown.
 * @returns The reason, at most 300 characters.
 *
 * @example Describe a refused request
 * ```ts
 * import { describeError } from "./request_errors.ts";
 * import { HUBRequestError } from "../common/errors.ts";
 *
 * const error = new HUBRequestError("Cannot load the model: Not found", {
 *   method: "GET",
 *   path: "/v1/models/abc",
 *   status: 404,
 *   serverMessage: "Model not found",
 *   retriable: false,
 * });
 * console.assert(describeError(error) === "HTTP 404: Model not found");
 * ```
 */
export function describeError(error: unknown): string {
  let text: string;
  if (error instanceof HUBRequestError) {
    if (error.status !== undefined) {
      text = `HTTP ${error.status}: ${error.serverMessage ?? error.message}`;
    } else {
      text = `network error: ${error.message}`;
    }
  } else if (error instanceof Error) {
    const base = error.name === "Error" || error instanceof HUBError
      ? error.message
      : `${error.name}: ${error.message}`;
    const cause = error.cause instanceof Error ? error.cause.message : "";
    text = cause && !base.includes(cause) ? `${base} (${cause})` : base;
  } else {
    text = String(error);
  }
  text = redact(text).replace(/\s+/g, " ").trim();
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}

/**
 * The key under which a retry is counted: the HTTP status, `"network"` or
 * `"timeout"`.
 *
 * @param error The error of the failed attempt.
 * @returns The key.
 */
export function retryKey(error: unknown): string {
  if (error instanceof HUBRequestError) {
    return error.status === undefined ? "network" : String(error.status);
  }
  if (error instanceof HUBTimeoutError) return "timeout";
  return "network";
}

/**
 * What to do about a request that failed for good.
 *
 * @param error The final error.
 * @returns Advice for the log line.
 */
export function advise(error: unknown): string {
  if (error instanceof HUBRequestError && error.status !== undefined) {
    const status = error.status;
    if (status === 401 || status === 403) {
      return "check the API key (option apiKey or HUB_API_KEY) and its access to this model";
    }
    if (status === 404) return "check the model id or URL";
    if (status >= 400 && status < 500 && !error.retriable) {
      return "the server refused the request; fix what its message says and try again";
    }
  }
  if (error instanceof HUBTimeoutError) {
    return "the server did not answer in time; check the network and the server, then try again";
  }
  if (!(error instanceof HUBError)) {
    return "this is a bug in the code that made the request, not a network failure";
  }
  return "the server or the network stayed unavailable; check them and try again later";
}
