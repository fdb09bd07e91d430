/**
 * The options of the local HUB app ({@linkcode HubHandlerOptions}) and their
 * check, apart from the app (`app.ts`) that wires the routes.
 *
 * @module
 */

import { isRecord } from "../common/json.ts";
import type { HubStorage } from "./storage/contract.ts";

/** Options of `createHubApp` and `createHubHandler` (`app.ts`). */
export interface HubHandlerOptions {
  /**
   * Directory for models, metrics and weights; created when missing, and
   * reloaded as is by a later server on the same directory. Needed unless
   * `database` and `weights` are both given, or `storage`.
   *
   * @default {undefined}
   */
  dataDir?: string | undefined;
  /**
   * PostgreSQL URL (`postgres://user@host[:port]/database`) that keeps model
   * documents and metrics instead of `dataDir`; several server processes may
   * share it. Its migrations are applied when the store opens.
   *
   * @default {undefined}
   */
  database?: string | undefined;
  /**
   * Where weights go instead of `dataDir`: `s3://<bucket>[/<prefix>]` (S3
   * endpoint and credentials from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
   * `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`) or a directory.
   *
   * @default {undefined}
   */
  weights?: string | undefined;
  /**
   * API keys the server accepts (`x-api-key` or `authorization: Bearer`).
   * When empty or missing, every request is accepted, with or without a key.
   *
   * @default {undefined}
   */
  apiKeys?: readonly string[] | undefined;
  /**
   * Largest accepted upload request body in bytes; larger bodies get 413.
   *
   * @default {2147483648}
   */
  maxUploadBytes?: number | undefined;
  /**
   * Base URL for the absolute weight URLs in model documents
   * (`resume`, `weights`), e.g. when the server sits behind a proxy.
   *
   * @default {the request's origin}
   */
  publicUrl?: string | undefined;
  /**
   * Host names an open server (no `apiKeys`) answers besides loopback names,
   * `*.localhost`, IP addresses and the host of `publicUrl`; requests for
   * any other `Host` get 421 (DNS rebinding). `serveHub()` adds the
   * name it is bound to.
   *
   * @default {[]}
   */
  allowedHosts?: readonly string[] | undefined;
  /**
   * Clock in milliseconds since the epoch, for timestamps.
   *
   * @default {Date.now}
   */
  now?: (() => number) | undefined;
  /**
   * When aborted, uploads still being received are cancelled and answered
   * 503, so that a server can shut down while a client stalls mid-upload.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
  /**
   * Milliseconds the server may take to produce a response's status and
   * headers; a request not answered by then gets `503` with `Retry-After`
   * (the JSON envelope, or a short HTML page for a browser), and its storage
   * calls are cancelled (a PostgreSQL query is cancelled on the server). Not
   * counted: the time a request body takes to arrive and the streaming of a
   * response body (a download, a page's live events), which the
   * connection's idle timeout bounds. An upload's commit is counted.
   *
   * @default {30000}
   */
  requestTimeout?: number | undefined;
  /**
   * Receives unexpected errors (answered with 500). Never given an API key.
   *
   * @default {logs the error with console.error}
   */
  onError?: ((error: unknown) => void) | undefined;
}

function checkLocation(name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== "string" || value === "")) {
    throw new TypeError(
      `Cannot create the HUB as ${name} is not a non-empty string`,
    );
  }
}

/**
 * Checks {@linkcode HubHandlerOptions} before anything is opened, so that a
 * wrong option fails at once with the option's name.
 *
 * @param options The options as given (possibly from untyped code).
 * @param storage A storage pair opened by the caller, which stands in for
 * `dataDir` / `database` / `weights`.
 * @throws {TypeError} For an option of the wrong type or a missing location.
 * @throws {RangeError} For a negative or fractional `maxUploadBytes`, or a
 * `requestTimeout` that is not a positive number.
 */
export function validateHubOptions(
  options: HubHandlerOptions,
  storage: HubStorage | undefined,
): void {
  // Checked through an `unknown` copy: narrowing `options` itself to a
  // record would lose the types of its fields.
  const given: unknown = options;
  if (!isRecord(given)) {
    throw new TypeError(
      "Cannot create the HUB as options is not an object",
    );
  }
  checkLocation("dataDir", options.dataDir);
  checkLocation("database", options.database);
  checkLocation("weights", options.weights);
  if (
    storage === undefined && options.dataDir === undefined &&
    (options.database === undefined || options.weights === undefined)
  ) {
    throw new TypeError(
      "Cannot create the HUB without dataDir unless database and weights are both given",
    );
  }
  if (options.apiKeys !== undefined) {
    if (
      !Array.isArray(options.apiKeys) ||
      !options.apiKeys.every((k) => typeof k === "string" && k !== "")
    ) {
      throw new TypeError(
        "Cannot create the HUB as apiKeys is not a list of non-empty strings",
      );
    }
  }
  const max = options.maxUploadBytes;
  if (max !== undefined && (!Number.isSafeInteger(max) || max < 0)) {
    throw new RangeError(
      `Cannot create the HUB as maxUploadBytes is not a non-negative integer: ${max}`,
    );
  }
  if (options.publicUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.publicUrl);
    } catch {
      url = undefined;
    }
    if (url === undefined || !/^https?:$/.test(url.protocol)) {
      throw new TypeError(
        `Cannot create the HUB as publicUrl is not an http(s) URL: ${options.publicUrl}`,
      );
    }
  }
  if (
    options.allowedHosts !== undefined &&
    (!Array.isArray(options.allowedHosts) ||
      !options.allowedHosts.every((h) => typeof h === "string" && h !== ""))
  ) {
    throw new TypeError(
      "Cannot create the HUB as allowedHosts is not a list of non-empty host names",
    );
  }
  const timeout = options.requestTimeout;
  if (timeout !== undefined && (!Number.isFinite(timeout) || timeout <= 0)) {
    throw new RangeError(
      `Cannot create the HUB as requestTimeout is not a positive number of milliseconds: ${timeout}`,
    );
  }
  if (options.now !== undefined && typeof options.now !== "function") {
    throw new TypeError(
      "Cannot create the HUB as now is not a function",
    );
  }
  if (
    options.signal !== undefined && !(options.signal instanceof AbortSignal)
  ) {
    throw new TypeError(
      "Cannot create the HUB as signal is not an AbortSignal",
    );
  }
  if (options.onError !== undefined && typeof options.onError !== "function") {
    throw new TypeError(
      "Cannot create the HUB as onError is not a function",
    );
  }
}
