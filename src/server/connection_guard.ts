/**
 * Header and idle timeouts for the HUB on Deno, which `Deno.serve` lacks:
 * without them a client that trickles its request headers (slowloris), or
 * opens connections and sends nothing, pins a connection for ever, where
 * `Bun.serve` closes it after about 10 seconds.
 *
 * `Deno.serve` exposes neither its connections nor a timeout, so the guard
 * sits in front of it: it accepts the TCP connections on the public address
 * and relays each one to a `Deno.serve` on a loopback port chosen by the
 * system, watching the bytes as they pass:
 *
 * - waiting for a request (a new connection, or the first byte of the next
 *   request on a kept-alive one), the request's headers must be complete
 *   (`\r\n\r\n`) within `headerTimeout`, however the bytes trickle in;
 * - once a request is under way, a connection on which no byte moves in
 *   either direction for `idleTimeout` (and that is not waiting to write) is
 *   closed, as Bun's `idleTimeout` does.
 *
 * The relay copies every byte once more: about 0.4 s of CPU per GiB
 * uploaded with `curl -F` (profiled: the relay's reads and writes). The
 * server runs it on a thread of its own ({@linkcode guardConnectionsInWorker})
 * so that those copies overlap the upload's parsing, hashing and writing on
 * the server's thread instead of adding to them: measured on a busy 2-core
 * machine, 1 GiB with `curl -F` to the file store, alternating, 7 runs,
 * median 1.90 s with the relay on the server's thread, 1.59 s in a worker.
 * A connection's read buffer starts at 16 KiB and grows to 1 MiB only while
 * bytes stream in bulk, so idle and slow connections stay small.
 *
 * @module
 */

/** Options of {@linkcode guardConnections}. */
export interface ConnectionGuardOptions {
  /** Public port (0: any). */
  port: number;
  /** Public interface. */
  hostname: string;
  /** Milliseconds a request's headers may take to arrive. */
  headerTimeout: number;
  /** Milliseconds without traffic before a busy connection is closed. */
  idleTimeout: number;
}

/** A running guard. */
export interface ConnectionGuard {
  /** The public port. */
  readonly port: number;
  /** Stops accepting connections; relayed ones go on. */
  stopAccepting(): void;
  /** Closes every relayed connection (and ends the guard's worker, if any). */
  closeAll(): Promise<void>;
}

interface DenoConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

interface DenoListener extends AsyncIterable<DenoConn> {
  readonly addr: { readonly port: number };
  close(): void;
}

interface DenoNet {
  listen(options: { port: number; hostname: string }): DenoListener;
  connect(options: { port: number; hostname: string }): Promise<DenoConn>;
}

/** Read size of a new connection, grown up to MAX_CHUNK_BYTES by bulk transfers. */
const FIRST_CHUNK_BYTES = 16 * 1024;
const MAX_CHUNK_BYTES = 1024 * 1024;
/** How often deadlines are checked. */
const SWEEP_MS = 250;

class Relay {
  /** Waiting for a request's headers (`wait`) or serving one (`busy`). */
  phase: "wait" | "busy" = "wait";
  /** When a `wait` phase must have ended. */
  deadline: number;
  /** Last byte moved either way. */
  lastActivity: number;
  /** The server answered since the current request's headers. */
  responded = false;
  /** A write to either side has not completed. */
  writing = 0;
  /** The last bytes of headers seen, across chunk boundaries. */
  tail = 0;
  closed = false;
  readonly client: DenoConn;
  inner: DenoConn | undefined;

  constructor(client: DenoConn, headerTimeout: number) {
    this.client = client;
    this.lastActivity = performance.now();
    this.deadline = this.lastActivity + headerTimeout;
  }

  /** Looks for the blank line that ends the headers. */
  scan(chunk: Uint8Array): boolean {
    // State: how many bytes of "\r\n\r\n" were matched so far.
    let matched = this.tail;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte === (matched % 2 === 0 ? 0x0d : 0x0a)) {
        matched++;
        if (matched === 4) {
          this.tail = 0;
          return true;
        }
      } else matched = byte === 0x0d ? 1 : 0;
    }
    this.tail = matched;
    return false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.client.close();
    } catch {
      // Already closed.
    }
    try {
      this.inner?.close();
    } catch {
      // Already closed.
    }
  }
}

/** Whether a chunk from the server starts an `HTTP/1.x 1xx` reply. */
function isInformational(chunk: Uint8Array): boolean {
  // "HTTP/1.1 1": H T T P / 1 . x space 1
  return chunk.length > 9 && chunk[0] === 0x48 && chunk[4] === 0x2f &&
    chunk[8] === 0x20 && chunk[9] === 0x31;
}

