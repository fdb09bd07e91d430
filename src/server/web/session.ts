/**
 * Browser sessions on a keyed HUB: the login page (a password field for the
 * API key), the signed session cookie it sets, and the key check shared with
 * the API.
 *
 * The cookie holds only an expiry time and a random session id, signed with
 * HMAC-SHA256 by Hono's signed-cookie helper under a secret the server draws
 * at start (so sessions end when the server restarts): never the key. It is
 * `HttpOnly`, `SameSite=Strict`, `Path=/`, expires after
 * {@linkcode SESSION_TTL_MS}, and is `Secure` when the page is served over
 * https. Logging out revokes the session id and clears the cookie.
 *
 * @module
 */

import type { Buffer } from "node:buffer";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Context } from "hono";
import { deleteCookie, getSignedCookie, setSignedCookie } from "hono/cookie";
import { type Html, markup } from "./html.ts";
import { renderDocument } from "./layout.ts";

/** Name of the session cookie. */
export const SESSION_COOKIE = "hub_session";
/** How long a browser session lasts: 12 hours. */
export const SESSION_TTL_MS: number = 12 * 60 * 60 * 1000;

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** Checks API keys and keeps browser sessions. */
export class SessionKeeper {
  #keys: Buffer[];
  #secret: ArrayBuffer;
  #revoked = new Map<string, number>();
  #now: () => number;

  /**
   * Creates a keeper for the given keys.
   *
   * @param apiKeys Accepted API keys; none means an open server.
   * @param now Clock in ms since the epoch.
   */
  constructor(apiKeys: readonly string[], now: () => number) {
    this.#keys = apiKeys.map(digest);
    this.#secret = new Uint8Array(randomBytes(32)).buffer;
    this.#now = now;
  }

  /** Whether the server needs a key at all. */
  get keyed(): boolean {
    return this.#keys.length > 0;
  }

  /**
   * Whether a key is one of the accepted keys (constant time per key).
   *
   * @param key The presented key.
   * @returns `true` when accepted.
   */
  checkKey(key: string | undefined | null): boolean {
    if (key === undefined || key === null || key === "") return false;
    const candidate = digest(key);
    let valid = false;
    for (const known of this.#keys) {
      valid = timingSafeEqual(candidate, known) || valid;
    }
    return valid;
  }

  /**
   * Whether a request carries an accepted key in `x-api-key` or
   * `authorization: Bearer`.
   *
   * @param request The request.
   * @returns `true` when it does.
   */
  checkHeaders(request: Request): boolean {
    const key = request.headers.get("x-api-key");
    if (key !== null && key !== "") return this.checkKey(key);
    const auth = request.headers.get("authorization");
    const match = auth === null ? null : /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return this.checkKey(match?.[1]);
  }

  /**
   * Whether the request has a valid, unexpired, unrevoked session cookie.
   *
   * @param c The request context.
   * @returns `true` when it does.
   */
  async hasSession(c: Context): Promise<boolean> {
    return (await this.#session(c)) !== undefined;
  }

  async #session(c: Context): Promise<string | undefined> {
    const value = await getSignedCookie(c, this.#secret, SESSION_COOKIE);
    if (typeof value !== "string") return undefined;
    const match = /^(\d{1,16})\.([0-9a-f]{32})$/.exec(value);
    if (match === null) return undefined;
    if (Number(match[1]) <= this.#now()) return undefined;
    if (this.#revoked.has(match[2]!)) return undefined;
    return match[2];
  }

  /**
   * Sets a new session cookie on the response.
   *
   * @param c The request context.
   */
  async startSession(c: Context): Promise<void> {
    const expires = this.#now() + SESSION_TTL_MS;
    const id = randomBytes(16).toString("hex");
    await setSignedCookie(c, SESSION_COOKIE, `${expires}.${id}`, this.#secret, {
      httpOnly: true,
      sameSite: "Strict",
      secure: isHttps(c),
      path: "/",
      maxAge: Math.floor(SESSION_TTL_MS / 1000),
    });
  }

  /**
   * Revokes the request's session and clears its cookie.
   *
   * @param c The request context.
   */
  async endSession(c: Context): Promise<void> {
    const id = await this.#session(c);
    const now = this.#now();
    for (const [old, until] of this.#revoked) {
      if (until <= now) this.#revoked.delete(old);
    }
    if (id !== undefined) this.#revoked.set(id, now + SESSION_TTL_MS);
    deleteCookie(c, SESSION_COOKIE, {
      path: "/",
      httpOnly: true,
      sameSite: "Strict",
      secure: isHttps(c),
    });
  }
}

/**
 * Whether the page is served over https (directly or, per
 * `x-forwarded-proto`, behind a proxy).
 *
 * @param c The request context.
 * @returns `true` for https.
 */
export function isHttps(c: Context): boolean {
  if (new URL(c.req.url).protocol === "https:") return true;
  return c.req.header("x-forwarded-proto")?.split(",")[0]?.trim() === "https";
}

/**
 * Keeps a post-login target on this server: a path starting with one `/`,
 * else `/`.
 *
 * @param next The requested target.
 * @returns A safe local path.
 *
 * @example Refuse another host
 * ```ts
 * import { safeNext } from "./session.ts";
 *
 * console.assert(safeNext("//evil.example/") === "/");
 * console.assert(safeNext("/models/abc") === "/models/abc");
 * ```
 */
export function safeNext(next: string | undefined | null): string {
  if (typeof next !== "string" || !/^\/(?![/\\])/.test(next)) return "/";
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\\]/.test(next)) return "/";
  return next;
}

/**
 * Renders the login page: one password field for the API key.
 *
 * @param next Where to go after logging in.
 * @param error Message to show, if the last attempt failed.
 * @returns The HTML document.
 *
 * @example Render the page
 * ```ts
 * import { renderLoginPage } from "./session.ts";
 *
 * console.assert(renderLoginPage("/").value.includes('type="password"'));
 * ```
 */
export function renderLoginPage(next: string, error?: string): Html {
  return renderDocument({
    title: "Log in · Local HUB",
    body: markup`<div class="login card"><h1>Log in</h1>
<p>This HUB is protected by an API key. Enter one of its keys to see its models; the browser keeps a session cookie, not the key.</p>
${error === undefined ? "" : markup`<p class="error" role="alert">${error}</p>`}
<form method="post" action="/login">
<input type="hidden" name="next" value="${safeNext(next)}">
<label for="key">API key</label>
<input type="password" id="key" name="key" autocomplete="current-password" required autofocus>
<p><button type="submit">Log in</button></p>
</form></div>`,
  });
}
