/**
 * Header and idle timeouts for a `node:http` server, kept by watching each
 * connection's byte counters: Deno's `node:http` accepts
 * `headersTimeout`, `socket.setTimeout()` and a socket `data` listener but
 * acts on none of them (measured on Deno 2.9.6: a client trickling headers
 * stayed connected with all three set), while `socket.bytesRead`,
 * `socket.bytesWritten` and `socket.destroy()` work. Bun's server has its
 * own idle timeout and does not use this.
 *
 * A connection is in one of three phases, checked every 250 ms:
 *
 * - `headers`: a new connection, or a kept-alive one on which the first byte
 *   of the next request arrived. The request's headers must be complete (the
 *   server emitted `request`) within `headerTimeout`, however the bytes
 *   trickle in (slowloris).
 * - `busy`: a request is being served. No byte moving either way for
 *   `idleTimeout` closes the connection (a client that stopped sending its
 *   body or reading the reply).
 * - `idle`: kept alive after a reply, nothing received since. Closed after
 *   `idleTimeout` without a byte.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { unrefTimer } from "../common/timers.ts";

/** Timeouts of {@linkcode watchConnections}, in milliseconds. */
export interface ConnectionTimeouts {
  /** How long a request's headers may take to arrive. */
  headerTimeout: number;
  /** How long a connection may go without a byte moving either way. */
  idleTimeout: number;
}

/** The connections of a server, with their timeouts kept. */
export interface WatchedConnections {
  /**
   * Closes the connections that serve no request now and each other one
   * once its reply is finished; resolves when all are closed.
   */
  drain(): Promise<void>;
  /** Stops the checks (the connections stay as they are). */
  stop(): void;
}

/** How often the phases are checked. */
const SWEEP_MS = 250;

class Watched {
  phase: "headers" | "busy" | "idle" = "headers";
  /** Requests started and not finished (pipelined ones queue in order). */
  active = 0;
  /** When the `headers` phase must have ended. */
  deadline: number;
  /** Byte counters at the last check, and when they last moved. */
  read: number;
  written: number;
  movedAt: number;

  constructor(readonly socket: Socket, now: number, headerTimeout: number) {
    this.deadline = now + headerTimeout;
    this.read = socket.bytesRead;
    this.written = socket.bytesWritten;
    this.movedAt = now;
  }
}

/**
 * Keeps header and idle timeouts on every connection of `server`.
 *
 * @param server A `node:http` server, before it listens.
 * @param timeouts The header and idle timeouts.
 * @returns The watched connections: `drain()` for a graceful close.
 */
export function watchConnections(
  server: Server,
  timeouts: ConnectionTimeouts,
): WatchedConnections {
  const { headerTimeout, idleTimeout } = timeouts;
  const watched = new Map<Socket, Watched>();
  let draining = false;
  let drained: (() => void) | undefined;

  const forget = (socket: Socket): void => {
    watched.delete(socket);
    if (draining && watched.size === 0) drained?.();
  };

  server.on("connection", (socket: Socket) => {
    if (draining) {
      socket.destroy();
      return;
    }
    watched.set(socket, new Watched(socket, performance.now(), headerTimeout));
    socket.once("close", () => forget(socket));
  });

  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    const entry = watched.get(request.socket as Socket);
    if (entry === undefined) return;
    entry.active++;
    entry.phase = "busy";
    entry.movedAt = performance.now();
    let done = false;
    const finished = (): void => {
      if (done) return;
      done = true;
      entry.active--;
      if (entry.active > 0) return;
      if (draining) {
        entry.socket.destroy();
        return;
      }
      entry.phase = "idle";
      entry.read = entry.socket.bytesRead;
      entry.written = entry.socket.bytesWritten;
      entry.movedAt = performance.now();
    };
    response.once("finish", finished);
    response.once("close", finished);
  });

  const sweep = setInterval(() => {
    const now = performance.now();
    for (const entry of watched.values()) {
      const { socket } = entry;
      const read = socket.bytesRead;
      const written = socket.bytesWritten;
      const moved = read !== entry.read || written !== entry.written;
      if (entry.phase === "idle" && read !== entry.read) {
        // The first bytes of the next request.
        entry.phase = "headers";
        entry.deadline = now + headerTimeout;
      }
      if (moved) {
        entry.read = read;
        entry.written = written;
        entry.movedAt = now;
      }
      const late = entry.phase === "headers"
        ? now > entry.deadline
        : now - entry.movedAt > idleTimeout;
      if (late) socket.destroy();
    }
  }, SWEEP_MS);
  // The checks alone must not keep a process alive.
  unrefTimer(sweep);

  return {
    drain: () => {
      draining = true;
      const done = new Promise<void>((resolve) => {
        drained = resolve;
      });
      for (const entry of watched.values()) {
        if (entry.active === 0) entry.socket.destroy();
      }
      if (watched.size === 0) drained?.();
      return done;
    },
    stop: () => clearInterval(sweep),
  };
}
