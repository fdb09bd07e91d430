/**
 * `hub-session serve`: the local HUB until SIGINT or SIGTERM, its keys from
 * `HUB_API_KEY` or `--api-key-file` so that they never sit on a command line.
 *
 * @module
 */

import process from "node:process";
import { resolve } from "node:path";
import { serveHub } from "../server/mod.ts";
import {
  integer,
  type Io,
  parse,
  positionals,
  readKeys,
  text,
  UsageError,
} from "./args.ts";
import { HELP } from "./help.ts";
import { describeStorage, storageFlags } from "./storage_flags.ts";

/** Calls `handler` once on SIGINT or SIGTERM; returns a remover. */
export function onTermination(handler: () => void): () => void {
  type SignalName = "SIGINT" | "SIGTERM";
  const signals: SignalName[] = ["SIGINT", "SIGTERM"];
  const deno = (globalThis as {
    Deno?: {
      addSignalListener?(signal: SignalName, handler: () => void): void;
      removeSignalListener?(signal: SignalName, handler: () => void): void;
    };
  }).Deno;
  if (
    deno?.addSignalListener !== undefined &&
    deno.removeSignalListener !== undefined
  ) {
    const added: SignalName[] = [];
    for (const signal of signals) {
      try {
        deno.addSignalListener(signal, handler);
        added.push(signal);
      } catch {
        // SIGTERM is not supported on Windows.
      }
    }
    return () => {
      for (const signal of added) deno.removeSignalListener!(signal, handler);
    };
  }
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}

/**
 * Runs `serve`.
 *
 * @param args The arguments after `serve`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function serve(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("serve", args, {
    string: [
      "port",
      "hostname",
      "data",
      "api-key-file",
      "public-url",
      "database",
      "weights",
    ],
    collect: ["api-key", "allowed-host"],
    alias: { p: "port" },
  });
  if (values.help === true) {
    io.write(HELP.serve!);
    return 0;
  }
  positionals("serve", rest, []);
  const port = integer(values, "port", 0, 65_535) ?? 8080;
  const apiKeys = await readKeys(values, "api-key", io);
  const hostname = text(values, "hostname") ?? "127.0.0.1";
  const { database, weights } = storageFlags(values, io);
  const dataDir = database !== undefined && weights !== undefined &&
      text(values, "data") === undefined
    ? undefined
    : resolve(text(values, "data") ?? ".hub-data");
  const publicUrl = text(values, "public-url");
  const allowedHosts = (values["allowed-host"] ?? []) as string[];
  if (allowedHosts.some((host) => host.trim() === "")) {
    throw new UsageError("--allowed-host must not be empty");
  }
  io.signal?.throwIfAborted();
  const server = await serveHub({
    port,
    hostname,
    dataDir,
    publicUrl,
    allowedHosts,
    database,
    weights,
    ...(apiKeys.length > 0 ? { apiKeys } : {}),
  });
  io.write(`HUB listening on ${server.url}`);
  for (const line of describeStorage({ dataDir, database, weights }, io)) {
    io.write(line);
  }
  io.write(
    apiKeys.length > 0
      ? `HUB accepts ${apiKeys.length} API key${
        apiKeys.length === 1 ? "" : "s"
      }`
      : "HUB accepts every request (no key in HUB_API_KEY or --api-key-file)",
  );
  const { promise: stopped, resolve: stop } = Promise.withResolvers<void>();
  const remove = io.signal === undefined
    ? onTermination(() => stop())
    : (() => {
      const abort = (): void => stop();
      io.signal.addEventListener("abort", abort, { once: true });
      return () => io.signal?.removeEventListener("abort", abort);
    })();
  try {
    await stopped;
  } finally {
    remove();
    io.write("HUB shutting down");
    await server.close();
  }
  io.write("HUB stopped");
  return 0;
}
