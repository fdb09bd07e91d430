/**
 * Guards of an open HUB (no API keys): a web page the user happens to visit
 * must not be able to drive it.
 *
 * - Host: only names the server is known by (loopback names, `*.localhost`,
 *   IP addresses, the name it is bound to, the public URL's host and any
 *   configured `allowedHosts`) are served; any other `Host` gets 421. This
 *   stops DNS rebinding, where an attacker's name is made to resolve to the
 *   HUB so that the attacker's page counts as same-origin.
 * - Origin: a state-changing request (any method but GET, HEAD, OPTIONS)
 *   whose `Origin` is not the server's own (or the public URL's), or whose
 *   `Sec-Fetch-Site` is `cross-site`/`same-site`, gets 403. Clients that are
 *   not browsers send neither header and pass.
 * - Content type: where the protocol sends JSON, the body must be declared
 *   `application/json` (415 otherwise), since a page can send `text/plain`
 *   or a form across origins without asking, but not JSON.
 *
 * A server with keys needs none of this: a page cannot attach the key.
 *
 * @module
 */

import { isIP } from "node:net";
import type { MiddlewareHandler } from "hono";
import { hubError } from "./errors.ts";

/** Where a request's host is checked against. */
export interface KnownHosts {
  /** Lowercase host names (no port) the server answers besides loopback. */
  names: ReadonlySet<string>;
  /** Origin of the configured public URL, if any. */
  publicOrigin: string | undefined;
}

/**
 * Collects the names an open server answers to.
 *
 * @param allowedHosts Configured host names (a port is ignored).
 * @param publicUrl The configured public URL, if any.
 * @returns The known hosts.
 */
export function knownHosts(
  allowedHosts: readonly string[],
  publicUrl: string | undefined,
): KnownHosts {
  const names = new Set<string>();
  for (const host of allowedHosts) names.add(hostnameOf(host));
  let publicOrigin: string | undefined;
  if (publicUrl !== undefined) {
    const url = new URL(publicUrl);
    names.add(url.hostname.toLowerCase());
    publicOrigin = url.origin;
  }
  return { names, publicOrigin };
}

/** The host name of `host[:port]` or `[v6]:port`, lowercase, no brackets. */
function hostnameOf(host: string): string {
  const lower = host.trim().toLowerCase();
  if (lower.startsWith("[")) {
    const end = lower.indexOf("]");
    return end === -1 ? lower : lower.slice(1, end);
  }
  const colon = lower.indexOf(":");
  // A bare IPv6 address has more than one colon and no port.
  if (colon !== -1 && lower.indexOf(":", colon + 1) === -1) {
    return lower.slice(0, colon);
  }
  return lower;
}

/**
 * Whether an open server answers a host name: IP addresses (a page cannot
 * rebind those), `localhost` and `*.localhost` (browsers resolve them to
 * loopback themselves), and the configured names.
 *
 * @param hostname Host name without port or brackets, lowercase.
 * @param known The configured names.
 * @returns `true` when the name is known.
 */
export function isKnownHost(hostname: string, known: KnownHosts): boolean {
  const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  return isIP(name) !== 0 || name === "localhost" ||
    name.endsWith(".localhost") || known.names.has(name);
}

/** The `host[:port]` part of an absolute URL string, without parsing it. */
function hostOfUrl(url: string): string {
  const start = url.indexOf("//") + 2;
  const end = url.indexOf("/", start);
  return url.slice(start, end === -1 ? url.length : end);
}

/**
 * Answers 421 to a request whose `Host` the open server is not known by.
 *
 * @param known The configured names.
 * @returns The middleware.
 */
export function hostGuard(known: KnownHosts): MiddlewareHandler {
  return async (c, next) => {
    const host = hostOfUrl(c.req.url);
    const hostname = hostnameOf(host);
    if (!isKnownHost(hostname, known)) {
      throw hubError(
        421,
        `Cannot serve the host ${
          JSON.stringify(hostname)
        } as this HUB has no API keys and answers only loopback names, IP addresses and its configured names: add the name with --allowed-host or --public-url, or configure API keys`,
      );
    }
    await next();
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Answers 403 to a state-changing request sent by a page of another origin.
 *
 * @param known The configured names (for the public URL's origin).
 * @returns The middleware.
 */
export function originGuard(known: KnownHosts): MiddlewareHandler {
  return async (c, next) => {
    if (!SAFE_METHODS.has(c.req.method)) {
      const headers = c.req.raw.headers;
      const origin = headers.get("origin");
      const site = headers.get("sec-fetch-site");
      let foreign: string | undefined;
      if (origin !== null) {
        const own = origin !== "null" &&
          (origin === known.publicOrigin ||
            origin.toLowerCase() ===
              `${new URL(c.req.url).protocol}//${hostOfUrl(c.req.url)}`
                .toLowerCase());
        if (!own) foreign = `its Origin is ${JSON.stringify(origin)}`;
      } else if (site !== null && site !== "same-origin" && site !== "none") {
        foreign = `its Sec-Fetch-Site is ${JSON.stringify(site)}`;
      }
      if (foreign !== undefined) {
        c.req.raw.body?.cancel().catch(() => {});
        throw hubError(
          403,
          `Cannot accept a ${c.req.method} from a page of another site as ${foreign}: this HUB has no API keys, so only its own pages and clients that are not browsers may change it`,
        );
      }
    }
    await next();
  };
}

/**
 * Whether a `Content-Type` declares JSON (`application/json` or a
 * `+json` type, any parameters).
 *
 * @param contentType The header's value.
 * @returns `true` for JSON.
 */
export function isJsonContentType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  return type === "application/json" ||
    (type.startsWith("application/") && type.endsWith("+json"));
}

/**
 * Answers 415 to a JSON route's request whose body is not declared JSON.
 *
 * @returns The middleware.
 */
export function requireJsonType(): MiddlewareHandler {
  return async (c, next) => {
    const type = c.req.raw.headers.get("content-type");
    if (!isJsonContentType(type)) {
      c.req.raw.body?.cancel().catch(() => {});
      throw hubError(
        415,
        `Cannot accept the request body as its Content-Type is ${
          JSON.stringify(type ?? "missing")
        }, not application/json: send the header Content-Type: application/json (curl: --json)`,
      );
    }
    await next();
  };
}
