/**
 * Where an API key may travel: over HTTPS, or over plain HTTP to a loopback
 * host only. Shared by the transport (which refuses to send it) and the
 * session's configuration (which refuses to resolve it).
 *
 * @module
 */

import { HUBConfigError } from "./errors.ts";

/**
 * Returns whether a URL's host is a loopback address (`localhost`,
 * `127.0.0.0/8`, `::1`).
 *
 * @param url The URL to check.
 * @returns `true` for loopback hosts.
 *
 * @example Check hosts
 * ```ts
 * import { isLoopback } from "./safe_transport.ts";
 *
 * console.assert(isLoopback(new URL("http://127.0.0.1:8080")));
 * console.assert(!isLoopback(new URL("http://example.com")));
 * ```
 */
export function isLoopback(url: URL): boolean {
  const host = url.hostname.toLowerCase();
  return host === "localhost" || host.endsWith(".localhost") ||
    /^127(\.\d{1,3}){3}$/.test(host) || host === "[::1]" || host === "::1";
}

/**
 * Throws unless the API key may be sent to `apiRoot`: a key only travels over
 * HTTPS, or over plain HTTP to a loopback host.
 *
 * @param apiRoot API root the key would be sent to.
 * @param apiKey The key, if any.
 * @throws {HUBConfigError} When the key would travel in clear text.
 *
 * @example Allow a local server
 * ```ts
 * import { assertSafeTransport } from "./safe_transport.ts";
 *
 * assertSafeTransport("http://127.0.0.1:8080", "k".repeat(42));
 * ```
 */
export function assertSafeTransport(
  apiRoot: string,
  apiKey: string | undefined,
): void {
  if (apiKey === undefined) return;
  const url = new URL(apiRoot);
  if (url.protocol === "https:") return;
  if (url.protocol === "http:" && isLoopback(url)) return;
  throw new HUBConfigError(
    `Cannot send the API key to ${url.origin} over plain ${
      url.protocol.replace(":", "").toUpperCase()
    }: use an https:// API root, or a loopback address for a local HUB`,
  );
}
