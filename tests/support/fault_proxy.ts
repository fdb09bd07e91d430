/**
 * A fault-injecting reverse HTTP/1.1 proxy for tests: it sits in front of an
 * upstream base URL (usually the local HUB server) and, per request, either
 * passes the request through or injects a fault: 502/503/504, 429 with or
 * without rate-limit headers, a connection reset before the response or in
 * the middle of the upload, a stall (accept, never answer), added latency,
 * and outage windows.
 *
 * Faults are chosen by a seeded PRNG (mulberry32) as a pure function of the
 * seed and the request number, so a failing run replays: the n-th request
 * gets the same fault for the same seed. An explicit `schedule` overrides the
 * random choice for deterministic tests.
 *
 * ## Why a raw `node:net` proxy
 *
 * `Deno.serve` and `Bun.serve` hand over a parsed `Request` and only let us
 * answer with a `Response`: neither can cut a connection after half of an
 * upload has been forwarded, nor send a TCP reset. `node:http` can destroy
 * sockets, but it parses and buffers on its own terms and differs between the
 * two runtimes' compatibility layers. A `node:net` server is the smallest
 * primitive that behaves the same on Deno 2.9 and Bun 1.4 (measured): we read
 * the request head ourselves, decide the fault, then either answer, pipe raw
 * bytes to an upstream `node:net` socket (backpressure through `pipe()`, so
 * uploads of any size stream without being buffered), or end the connection
 * with `socket.resetAndDestroy()` (a real RST; both runtimes have it, and
 * `fetch` rejects with a `TypeError` on both). Measured: a 768 MiB upload
 * streams through at ~200 MB/s with a flat ~150 MiB RSS on Deno (client,
 * proxy and upstream in one process), ~85 MiB on Bun.
 *
 * Every proxied exchange is one request per connection: the proxy rewrites
 * `Connection: close` into the request it forwards and into the response it
 * returns, so it never has to find response boundaries on a kept-alive
 * connection. It only has to find the end of a request body, which it does
 * for `Content-Length` and `chunked` bodies (no body otherwise), so that a
 * status fault is answered after the upload was read, as a real gateway does.
 *
 * Limitations: the upstream must be plain `http:`; HTTP/1.1 only (no
 * upgrades, no HTTP/2); request heads are limited to 64 KiB.
 *
 * Length (~1,000 lines): the proxy parses request heads and bodies itself
 * (the reason above), and each fault is a few lines of that same connection
 * state; splitting them would pass the socket pair and the parser between
 * files.
 *
 * @module
 */

import net from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { Buffer } from "node:buffer";

/**
 * What the proxy does with one request.
 *
 * - `pass`: forward to upstream and stream the answer back.
 * - `status502` / `status504`: answer 502 / 504 with an HTML body (like a
 *   gateway), without contacting upstream.
 * - `status503`: answer 503 with a JSON envelope `{success:false,message}`.
 * - `rateLimited`: answer 429 with `Retry-After`, `X-RateLimit-Limit`,
 *   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds).
 * - `rateLimitedBare`: answer 429 with no rate-limit headers at all.
 * - `resetBeforeResponse`: forward the whole request to upstream (so the
 *   server may have acted on it), wait for its answer, then reset the client
 *   connection instead of returning it.
 * - `resetMidUpload`: forward the head and part of the body (half of a
 *   `Content-Length` body; up to 64 KiB of a chunked body and never its end),
 *   then reset the client connection and close the upstream one (so the
 *   server reads the partial body, then a premature end of stream). A
 *   request without a body is reset before it reaches upstream.
 * - `stall`: accept and read the request, never answer, until the client
 *   goes away or the proxy is closed.
 * - `latency`: wait `latencyMs`, then `pass`.
 */
export type Fault =
  | "pass"
  | "status502"
  | "status503"
  | "status504"
  | "rateLimited"
  | "rateLimitedBare"
  | "resetBeforeResponse"
  | "resetMidUpload"
  | "stall"
  | "latency";

/** Every {@linkcode Fault}, in a fixed order. */
export const FAULTS: readonly Fault[] = Object.freeze([
  "pass",
  "status502",
  "status503",
  "status504",
  "rateLimited",
  "rateLimitedBare",
  "resetBeforeResponse",
  "resetMidUpload",
  "stall",
  "latency",
]);

