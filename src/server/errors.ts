/**
 * Error replies of the local HUB: every refusal is an `HTTPException` whose
 * response is the protocol's JSON envelope `{success: false, message}`, and
 * the rules that tell a client's broken body from a server fault.
 *
 * @module
 */

import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { MultipartError } from "./multipart.ts";
import { fail } from "./reply.ts";

/**
 * A refusal with the JSON envelope as its response.
 *
 * @param status HTTP status.
 * @param message What went wrong and what to do.
 * @param headers Extra reply headers.
 * @returns The exception to throw.
 */
export function hubError(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): HTTPException {
  return new HTTPException(status as ContentfulStatusCode, {
    message,
    res: fail(status, message, headers),
  });
}

/** Message of an upload whose body ended early (the connection failed). */
export const UPLOAD_ABORTED = "Upload aborted: the request body ended early";
/** Message of a JSON request whose body ended early. */
export const REQUEST_ABORTED = "Request aborted: the request body ended early";

/**
 * The request body could not be read to its end: the client disconnected or
 * cancelled the request mid-body. Answered 400, never reported as a server
 * error.
 */
export class BodyAbortedError extends HTTPException {
  /**
   * @param message {@linkcode UPLOAD_ABORTED} or {@linkcode REQUEST_ABORTED}.
   */
  constructor(message: string) {
    super(400, { message, res: fail(400, message) });
    this.name = "BodyAbortedError";
  }
}

/**
 * Names of the errors a runtime raises when a request body cannot be read
 * because the connection went away: Deno's `BadResource` ("Cannot read
 * request body as underlying resource unavailable") and its I/O error
 * classes, Bun's `AbortError` DOMException ("The connection was closed.").
 */
const BODY_READ_ERRORS = new Set([
  "BadResource",
  "Http",
  "Interrupted",
  "ConnectionReset",
  "ConnectionAborted",
  "BrokenPipe",
  "UnexpectedEof",
  "AbortError",
]);

/**
 * Whether an error means the request body could not be read to its end.
 * Only for errors raised by reading a body: a disk error while storing an
 * upload is a server error.
 *
 * @param error What reading the body threw.
 * @returns `true` when the client's body broke off.
 */
export function isBodyReadFailure(error: unknown): boolean {
  if (error instanceof BodyAbortedError) return true;
  if (error instanceof MultipartError) return error.aborted;
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === "string" && BODY_READ_ERRORS.has(name);
}

/**
 * The signal that tells a handler its client went away. Only used on Bun:
 * Deno's `request.signal` also aborts after every successful response (and
 * warns about it), while its request body stream already errors when the
 * client disconnects.
 *
 * @param request The request.
 * @returns Bun's request signal, or `undefined` on other runtimes.
 */
export function disconnectSignal(request: Request): AbortSignal | undefined {
  return "Bun" in globalThis ? request.signal : undefined;
}
