/**
 * Runs the local HUB app on Deno's `node:http` (through `@hono/node-server`)
 * or on `Bun.serve`, whichever the current runtime has.
 *
 * @module
 */

import { mkdir } from "node:fs/promises";
import { createHubAppOn, type HubHandlerOptions } from "./app.ts";
import { validateHubOptions } from "./app_options.ts";
import { createServer } from "node:http";
import { getRequestListener } from "@hono/node-server";
import { watchConnections } from "./connection_timeouts.ts";
import { openHubStorage } from "./storage/open.ts";

/** Options of {@linkcode serveHub}. */
export interface ServeHubOptions extends HubHandlerOptions {
  /**
   * Port to listen on; `0` picks a free one (see {@linkcode HubServer.port}).
   *
   * @default {0}
   */
  port?: number | undefined;
  /**
   * Interface to listen on. Only loopback is safe without `apiKeys`.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string | undefined;
  /**
   * Milliseconds a client may take to send a request's headers, however it
   * trickles them; then the connection is closed (slowloris). On Bun, its
   * own fixed limit of about 10 seconds applies instead.
   *
   * @default {10000}
   */
  headerTimeout?: number | undefined;
  /**
   * Milliseconds without a byte moving either way before a connection
   * serving a request (or kept alive after one) is closed. Bun counts it in
   * whole seconds, at most 255.
   *
   * @default {255000}
   */
  idleTimeout?: number | undefined;
  /**
   * Closes the server when aborted (see {@linkcode HubServer.close}).
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** A running local HUB. */
export interface HubServer extends AsyncDisposable {
  /** Base URL without trailing slash, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** The port actually listened on. */
  readonly port: number;
  /**
   * Stops accepting connections, lets requests in flight finish (uploads
   * still being received are cancelled and answered 503) and frees the port;
   * the process can exit afterwards. Calling it again is harmless.
   */
  close(): Promise<void>;
}

type FetchHandler = (request: Request, env?: unknown) => Promise<Response>;

interface BunServer {
  readonly port: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}

interface BunServeApi {
  serve(options: {
    port: number;
    hostname: string;
    fetch: FetchHandler;
    maxRequestBodySize: number;
    idleTimeout: number;
    development?: boolean;
  }): BunServer;
}

interface Listener {
  port: number;
  stop(): Promise<void>;
}

interface Timeouts {
  headerTimeout: number;
  idleTimeout: number;
}

async function listen(
  port: number,
  hostname: string,
  handler: FetchHandler,
  { headerTimeout, idleTimeout }: Timeouts,
): Promise<Listener> {
  if ("Deno" in globalThis) {
    // Deno.serve has no header or idle timeout and exposes no connection
    // to close; Deno's node:http exposes each connection's socket, which
    // connection_timeouts.ts watches.
    const server = createServer(
      { requestTimeout: 0 },
      getRequestListener(
        handler,
        // The process's own Request and Response stay the runtime's.
        { overrideGlobalObjects: false },
      ),
    );
    // Kept-alive connections are closed by the idle timeout, not Node's 5 s.
    server.keepAliveTimeout = idleTimeout;
    const connections = watchConnections(server, {
      headerTimeout,
      idleTimeout,
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, hostname, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((error) => {
      connections.stop();
      throw error;
    });
    const address = server.address();
    return {
      port: typeof address === "object" && address !== null
        ? address.port
        : port,
      stop: async () => {
        const closed = new Promise<void>((resolve) =>
          server.close(() => resolve())
        );
        await connections.drain();
        connections.stop();
        await closed;
      },
    };
  }
  const bun = (globalThis as { Bun?: Partial<BunServeApi> }).Bun;
  if (typeof bun?.serve === "function") {
    const server = bun.serve({
      port,
      hostname,
      fetch: handler,
      // No limit of Bun's own: its 413 has an empty body, while the app
      // answers every 413 with the JSON envelope (JSON bodies through
      // bodyLimit, uploads by Content-Length and by the multipart reader's
      // count), and a route that reads no body never buffers one.
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      // Seconds without traffic before a connection is closed (255 at most).
      idleTimeout: Math.min(255, Math.max(1, Math.ceil(idleTimeout / 1000))),
      development: false,
    });
    return {
      port: server.port,
      stop: async () => {
        await server.stop();
      },
    };
  }
  throw new Error(
    "Cannot start the HUB server as this runtime is neither Deno nor Bun",
  );
}

function urlHost(hostname: string): string {
  if (hostname === "0.0.0.0" || hostname === "::" || hostname === "") {
    return "127.0.0.1";
  }
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/**
 * Starts the local HUB on Deno (`node:http`) or Bun (`Bun.serve`).
 *
 * @param options Port, interface, data directory, keys and limits.
 * @returns The running server: its `url`, `port` and `close()`.
 *
 * @example Start a server on a free port and close it
 * ```ts
 * import { serveHub } from "./mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const server = await serveHub({ dataDir });
 * try {
 *   const response = await fetch(`${server.url}/v1/auth`, { method: "POST" });
 *   console.assert((await response.json()).success === true);
 * } finally {
 *   await server.close();
 *   await rm(dataDir, { recursive: true, force: true });
 * }
 * ```
 */
export async function serveHub(options: ServeHubOptions): Promise<HubServer> {
  const {
    port = 0,
    hostname = "127.0.0.1",
    headerTimeout = 10_000,
    idleTimeout = 255_000,
    signal,
    ...handlerOptions
  } = options ?? {};
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(
      `Cannot start the HUB server as port is not an integer from 0 to 65535: ${port}`,
    );
  }
  if (typeof hostname !== "string" || hostname === "") {
    throw new TypeError(
      "Cannot start the HUB server as hostname is not a non-empty string",
    );
  }
  for (
    const [name, value] of [
      ["headerTimeout", headerTimeout],
      ["idleTimeout", idleTimeout],
    ] as const
  ) {
    if (!Number.isFinite(value) || value <= 0) {
      throw new RangeError(
        `Cannot start the HUB server as ${name} is not a positive number of milliseconds: ${value}`,
      );
    }
  }
  // The app's own options are checked before a backend is opened, so that
  // a bad one leaves nothing open.
  validateHubOptions(handlerOptions, undefined);
  // Backends other than the embedded file store are opened now, so that a
  // wrong URL or credential stops the start instead of the first request.
  const { database, weights } = handlerOptions;
  const owned = database !== undefined || weights !== undefined
    ? await openHubStorage({
      dataDir: handlerOptions.dataDir,
      database,
      weights,
    })
    : undefined;
  // Cancels uploads still being received when the server closes.
  const closing = new AbortController();
  const lifecycle: { settled?: () => Promise<void> } = {};
  const app = createHubAppOn(
    {
      ...handlerOptions,
      // An open server answers the name it is bound to (see allowedHosts).
      allowedHosts: [...(handlerOptions.allowedHosts ?? []), hostname],
      signal: closing.signal,
    },
    owned,
    lifecycle,
  );
  const handler: FetchHandler = async (request, env) =>
    await app.fetch(request, env);
  const release = async (): Promise<void> => {
    // Collections of replaced weights started after the last replies end
    // before their storage closes.
    await lifecycle.settled?.();
    await owned?.models.close();
    await owned?.weights.close();
  };
  let listener: Listener;
  try {
    signal?.throwIfAborted();
    if (handlerOptions.dataDir !== undefined) {
      await mkdir(handlerOptions.dataDir, { recursive: true });
    }
    listener = await listen(port, hostname, handler, {
      headerTimeout,
      idleTimeout,
    });
  } catch (error) {
    await release();
    throw error;
  }
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      signal?.removeEventListener("abort", onAbort);
      const stopped = listener.stop();
      closing.abort();
      await stopped;
      await release();
    })();
    return closed;
  };
  const onAbort = (): void => {
    close().catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    url: `http://${urlHost(hostname)}:${listener.port}`,
    port: listener.port,
    close,
    [Symbol.asyncDispose]: close,
  };
}
