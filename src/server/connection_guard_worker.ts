/**
 * The connection guard's thread: runs {@linkcode guardConnections} in a
 * worker so that relaying the bytes (a copy of every byte through a second
 * loopback connection) does not share the thread that parses, hashes and
 * writes uploads. Started by {@linkcode guardConnectionsInWorker}; it speaks
 * {@linkcode GuardMessage} in and {@linkcode GuardReply} out.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import {
  type ConnectionGuard,
  guardConnections,
  type GuardMessage,
  type GuardReply,
} from "./connection_guard.ts";

interface WorkerScope {
  onmessage: ((event: MessageEvent<GuardMessage>) => void) | null;
  postMessage(message: GuardReply): void;
}

const scope = globalThis as unknown as WorkerScope;
let guard: ConnectionGuard | undefined;

scope.onmessage = (event) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      try {
        guard = guardConnections(message.innerPort, message.options);
        scope.postMessage({ type: "listening", port: guard.port });
      } catch (error) {
        scope.postMessage({
          type: "failed",
          name: (error as Error)?.name ?? "Error",
          message: (error as Error)?.message ?? String(error),
        });
      }
      break;
    case "stopAccepting":
      guard?.stopAccepting();
      break;
    case "closeAll":
      void (guard?.closeAll() ?? Promise.resolve()).then(() =>
        scope.postMessage({ type: "closed" })
      );
      break;
  }
};