/** A window of time, in ms since the proxy started, in which it is "down". */
export interface OutageWindow {
  /** Start of the window, in ms since the proxy started (inclusive). */
  start: number;
  /** End of the window, in ms since the proxy started (exclusive). */
  end: number;
}

/** Options for {@linkcode startFaultProxy}. */
export interface FaultProxyOptions {
  /**
   * Base URL of the upstream server (`http:` only). A path in it is
   * prefixed to every forwarded request's path.
   */
  upstream: string;
  /**
   * Seed of the PRNG that picks faults; the same seed gives the n-th request
   * the same fault.
   *
   * @default {1}
   */
  seed?: number;
  /**
   * Probability (0..1) that a matching request, past the `schedule`, gets a
   * fault picked by `faults` weights instead of `pass`.
   *
   * @default {0}
   */
  faultRate?: number;
  /**
   * Relative weights of the faults picked at `faultRate`. Faults not listed
   * have weight 0.
   *
   * @default {every fault except "pass" with weight 1}
   */
  faults?: Partial<Record<Fault, number>>;
  /**
   * Delay added by the `latency` fault, in ms.
   *
   * @default {1000}
   */
  latencyMs?: number;
  /**
   * Seconds sent in `Retry-After` (and used for `X-RateLimit-Reset`) by the
   * `rateLimited` fault.
   *
   * @default {1}
   */
  retryAfterSeconds?: number;
  /**
   * Outage windows: every matching request that arrives inside one is
   * answered 503 (even request numbers) or reset at once (odd ones), and
   * nothing reaches upstream. Logged as `status503` / `resetBeforeResponse`.
   *
   * @default {[]}
   */
  outages?: OutageWindow[];
  /**
   * Which requests may be faulted (`path` without the query string).
   * Requests that do not match always `pass` and do not consume `schedule`.
   *
   * @default {() => true}
   */
  match?: (method: string, path: string) => boolean;
  /**
   * Explicit faults for the first matching requests, in order; overrides the
   * random choice. Matching requests past its end are faulted at random
   * (`pass` when `faultRate` is 0).
   *
   * @default {[]}
   */
  schedule?: Fault[];
}

/** One entry of {@linkcode FaultProxy.log}. */
export interface FaultLogEntry {
  /** Request number, starting at 1, in order of arrival of request heads. */
  n: number;
  /** HTTP method of the request. */
  method: string;
  /** Path of the request, without the query string. */
  path: string;
  /** What the proxy did with it. */
  fault: Fault;
}

/** Counters of a {@linkcode FaultProxy}. */
export interface FaultProxyStats {
  /** Number of requests seen (heads parsed). */
  requests: number;
  /** Number of requests per fault, `pass` included. */
  byFault: Record<Fault, number>;
}

/** A running proxy returned by {@linkcode startFaultProxy}. */
export interface FaultProxy {
  /** Base URL of the proxy, e.g. `http://127.0.0.1:43121` (no trailing slash). */
  url: string;
  /** Live counters. */
  stats: FaultProxyStats;
  /** Every request seen and the fault it got, in order. */
  log: FaultLogEntry[];
  /** Starts (`true`) or ends (`false`) a manual outage, on top of `outages`. */
  setOutage(on: boolean): void;
  /** Stops listening, ends every open connection (stalled ones too) and resolves when done. */
  close(): Promise<void>;
}

const MAX_HEAD = 64 * 1024;
const CHUNKED_CUT = 64 * 1024;
const HEAD_END = Buffer.from("\r\n\r\n");
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "upgrade",
]);

/** mulberry32: a tiny 32-bit PRNG with good enough statistics for tests. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Parsed request head. */
interface RequestHead {
  method: string;
  target: string;
  path: string;
  headers: Array<[string, string]>;
  body: BodyFraming;
}

type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" };

/** Finds where a request body ends, for `Content-Length` and `chunked` bodies. */
class BodyTracker {
  #framing: BodyFraming;
  #remaining: number;
  #state: "size" | "data" | "dataEnd" | "trailer" | "done";
  #line = "";
  #lineLength = 0;
  /** Body bytes seen so far. */
  seen = 0;

