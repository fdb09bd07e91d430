/**
 * A TCP forwarder that a test can shut and reopen on the same port: shut, it
 * resets every open connection and refuses new ones (the upstream looks
 * unreachable); open, it forwards to the upstream again. Used to make a real
 * S3 server unreachable for a while without stopping it.
 *
 * @module
 */

import net from "node:net";
import type { AddressInfo, Socket } from "node:net";

/** A forwarder in front of one upstream port. */
export interface TcpGate {
  /** The port to connect to instead of the upstream's. */
  port: number;
  /** Resets open connections and stops listening. */
  shut(): Promise<void>;
  /** Listens again on the same port. */
  open(): Promise<void>;
  /** Shuts for good. */
  close(): Promise<void>;
}

/**
 * Starts a forwarder on a free loopback port.
 *
 * @param upstreamHost Upstream host.
 * @param upstreamPort Upstream port.
 * @returns The gate, open.
 */
export async function startTcpGate(
  upstreamHost: string,
  upstreamPort: number,
): Promise<TcpGate> {
  const sockets = new Set<Socket>();
  let server: net.Server | undefined;
  let port = 0;
  const listen = async (): Promise<void> => {
    const next = net.createServer((client) => {
      const upstream = net.connect(upstreamPort, upstreamHost);
      sockets.add(client);
      sockets.add(upstream);
      const drop = (): void => {
        client.destroy();
        upstream.destroy();
        sockets.delete(client);
        sockets.delete(upstream);
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      next.once("error", reject);
      next.listen(port, "127.0.0.1", () => resolve());
    });
    port = (next.address() as AddressInfo).port;
    server = next;
  };
  const shut = async (): Promise<void> => {
    const current = server;
    server = undefined;
    for (const socket of sockets) socket.resetAndDestroy();
    sockets.clear();
    if (current !== undefined) {
      await new Promise<void>((resolve) => current.close(() => resolve()));
    }
  };
  await listen();
  return {
    get port() {
      return port;
    },
    shut,
    open: listen,
    close: shut,
  };
}
