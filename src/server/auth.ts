/**
 * API keys of the local HUB: which requests carry a configured key
 * (`x-api-key` or `authorization: Bearer`), compared in constant time, and
 * the middleware that refuses the others.
 *
 * @module
 */

import type { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { hubError } from "./errors.ts";

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** Message of every 401 of the JSON API; it never repeats the key. */
export const UNAUTHENTICATED =
  "Cannot authenticate the request: missing or invalid API key";

/** The keys a server accepts; none means every request is accepted. */
export class ApiKeys {
  #digests: Buffer[];

  /**
   * @param keys The accepted keys; empty for an open server.
   */
  constructor(keys: readonly string[]) {
    this.#digests = keys.map(digest);
  }

  /** Whether keys are configured (the server is not open). */
  get required(): boolean {
    return this.#digests.length > 0;
  }

  /**
   * Whether a request may use the API: the server is open, or the request
   * carries a configured key.
   *
   * @param request The request.
   * @returns `true` when authorized.
   */
  accepts(request: Request): boolean {
    if (this.#digests.length === 0) return true;
    const key = presentedKey(request);
    if (key === undefined) return false;
    const candidate = digest(key);
    let valid = false;
    for (const known of this.#digests) {
      // No short-circuit: every configured key is compared.
      valid = timingSafeEqual(candidate, known) || valid;
    }
    return valid;
  }

  /**
   * Compares a download token in constant time.
   *
   * @param token The token of the request's URL, if any.
   * @param expected The model's token.
   * @returns `true` when they match.
   */
  tokenMatches(token: string | null | undefined, expected: string): boolean {
    if (token === null || token === undefined) return false;
    return timingSafeEqual(digest(token), digest(expected));
  }
}

function presentedKey(request: Request): string | undefined {
  const key = request.headers.get("x-api-key");
  if (key !== null && key !== "") return key;
  const auth = request.headers.get("authorization");
  const match = auth === null ? null : /^Bearer\s+(\S+)\s*$/i.exec(auth);
  return match?.[1];
}

/**
 * Refuses a request without a configured key with a JSON 401.
 *
 * @param keys The server's keys.
 * @param readSession For read-only routes: also accepts a browser logged in
 * to the web app (its `SameSite=Strict` session cookie), so that the links
 * of a model page (its JSON document) open in the browser.
 * @returns The middleware.
 */
export function requireKey(
  keys: ApiKeys,
  readSession?: ((c: Context) => Promise<boolean>) | undefined,
): MiddlewareHandler {
  return async (c, next) => {
    if (
      !keys.accepts(c.req.raw) &&
      !(readSession !== undefined &&
        (c.req.method === "GET" || c.req.method === "HEAD") &&
        await readSession(c))
    ) {
      throw hubError(401, UNAUTHENTICATED);
    }
    await next();
  };
}