  constructor(framing: BodyFraming) {
    this.#framing = framing;
    this.#remaining = framing.kind === "length" ? framing.length : 0;
    this.#state = framing.kind === "chunked"
      ? "size"
      : this.#remaining > 0
      ? "data"
      : "done";
  }

  get done(): boolean {
    return this.#state === "done";
  }

  /**
   * Consumes `chunk`; returns how many of its bytes belong to the body (the
   * rest follows the body). Throws a `SyntaxError` on a malformed chunk size.
   */
  push(chunk: Uint8Array): number {
    let i = 0;
    while (i < chunk.length && this.#state !== "done") {
      if (this.#state === "data") {
        const take = Math.min(this.#remaining, chunk.length - i);
        i += take;
        this.#remaining -= take;
        if (this.#remaining === 0) {
          this.#state = this.#framing.kind === "chunked" ? "dataEnd" : "done";
        }
        continue;
      }
      const byte = chunk[i++]!;
      if (this.#state === "dataEnd") {
        if (byte === 0x0a) this.#state = "size";
      } else if (this.#state === "size") {
        if (byte === 0x0a) {
          const size = this.#line.split(";")[0]!.trim();
          if (!/^[0-9a-fA-F]{1,15}$/.test(size)) {
            throw new SyntaxError(
              "Cannot read the chunked body: bad chunk size",
            );
          }
          this.#remaining = parseInt(size, 16);
          this.#line = "";
          this.#lineLength = 0;
          this.#state = this.#remaining === 0 ? "trailer" : "data";
        } else {
          if (this.#line.length > 1024) {
            throw new SyntaxError(
              "Cannot read the chunked body: chunk size line too long",
            );
          }
          this.#line += String.fromCharCode(byte);
        }
      } else if (this.#state === "trailer") {
        if (byte === 0x0a) {
          if (this.#lineLength === 0) this.#state = "done";
          this.#lineLength = 0;
        } else if (byte !== 0x0d) {
          this.#lineLength++;
        }
      }
    }
    this.seen += i;
    return i;
  }
}

function parseRequestHead(head: string): RequestHead {
  const lines = head.split("\r\n");
  const [method, target, version] = (lines[0] ?? "").split(" ");
  if (!method || !target || !version?.startsWith("HTTP/1.")) {
    throw new SyntaxError("Cannot parse the request line");
  }
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new SyntaxError("Cannot parse a request header");
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  const get = (name: string): string | undefined =>
    headers.find(([k]) => k.toLowerCase() === name)?.[1];
  let body: BodyFraming = { kind: "none" };
  const te = get("transfer-encoding");
  const cl = get("content-length");
  if (te !== undefined && te.toLowerCase().includes("chunked")) {
    body = { kind: "chunked" };
  } else if (cl !== undefined) {
    const length = Number(cl);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new SyntaxError("Cannot parse the content length");
    }
    body = { kind: "length", length };
  }
  let path = target;
  if (/^https?:\/\//i.test(target)) {
    const url = new URL(target);
    path = url.pathname + url.search;
  }
  return {
    method,
    target: path,
    path: path.split("?")[0]!,
    headers,
    body,
  };
}

/** Removes hop-by-hop headers (and those named by `Connection`). */
function endToEnd(headers: Array<[string, string]>): Array<[string, string]> {
  const named = new Set<string>(HOP_BY_HOP);
  for (const [k, v] of headers) {
    if (k.toLowerCase() === "connection") {
      for (const token of v.split(",")) named.add(token.trim().toLowerCase());
    }
  }
  named.delete("transfer-encoding");
  named.delete("content-length");
  return headers.filter(([k]) => !named.has(k.toLowerCase()));
}

/** Rewrites a response head so the client closes after it. */
function rewriteResponseHead(head: string): string {
  const lines = head.split("\r\n").filter((l) => l !== "");
  const status = lines[0] ?? "";
  const headers: Array<[string, string]> = lines.slice(1).map((l) => {
    const colon = l.indexOf(":");
    return [l.slice(0, colon), l.slice(colon + 1).trim()];
  });
  const kept = endToEnd(headers);
  return [status, ...kept.map(([k, v]) => `${k}: ${v}`), "Connection: close"]
    .join("\r\n") + "\r\n\r\n";
}

function statusReply(
  status: number,
  reason: string,
  headers: Array<[string, string]>,
  contentType: string,
  body: string,
): Buffer {
  const bytes = Buffer.from(body, "utf8");
  const lines = [
    `HTTP/1.1 ${status} ${reason}`,
    `Content-Type: ${contentType}`,
    `Content-Length: ${bytes.length}`,
    "Connection: close",
    ...headers.map(([k, v]) => `${k}: ${v}`),
  ];
  return Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n"), bytes]);
}

function gatewayHtml(status: number, reason: string): string {
  return `<html>\r\n<head><title>${status} ${reason}</title></head>\r\n` +
    `<body>\r\n<center><h1>${status} ${reason}</h1></center>\r\n` +
    `<hr><center>fault-proxy</center>\r\n</body>\r\n</html>\r\n`;
}

function reset(socket: Socket): void {
  const s = socket as Socket & { resetAndDestroy?: () => Socket };
  if (s.destroyed) return;
  try {
    if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
    else s.destroy();
  } catch {
    s.destroy();
  }
}

function validate(options: FaultProxyOptions): URL {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      "Cannot start the fault proxy: options must be an object",
    );
  }
  let upstream: URL;
  try {
    upstream = new URL(options.upstream);
  } catch {
    throw new TypeError(
      "Cannot start the fault proxy: upstream is not a valid URL",
    );
  }
  if (upstream.protocol !== "http:") {
    throw new TypeError(
      `Cannot start the fault proxy: upstream protocol must be http: (got ${upstream.protocol})`,
    );
  }
  const { faultRate, latencyMs, retryAfterSeconds, seed } = options;
  if (faultRate !== undefined && !(faultRate >= 0 && faultRate <= 1)) {
    throw new RangeError(
      `Cannot start the fault proxy: faultRate must be in 0..1 (got ${faultRate})`,
    );
  }
  if (seed !== undefined && !Number.isFinite(seed)) {
    throw new RangeError("Cannot start the fault proxy: seed must be finite");
  }
  if (latencyMs !== undefined && !(latencyMs >= 0 && latencyMs < 2 ** 31)) {
    throw new RangeError(
      `Cannot start the fault proxy: latencyMs must be a non-negative number (got ${latencyMs})`,
    );
  }
  if (
    retryAfterSeconds !== undefined &&
    !(Number.isInteger(retryAfterSeconds) && retryAfterSeconds >= 0)
  ) {
    throw new RangeError(
      `Cannot start the fault proxy: retryAfterSeconds must be a non-negative integer (got ${retryAfterSeconds})`,
    );
  }
  for (const [fault, weight] of Object.entries(options.faults ?? {})) {
    if (!FAULTS.includes(fault as Fault)) {
      throw new TypeError(
        `Cannot start the fault proxy: unknown fault "${fault}"`,
      );
    }
    if (
      !(typeof weight === "number" && weight >= 0 && Number.isFinite(weight))
    ) {
      throw new RangeError(
        `Cannot start the fault proxy: weight of "${fault}" must be a non-negative number`,
      );
    }
  }
  for (const fault of options.schedule ?? []) {
    if (!FAULTS.includes(fault)) {
      throw new TypeError(
        `Cannot start the fault proxy: unknown fault "${fault}" in schedule`,
      );
    }
  }
  for (const w of options.outages ?? []) {
    if (!(w.start >= 0 && w.end >= w.start)) {
      throw new RangeError(
        "Cannot start the fault proxy: an outage window needs 0 <= start <= end",
      );
    }
  }
  if (options.match !== undefined && typeof options.match !== "function") {
    throw new TypeError(
      "Cannot start the fault proxy: match must be a function",
    );
  }
  return upstream;
}