async function pump(
  relay: Relay,
  from: DenoConn,
  to: DenoConn,
  onChunk: (chunk: Uint8Array) => void,
): Promise<void> {
  let buffer = new Uint8Array(FIRST_CHUNK_BYTES);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      const chunk = buffer.subarray(0, n);
      onChunk(chunk);
      relay.writing++;
      try {
        let offset = 0;
        while (offset < n) offset += await to.write(chunk.subarray(offset));
      } finally {
        relay.writing--;
      }
      relay.lastActivity = performance.now();
      // A full read means a bulk transfer: read more per call (fewer
      // operations), while idle and slow connections keep a small buffer.
      if (n === buffer.length && buffer.length < MAX_CHUNK_BYTES) {
        buffer = new Uint8Array(buffer.length * 4);
      }
    }
    await to.closeWrite().catch(() => {});
  } catch {
    // A side went away: the other one is closed below.
    relay.close();
  }
}

/**
 * Listens on the public address and relays each connection to `innerPort`
 * on loopback, closing the ones that trickle headers or go idle.
 *
 * @param innerPort Loopback port of the `Deno.serve` to relay to.
 * @param options Address and timeouts.
 * @returns The running guard.
 */
export function guardConnections(
  innerPort: number,
  options: ConnectionGuardOptions,
): ConnectionGuard {
  const net = (globalThis as unknown as { Deno: DenoNet }).Deno;
  const { headerTimeout, idleTimeout } = options;
  const listener = net.listen({
    port: options.port,
    hostname: options.hostname,
  });
  const relays = new Set<Relay>();
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const relay of relays) {
      const late = relay.phase === "wait"
        ? now > relay.deadline
        : relay.writing === 0 && now - relay.lastActivity > idleTimeout;
      if (late) relay.close();
    }
  }, SWEEP_MS);
  (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno
    ?.unrefTimer?.(sweep as unknown as number);

  const serve = async (client: DenoConn): Promise<void> => {
    const relay = new Relay(client, headerTimeout);
    relays.add(relay);
    try {
      relay.inner = await net.connect({
        port: innerPort,
        hostname: "127.0.0.1",
      });
      if (relay.closed) return;
      await Promise.all([
        pump(relay, client, relay.inner, (chunk) => {
          relay.lastActivity = performance.now();
          if (relay.phase === "busy") {
            if (!relay.responded) return; // more of the request's body
            // The first byte of the next request on this connection.
            relay.phase = "wait";
            relay.responded = false;
            relay.tail = 0;
            relay.deadline = relay.lastActivity + headerTimeout;
          }
          if (relay.scan(chunk)) relay.phase = "busy";
        }),
        pump(relay, relay.inner, client, (chunk) => {
          relay.lastActivity = performance.now();
          // A "100 Continue" asks for the body: the request goes on.
          if (relay.phase === "busy" && !isInformational(chunk)) {
            relay.responded = true;
          }
        }),
      ]);
    } catch {
      // The inner server is gone (shutting down).
    } finally {
      relay.close();
      relays.delete(relay);
    }
  };

  (async () => {
    try {
      for await (const client of listener) void serve(client);
    } catch {
      // The listener was closed.
    }
  })();

  return {
    port: listener.addr.port,
    stopAccepting: () => {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    },
    closeAll: () => {
      clearInterval(sweep);
      for (const relay of relays) relay.close();
      return Promise.resolve();
    },
  };
}

/** A message to the guard's worker. */
export type GuardMessage =
  | { type: "start"; innerPort: number; options: ConnectionGuardOptions }
  | { type: "stopAccepting" }
  | { type: "closeAll" };

/** A message from the guard's worker. */
export type GuardReply =
  | { type: "listening"; port: number }
  | { type: "failed"; name: string; message: string }
  | { type: "closed" };

/**
 * {@linkcode guardConnections} on a thread of its own (a worker), so that
 * the relay's copies run beside the server's thread instead of on it.
 *
 * @param innerPort Loopback port of the `Deno.serve` to relay to.
 * @param options Address and timeouts.
 * @returns The running guard, once it listens; `closeAll` also ends the
 * worker.
 */
export async function guardConnectionsInWorker(
  innerPort: number,
  options: ConnectionGuardOptions,
): Promise<ConnectionGuard> {
  const worker = new Worker(
    new URL("./connection_guard_worker.ts", import.meta.url).href,
    { type: "module" },
  );
  const replies: ((reply: GuardReply) => void)[] = [];
  worker.onmessage = (event: MessageEvent<GuardReply>) => {
    replies.shift()?.(event.data);
  };
  const next = (): Promise<GuardReply> =>
    new Promise((resolve) => replies.push(resolve));
  const send = (message: GuardMessage): void => worker.postMessage(message);
  const started = next();
  send({ type: "start", innerPort, options });
  const reply = await started;
  if (reply.type !== "listening") {
    worker.terminate();
    const error = new Error(
      reply.type === "failed" ? reply.message : "The guard did not start",
    );
    if (reply.type === "failed") error.name = reply.name;
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    port: reply.port,
    stopAccepting: () => send({ type: "stopAccepting" }),
    closeAll: () =>
      closing ??= (async () => {
        const closed = next();
        send({ type: "closeAll" });
        await closed;
        worker.terminate();
      })(),
  };
}
