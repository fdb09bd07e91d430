/**
 * One error family for everything the library throws on purpose.
 *
 * `HUBError` is the base; callers catch a subclass when they want to react to
 * one condition: {@linkcode HUBModelError} (identifier or model state),
 * {@linkcode HUBRequestError} (the server or the network refused a request),
 * {@linkcode HUBTimeoutError} (an attempt or a whole operation ran out of
 * time) and {@linkcode HUBConfigError} (credentials or roots that cannot be
 * used as given). Bad arguments throw the built-in `TypeError`/`RangeError`.
 *
 * No message, property or `cause` of these errors ever contains an API key.
 *
 * @module
 */

/**
 * Base class of every error this library throws on purpose.
 *
 * @example Catch any library error
 * ```ts
 * import { HUBError, HUBModelError } from "./errors.ts";
 *
 * try {
 *   throw new HUBModelError("Cannot open the model as it is already trained");
 * } catch (error) {
 *   if (error instanceof HUBError) console.log(error.name, error.message);
 * }
 * ```
 */
export class HUBError extends Error {
  /**
   * Creates an error.
   *
   * @param message Sentence-case description of what failed and what to do.
   * @param options Standard error options (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HUBError";
  }
}

/**
 * The identifier cannot be parsed, or the model cannot be used for training
 * (missing, already trained, dataset still processing).
 *
 * @example Reject an unusable identifier
 * ```ts
 * import { HUBModelError } from "./errors.ts";
 *
 * const error = new HUBModelError("Cannot parse the model identifier");
 * console.assert(error.name === "HUBModelError");
 * ```
 */
export class HUBModelError extends HUBError {
  /**
   * Creates an error.
   *
   * @param message What is wrong with the model or identifier, and what to do.
   * @param options Standard error options (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HUBModelError";
  }
}

/**
 * Credentials, roots or settings that cannot be used as given, such as an API
 * key that would travel over plain HTTP to a host that is not loopback.
 *
 * @example Refuse an unsafe configuration
 * ```ts
 * import { HUBConfigError } from "./errors.ts";
 *
 * const error = new HUBConfigError("Cannot send an API key over plain HTTP");
 * console.assert(error instanceof Error);
 * ```
 */
export class HUBConfigError extends HUBError {
  /**
   * Creates an error.
   *
   * @param message What is wrong with the configuration, and how to fix it.
   * @param options Standard error options (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HUBConfigError";
  }
}

/** The fields of a {@linkcode HUBRequestError}. */
export interface HUBRequestErrorInit {
  /** HTTP method of the failed request, e.g. `"POST"`. */
  method: string;
  /** Path of the failed request, without query string or secrets. */
  path: string;
  /** HTTP status, or `undefined` when no response arrived (network error). */
  status?: number | undefined;
  /** The server's own `message`, when it sent one. */
  serverMessage?: string | undefined;
  /** How long the server asked the client to wait, in milliseconds. */
  retryAfter?: number | undefined;
  /** Whether sending the same request again may succeed. */
  retriable: boolean;
  /**
   * The error was already told to the user (logged once by whoever raised
   * it), so request runners do not log it again. @default {false}
   */
  reported?: boolean | undefined;
  /** The underlying error, e.g. the `TypeError` of a failed `fetch`. */
  cause?: unknown | undefined;
}

/**
 * A request was refused by the server, or failed on the network.
 *
 * `status` is `undefined` for network errors; `retriable` says whether the
 * same request may succeed later (network errors, 408, 429, 500, 502, 503,
 * 504); `retryAfter` carries the server's `Retry-After`/`X-RateLimit-Reset`
 * in milliseconds.
 *
 * @example Inspect a refused request
 * ```ts
 * import { HUBRequestError } from "./errors.ts";
 *
 * const error = new HUBRequestError("Cannot upload metrics: Rate limit reached", {
 *   method: "POST",
 *   path: "/v1/models/abc",
 *   status: 429,
 *   retryAfter: 3000,
 *   retriable: true,
 * });
 * console.assert(error.status === 429 && error.retriable);
 * ```
 */
export class HUBRequestError extends HUBError {
  /** HTTP method of the failed request. */
  readonly method: string;
  /** Path of the failed request, without query string or secrets. */
  readonly path: string;
  /** HTTP status, or `undefined` when no response arrived. */
  readonly status: number | undefined;
  /** The server's own `message`, when it sent one. */
  readonly serverMessage: string | undefined;
  /** How long the server asked to wait before retrying, in milliseconds. */
  readonly retryAfter: number | undefined;
  /** Whether sending the same request again may succeed. */
  readonly retriable: boolean;
  /** Already logged once where it was raised: not logged again. */
  readonly reported: boolean;

  /**
   * Creates an error.
   *
   * @param message What failed, the server's message, and what to do next.
   * @param init The request's method, path, status and retry hints.
   */
  constructor(message: string, init: HUBRequestErrorInit) {
    super(
      message,
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.name = "HUBRequestError";
    this.method = init.method;
    this.path = init.path;
    this.status = init.status;
    this.serverMessage = init.serverMessage;
    this.retryAfter = init.retryAfter;
    this.retriable = init.retriable;
    this.reported = init.reported ?? false;
  }
}

/**
 * An attempt or a whole operation ran out of time.
 *
 * @example Tell a timeout apart
 * ```ts
 * import { HUBTimeoutError } from "./errors.ts";
 *
 * const error = new HUBTimeoutError("Upload attempt timed out after 30000 ms", {
 *   timeout: 30_000,
 * });
 * console.assert(error.timeout === 30_000);
 * ```
 */
export class HUBTimeoutError extends HUBError {
  /** The time limit that was exceeded, in milliseconds. */
  readonly timeout: number;

  /**
   * Creates an error.
   *
   * @param message What ran out of time and what to do.
   * @param options The time limit in milliseconds, and an optional `cause`.
   */
  constructor(message: string, options: { timeout: number; cause?: unknown }) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "HUBTimeoutError";
    this.timeout = options.timeout;
  }
}

/**
 * Returns `error` when it is a {@linkcode HUBError}, else a `HUBError` whose
 * message is `what` followed by the error's message and whose `cause` is the
 * error: the one place where foreign errors join the library's family.
 *
 * @param error Anything that was thrown.
 * @param what What failed, e.g. `"Checkpoint upload failed"`.
 * @returns A library error.
 *
 * @example Wrap a foreign error
 * ```ts
 * import { HUBError, toHUBError } from "./errors.ts";
 *
 * const error = toHUBError(new Error("disk full"), "Cannot save the journal");
 * console.assert(error instanceof HUBError);
 * console.assert(error.message === "Cannot save the journal: disk full");
 * ```
 */
export function toHUBError(error: unknown, what: string): HUBError {
  if (error instanceof HUBError) return error;
  return new HUBError(
    `${what}: ${error instanceof Error ? error.message : String(error)}`,
    { cause: error },
  );
}