/**
 * Starts a fault-injecting reverse proxy on `127.0.0.1` (random port) in
 * front of `options.upstream`.
 *
 * @param options Upstream, seed, fault rate and weights, schedule, outages.
 * @returns The running proxy; call `close()` when done.
 *
 * @example Answer the first request with 503, pass the rest
 * ```ts
 * import { startFaultProxy } from "./fault_proxy.ts";
 *
 * const proxy = await startFaultProxy({
 *   upstream: "http://127.0.0.1:9", // never contacted by this example
 *   schedule: ["status503"],
 * });
 * try {
 *   const res = await fetch(`${proxy.url}/v1/models/abc`);
 *   await res.body?.cancel();
 *   console.assert(res.status === 503);
 *   console.assert(proxy.log[0]?.fault === "status503");
 * } finally {
 *   await proxy.close();
 * }
 * ```
 */
export async function startFaultProxy(
  options: FaultProxyOptions,
): Promise<FaultProxy> {
  const upstream = validate(options);
  const {
    seed = 1,
    faultRate = 0,
    latencyMs = 1000,
    retryAfterSeconds = 1,
    outages = [],
    match = () => true,
    schedule = [],
  } = options;
  const weights: Array<[Fault, number]> = options.faults === undefined
    ? FAULTS.filter((f) => f !== "pass").map((f) => [f, 1])
    : (Object.entries(options.faults) as Array<[Fault, number]>).filter((
      [, w],
    ) => w > 0);
  const totalWeight = weights.reduce((sum, [, w]) => sum + w, 0);
  if (faultRate > 0 && totalWeight === 0) {
    throw new RangeError(
      "Cannot start the fault proxy: faultRate > 0 needs at least one fault with a positive weight",
    );
  }
  const upstreamHost = upstream.hostname.replace(/^\[|\]$/g, "");
  const upstreamPort = Number(upstream.port || 80);
  const basePath = upstream.pathname.replace(/\/+$/, "");

  const byFault = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<
    Fault,
    number
  >;
  const stats: FaultProxyStats = { requests: 0, byFault };
  const log: FaultLogEntry[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let manualOutage = false;
  let matched = 0;
  let closed = false;
  const startedAt = performance.now();

  function track(socket: Socket): void {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  }

  /** The random fault of request `n`: a pure function of (seed, n). */
  function randomFault(n: number): Fault {
    if (faultRate === 0) return "pass";
    const rng = mulberry32((seed ^ Math.imul(n, 0x9e3779b9)) >>> 0);
    rng(); // decorrelate neighbouring seeds
    if (rng() >= faultRate) return "pass";
    let pick = rng() * totalWeight;
    for (const [fault, weight] of weights) {
      if (pick < weight) return fault;
      pick -= weight;
    }
    return weights[weights.length - 1]![0];
  }

  function inOutage(): boolean {
    if (manualOutage) return true;
    const t = performance.now() - startedAt;
    return outages.some((w) => t >= w.start && t < w.end);
  }

  function decide(
    n: number,
    head: RequestHead,
  ): { fault: Fault; outage: boolean } {
    if (!match(head.method, head.path)) return { fault: "pass", outage: false };
    if (inOutage()) {
      return {
        fault: n % 2 === 0 ? "status503" : "resetBeforeResponse",
        outage: true,
      };
    }
    const scripted = schedule[matched++];
    return { fault: scripted ?? randomFault(n), outage: false };
  }

  function later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  }

  /** Reads (and drops) the rest of the request body, then calls `done`. */
  function drainBody(
    client: Socket,
    tracker: BodyTracker,
    rest: Buffer,
    done: () => void,
  ): void {
    let finished = false;
    const feed = (chunk: Uint8Array): void => {
      if (finished) return;
      try {
        tracker.push(chunk);
      } catch {
        finished = true;
        client.off("data", feed);
        client.end(
          statusReply(400, "Bad Request", [], "text/plain", "Bad chunked body"),
        );
        return;
      }
      if (tracker.done) {
        finished = true;
        client.off("data", feed);
        done();
      }
    };
    if (tracker.done) {
      finished = true;
      done();
      return;
    }
    if (rest.length > 0) feed(rest);
    if (!finished) {
      client.on("data", feed);
      client.resume();
    }
  }

  function answer(client: Socket, fault: Fault): void {
    let reply: Buffer;
    switch (fault) {
      case "status502":
        reply = statusReply(
          502,
          "Bad Gateway",
          [],
          "text/html",
          gatewayHtml(502, "Bad Gateway"),
        );
        break;
      case "status504":
        reply = statusReply(
          504,
          "Gateway Timeout",
          [],
          "text/html",
          gatewayHtml(504, "Gateway Timeout"),
        );
        break;
      case "status503":
        reply = statusReply(
          503,
          "Service Unavailable",
          [],
          "application/json",
          JSON.stringify({
            success: false,
            message: "Service unavailable (injected fault)",
          }),
        );
        break;
      case "rateLimited": {
        const reset = Math.ceil(Date.now() / 1000) + retryAfterSeconds;
        reply = statusReply(
          429,
          "Too Many Requests",
          [
            ["Retry-After", String(retryAfterSeconds)],
            ["X-RateLimit-Limit", "60"],
            ["X-RateLimit-Remaining", "0"],
            ["X-RateLimit-Reset", String(reset)],
          ],
          "application/json",
          JSON.stringify({
            success: false,
            message: "Too many requests (injected fault)",
          }),
        );
        break;
      }
      default:
        reply = statusReply(
          429,
          "Too Many Requests",
          [],
          "application/json",
          JSON.stringify({
            success: false,
            message: "Too many requests (injected fault)",
          }),
        );
    }
    client.end(reply);
  }

  /** Forwards the request to upstream; the fault is `pass`, `resetBeforeResponse` or `resetMidUpload`. */
  function forward(
    client: Socket,
    head: RequestHead,
    rest: Buffer,
    fault: "pass" | "resetBeforeResponse" | "resetMidUpload",
  ): void {
    if (closed || client.destroyed) return;
    if (
      fault === "resetMidUpload" &&
      (head.body.kind === "none" ||
        (head.body.kind === "length" && head.body.length === 0))
    ) {
      // Nothing to cut: a bodiless request is reset before it reaches upstream.
      reset(client);
      return;
    }
    const up = net.connect({ host: upstreamHost, port: upstreamPort });
    track(up);
    let responded = false; // a byte of a response has gone to the client
    const headers = endToEnd(head.headers).filter(([k]) =>
      k.toLowerCase() !== "host"
    );
    const requestHead = [
      `${head.method} ${basePath}${head.target} HTTP/1.1`,
      `Host: ${upstream.host}`,
      ...headers.map(([k, v]) => `${k}: ${v}`),
      "Connection: close",
    ].join("\r\n") + "\r\n\r\n";

    client.on("close", () => {
      if (!up.destroyed) up.destroy();
    });
    let upstreamFailed = false;
    up.on("error", () => {
      upstreamFailed = true;
    });
    up.on("close", () => {
      if (client.destroyed) return;
      if (!responded && fault === "pass") {
        // Upstream unreachable or gone before answering: what a gateway says.
        client.end(
          statusReply(
            502,
            "Bad Gateway",
            [],
            "text/html",
            gatewayHtml(502, "Bad Gateway"),
          ),
        );
      } else if (!responded || upstreamFailed) {
        reset(client);
      }
    });

    up.on("connect", () => {
      up.write(requestHead);
      if (fault === "resetMidUpload") {
        cutUpload(client, up, head, rest);
        return;
      }
      if (rest.length > 0) up.write(rest);
      client.pipe(up, { end: false });
      client.resume();
    });

    if (fault === "resetMidUpload") return;

    // Response: rewrite the head(s) so the client closes after it, then pipe.
    let pending: Buffer = Buffer.alloc(0);
    const onHead = (chunk: Buffer): void => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        const end = pending.indexOf(HEAD_END);
        if (end === -1) {
          if (pending.length > MAX_HEAD) {
            reset(client);
            up.destroy();
          }
          return;
        }
        const rawHead = pending.subarray(0, end + 4).toString("latin1");
        const after = pending.subarray(end + 4);
        const informational = /^HTTP\/1\.\d 1\d\d/.test(rawHead);
        if (fault === "resetBeforeResponse" && !informational) {
          up.off("data", onHead);
          reset(client);
          up.destroy();
          return;
        }
        responded = true;
        if (informational) {
          client.write(rawHead);
          pending = after;
          continue;
        }
        up.off("data", onHead);
        client.write(rewriteResponseHead(rawHead));
        if (after.length > 0) client.write(after);
        up.pipe(client);
        return;
      }
    };
    up.on("data", onHead);
  }

  /**
   * Forwards the head and part of the body, then resets the client and
   * closes the upstream connection. Upstream gets a FIN, not a RST: a RST
   * lets the kernel drop bytes the server has not read yet (measured with
   * Bun's server, which then never saw the request at all), whereas a FIN
   * delivers the partial body followed by a premature end of stream, which
   * is what a server sees when a client dies mid-upload.
   */
  function cutUpload(
    client: Socket,
    up: Socket,
    head: RequestHead,
    rest: Buffer,
  ): void {
    const cutBoth = (): void => {
      up.destroy();
      reset(client);
    };
    const tracker = new BodyTracker(head.body);
    const limit = head.body.kind === "length"
      ? Math.floor(head.body.length / 2)
      : CHUNKED_CUT;
    let sent = 0;
    let done = false;
    const feed = (chunk: Buffer): void => {
      if (done) return;
      let allowed = Math.min(chunk.length, limit - sent);
      if (head.body.kind === "chunked") {
        const before = tracker.seen;
        try {
          tracker.push(chunk);
        } catch {
          // malformed: cut here
        }
        if (tracker.done) {
          // never forward the terminating chunk
          allowed = Math.min(allowed, Math.floor((tracker.seen - before) / 2));
          allowed = Math.max(0, allowed);
          done = true;
        }
      }
      const part = chunk.subarray(0, Math.max(0, allowed));
      sent += part.length;
      if (sent >= limit) done = true;
      if (done) {
        client.off("data", feed);
        client.pause();
        if (part.length > 0) up.write(part, cutBoth);
        else cutBoth();
        return;
      }
      if (part.length > 0 && !up.write(part)) {
        client.pause();
        up.once("drain", () => client.resume());
      }
    };
    client.on("data", feed);
    if (rest.length > 0) feed(rest);
    if (!done) client.resume();
  }

  function stall(client: Socket): void {
    client.on("data", () => {});
    client.resume();
  }

  function onConnection(client: Socket): void {
    track(client);
    if (closed) {
      client.destroy();
      return;
    }
    let buffered: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0
        ? chunk
        : Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf(HEAD_END);
      if (end === -1) {
        if (buffered.length > MAX_HEAD) {
          client.off("data", onData);
          client.end(
            statusReply(
              431,
              "Request Header Fields Too Large",
              [],
              "text/plain",
              "Head too large",
            ),
          );
        }
        return;
      }
      client.off("data", onData);
      client.pause();
      const rest = buffered.subarray(end + 4);
      let head: RequestHead;
      try {
        head = parseRequestHead(buffered.subarray(0, end).toString("latin1"));
      } catch {
        client.end(
          statusReply(400, "Bad Request", [], "text/plain", "Bad request"),
        );
        return;
      }
      const n = ++stats.requests;
      const { fault, outage } = decide(n, head);
      byFault[fault]++;
      log.push({ n, method: head.method, path: head.path, fault });
      if (outage) {
        if (fault === "status503") {
          drainBody(
            client,
            new BodyTracker(head.body),
            rest,
            () => answer(client, fault),
          );
        } else {
          reset(client);
        }
        return;
      }
      switch (fault) {
        case "pass":
        case "resetBeforeResponse":
        case "resetMidUpload":
          forward(client, head, rest, fault);
          break;
        case "latency":
          later(latencyMs, () => forward(client, head, rest, "pass"));
          break;
        case "stall":
          stall(client);
          break;
        default:
          drainBody(
            client,
            new BodyTracker(head.body),
            rest,
            () => answer(client, fault),
          );
      }
    };
    client.on("data", onData);
  }

  const server: Server = net.createServer(onConnection);
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    log,
    setOutage(on: boolean): void {
      manualOutage = on;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const stopped = new Promise<void>((resolve) =>
        server.close(() => resolve())
      );
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      await stopped;
    },
  };
}
