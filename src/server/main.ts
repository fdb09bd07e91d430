/**
 * Command line entry of the local HUB (`deno task hub`, or
 * `bun src/server/main.ts`).
 *
 * Prints `HUB listening on http://127.0.0.1:PORT` as the first line of
 * standard output, serves until SIGINT or SIGTERM, then closes and exits 0.
 *
 * @module
 */

import process from "node:process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { serveHub } from "./serve.ts";

const USAGE = `Usage: deno task hub [options]
       bun src/server/main.ts [options]

Runs a local HUB server (HUB v1 wire protocol) on 127.0.0.1.

Options:
  --port <n>       port to listen on; 0 picks a free one (default: 8080)
  --data <dir>     data directory (default: ./.hub-data)
  --api-key <key>  accept only this API key; repeat for more keys
                   (default: accept any request)
  -h, --help       show this help

Point a client at it with ULTRALYTICS_HUB_API=<printed URL>.`;

type SignalName = "SIGINT" | "SIGTERM";

interface DenoSignals {
  addSignalListener(signal: SignalName, handler: () => void): void;
  removeSignalListener(signal: SignalName, handler: () => void): void;
}

/** Calls `handler` once on SIGINT or SIGTERM; returns a remover. */
function onTermination(handler: () => void): () => void {
  const signals: SignalName[] = ["SIGINT", "SIGTERM"];
  const deno = (globalThis as { Deno?: Partial<DenoSignals> }).Deno;
  const added: SignalName[] = [];
  if (
    typeof deno?.addSignalListener === "function" &&
    typeof deno.removeSignalListener === "function"
  ) {
    const api = deno as DenoSignals;
    for (const signal of signals) {
      try {
        api.addSignalListener(signal, handler);
        added.push(signal);
      } catch {
        // SIGTERM is not supported on Windows.
      }
    }
    return () => {
      for (const signal of added) api.removeSignalListener(signal, handler);
    };
  }
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        port: { type: "string", short: "p" },
        data: { type: "string" },
        "api-key": { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    console.error(`HUB: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const portText = values.port ?? "8080";
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port > 65_535) {
    console.error(
      `HUB: Cannot start as --port is not a port number from 0 to 65535: ${portText}`,
    );
    return 2;
  }
  const apiKeys = values["api-key"] ?? [];
  if (apiKeys.some((key) => key === "")) {
    console.error("HUB: Cannot start as an --api-key is empty");
    return 2;
  }
  const dataDir = resolve(values.data ?? ".hub-data");

  // Listen for signals before announcing the URL, so that a SIGTERM sent
  // right after the first line is handled as a clean shutdown.
  const { promise: stopped, resolve: stop } = Promise.withResolvers<void>();
  const removeListeners = onTermination(() => stop());
  let server;
  try {
    server = await serveHub({
      port,
      dataDir,
      ...(apiKeys.length > 0 ? { apiKeys } : {}),
    });
  } catch (error) {
    removeListeners();
    console.error(`HUB: Cannot start the server: ${(error as Error).message}`);
    return 1;
  }
  console.log(`HUB listening on ${server.url}`);
  console.log(`HUB data directory: ${dataDir}`);
  console.log(
    apiKeys.length > 0
      ? `HUB accepts ${apiKeys.length} API key${
        apiKeys.length === 1 ? "" : "s"
      }`
      : "HUB accepts every request (no --api-key given)",
  );

  await stopped;
  removeListeners();
  console.log("HUB shutting down");
  await server.close();
  console.log("HUB stopped");
  return 0;
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Let pending output flush; exit explicitly only on failure, so that a
  // leaked handle would show up as a process that does not end.
  if (code !== 0) process.exit(code);
}
