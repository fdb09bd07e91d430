/**
 * Reading a HUB reply safely: a size cap on the body, and a typed error for
 * a redirect (never followed, so the API key stays with its server).
 *
 * @module
 */

import { HUBRequestError } from "../common/errors.ts";

/** Largest reply body the client reads, in bytes (16 MiB). */
export const MAX_RESPONSE_BYTES: number = 16 * 1024 * 1024;

export { isRecord } from "../common/json.ts";

/**
 * The error for a redirect reply, naming where it pointed (without query).
 *
 * @param response The redirect reply.
 * @param method The request's method.
 * @param path The request's path.
 * @param action What the call does, for the message.
 * @param apiRoot The API root, to resolve a relative location.
 * @returns The error.
 */
export function redirectError(
  response: Response,
  method: string,
  path: string,
  action: string,
  apiRoot: string,
): HUBRequestError {
  let target = "another address";
  try {
    const location = response.headers.get("location");
    if (location !== null) {
      const url = new URL(location, apiRoot);
      target = `${url.origin}${url.pathname}`;
    }
  } catch {
    // an unparsable Location: say nothing about it
  }
  return new HUBRequestError(
    `Cannot ${action} as the server redirected ${method} ${path} to ${target}: ` +
      "set the API root to the server's final address (redirects are not followed, so the API key stays with the server it was meant for)",
    { method, path, status: response.status || undefined, retriable: false },
  );
}

/**
 * Reads a reply's body as text, refusing one larger than `limit` bytes
 * (declared or actual). Shared by the HUB client and the Platform client.
 *
 * @param response The reply.
 * @param tooLarge Throws the error for a body too large.
 * @param limit Largest body read, in bytes.
 * @returns The body text.
 */
export async function readCapped(
  response: Response,
  tooLarge: () => never,
  limit: number = MAX_RESPONSE_BYTES,
): Promise<string> {
  const declared = Number(response.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel().catch(() => {});
    tooLarge();
  }
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      tooLarge();
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
