/**
 * Request bodies of the local HUB: the size-limit middlewares and the JSON
 * body reader.
 *
 * JSON bodies go through Hono's `bodyLimit` (a `Content-Length` check, or a
 * counted read of a chunked body) before they are read. Uploads get only a
 * `Content-Length` check here: their bodies stream to disk and the multipart
 * reader counts them, since `bodyLimit` would buffer a chunked upload whole.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { every } from "hono/combine";
import { isRecord } from "../common/json.ts";
import type { HubContext } from "./context.ts";
import { requireJsonType } from "./guard.ts";
import { BodyAbortedError, hubError, REQUEST_ABORTED } from "./errors.ts";
import { pauseDeadline, shareDeadline } from "./deadline.ts";
import { MAX_JSON_BYTES, MAX_JSON_DEPTH } from "./limits.ts";

/**
 * Refuses a JSON body above {@linkcode MAX_JSON_BYTES} with 413. A chunked
 * body is read here (counted), while the request's time limit waits: the
 * request that carries the read body keeps the same limit.
 *
 * @returns The middleware.
 */
export function jsonLimit(): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: MAX_JSON_BYTES,
    onError: () => {
      throw hubError(
        413,
        `Cannot accept the request body as it exceeds ${MAX_JSON_BYTES} bytes`,
      );
    },
  });
  return async (c, next) => {
    const original = c.req.raw;
    const resume = pauseDeadline(original);
    let resumed = false;
    try {
      return await limit(c, async () => {
        shareDeadline(original, c.req.raw);
        resumed = true;
        resume();
        await next();
      });
    } finally {
      if (!resumed) resume();
    }
  };
}

/**
 * The middleware of a route whose body is JSON: the size limit, and on an
 * open server (no keys) a JSON `Content-Type` (see `guard.ts`).
 *
 * @param hub Shared state.
 * @returns The middleware.
 */
export function jsonBody(hub: HubContext): MiddlewareHandler {
  return hub.keys.required
    ? jsonLimit()
    : every(requireJsonType(), jsonLimit());
}

/**
 * Refuses an upload whose declared `Content-Length` is above `maxBytes`
 * with 413, without reading it; a chunked body is counted as it streams.
 *
 * @param maxBytes Largest accepted body.
 * @returns The middleware.
 */
export function uploadLimit(maxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    const declared = c.req.raw.headers.get("content-length");
    if (declared !== null && Number(declared) > maxBytes) {
      c.req.raw.body?.cancel().catch(() => {});
      throw hubError(
        413,
        `Cannot accept the upload as its ${declared} bytes exceed the limit of ${maxBytes} bytes`,
      );
    }
    await next();
  };
}

/** Reads a body (already bounded by {@linkcode jsonLimit}) as text. */
async function readText(request: Request): Promise<string> {
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  // The time the body takes to arrive is the idle timeout's to bound.
  const resume = pauseDeadline(request);
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch {
        throw new BodyAbortedError(REQUEST_ABORTED);
      }
      const { done, value } = chunk;
      if (done) break;
      total += value.byteLength;
      if (total > MAX_JSON_BYTES) {
        throw hubError(
          413,
          `Cannot accept the request body as it exceeds ${MAX_JSON_BYTES} bytes`,
        );
      }
      chunks.push(value);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    resume();
  }
  return chunks.length === 1
    ? Buffer.from(chunks[0]!).toString("utf8")
    : Buffer.concat(chunks).toString("utf8");
}

/**
 * The deepest nesting of arrays and objects in a JSON text, counted without
 * parsing it (brackets inside strings do not count). Stops counting past
 * `limit`.
 *
 * @param text JSON text.
 * @param limit Depth at which to stop.
 * @returns The depth, or `limit + 1` when deeper than `limit`.
 */
export function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      if (code === 0x5c) i++; // backslash: skip the escaped character
      else if (code === 0x22) inString = false;
    } else if (code === 0x22) inString = true;
    else if (code === 0x5b || code === 0x7b) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > limit) return limit + 1;
      }
    } else if (code === 0x5d || code === 0x7d) depth--;
  }
  return deepest;
}

/**
 * Parses JSON text that nests at most {@linkcode MAX_JSON_DEPTH} levels.
 *
 * @param text JSON text.
 * @param what What the text is, for the message (e.g. `the request body`).
 * @returns The parsed value.
 * @throws {HTTPException} 400 when nested deeper.
 * @throws {SyntaxError} When the text is not JSON.
 */
export function parseBoundedJson(text: string, what: string): unknown {
  if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    throw hubError(
      400,
      `Cannot accept ${what} as it nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  return JSON.parse(text);
}

/**
 * Reads a JSON body.
 *
 * @param request The request.
 * @returns The parsed value.
 * @throws {HTTPException} 400 for an empty, malformed or too deeply nested
 *   body.
 */
export async function readJson(request: Request): Promise<unknown> {
  const text = await readText(request);
  if (text.trim() === "") {
    throw hubError(400, "Cannot parse the request body as it is empty");
  }
  try {
    return parseBoundedJson(text, "the request body");
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw hubError(
      400,
      `Cannot parse the request body as JSON: ${(error as Error).message}`,
    );
  }
}

/**
 * Reads a JSON body that must be an object.
 *
 * @param request The request.
 * @returns The object.
 * @throws {HTTPException} 400 for anything else.
 */
export async function readJsonObject(
  request: Request,
): Promise<Record<string, unknown>> {
  const body = await readJson(request);
  if (!isRecord(body)) {
    throw hubError(
      400,
      "Cannot accept the request body as it is not a JSON object",
    );
  }
  return body;
}

/**
 * A request's body as the server received it, for a route that streams it
 * itself (uploads): on Deno's `node:http` the Node stream of the request
 * (`@hono/node-server` passes it as `env.incoming`), else `request.body`.
 * The Node stream is read without the web stream the adapter would build
 * over it (and `request.body` is then not touched: that would start a second
 * reader of the same bytes).
 *
 * @param c The route's context.
 * @returns The body, or `null` when the request has none.
 */
export function streamedBody(
  c: { env: unknown; req: { raw: Request } },
): ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | null {
  const incoming =
    (c.env as { incoming?: AsyncIterable<Uint8Array> } | undefined)
      ?.incoming;
  return incoming ?? c.req.raw.body;
}
