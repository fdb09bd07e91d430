/**
 * The `hub-session` command line: serve the local HUB, run the demo, deliver
 * a journal, upload final weights with a progress bar, print a model.
 *
 * Run it as `deno run -A src/cli/mod.ts <command>` or `bun src/cli/mod.ts <command>`;
 * `--help` after any command explains it. Exit codes: 0 success, 1 failure,
 * 2 wrong usage. Errors are one line, `error: <message>`, never a stack trace
 * and never an API key.
 *
 * @example Print the help from code
 * ```ts
 * import { main } from "./mod.ts";
 *
 * let out = "";
 * const code = await main(["--help"], { write: (line) => out += line + "\n" });
 * console.assert(code === 0 && out.includes("hub-session <command>"));
 * ```
 *
 * @module
 */

import { stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { HUBClient } from "../transport/client.ts";
import { readEnv, resolveConfig } from "../session/config.ts";
import { runDemo } from "../demo/run.ts";
import { HUBRequestError, HUBTimeoutError } from "../common/errors.ts";
import { isModelId } from "../session/identifier.ts";
import { defaultJournalRoot } from "../session/journal.ts";
import { createProgressBar, formatBytes } from "../session/progress.ts";
import { retry } from "../session/retry.ts";
import { serveHub } from "../server/mod.ts";
import { syncJournal } from "../session/sync.ts";
import type { Logger } from "../protocol/types.ts";
import { VERSION } from "../common/version.ts";

/**
 * Where {@linkcode main} writes and what it reads from its surroundings;
 * tests pass their own.
 *
 * @example Capture the output of a command
 * ```ts
 * import { main } from "./mod.ts";
 * import type { CliOptions } from "./mod.ts";
 *
 * const lines: string[] = [];
 * const options: CliOptions = { write: (l) => lines.push(l), writeError: (l) => lines.push(l) };
 * const code = await main(["model", "--help"], options);
 * console.assert(code === 0 && lines.length > 0);
 * ```
 */
export interface CliOptions {
  /**
   * Receives each line of standard output.
   *
   * @default {console.log}
   */
  write?: ((line: string) => void) | undefined;
  /**
   * Receives each line of standard error (errors, warnings).
   *
   * @default {console.error}
   */
  writeError?: ((line: string) => void) | undefined;
  /**
   * Reads an environment variable (`ULTRALYTICS_HUB_API`, `HUB_API_KEY`, ...).
   *
   * @default {the runtime's environment}
   */
  env?: ((name: string) => string | undefined) | undefined;
  /**
   * Stops a running command: `serve` closes the server and returns 0, the
   * others are aborted. Without it, `serve` stops on SIGINT or SIGTERM.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

const USAGE = `hub-session <command> [options]

Train against a HUB, or run one. Commands:
  serve                   run the local HUB server
  demo                    a real tiny training against the embedded local HUB
  sync                    deliver what offline or crashed sessions left in the journal
  upload MODEL_ID FILE    upload final weights with a progress bar
  model MODEL_ID          print a model's document as JSON

Options:
  -h, --help              show this help (or a command's: hub-session <command> --help)
  --version               print the version

Commands that talk to a HUB take --hub URL (default: $ULTRALYTICS_HUB_API,
else http://127.0.0.1:8080) and --key KEY (default: $HUB_API_KEY, else the
Ultralytics settings file). Exit codes: 0 ok, 1 failure, 2 wrong usage.`;

const HUB_OPTIONS =
  `  --hub URL               API root of the HUB (default: $ULTRALYTICS_HUB_API,
                          else http://127.0.0.1:8080)
  --key KEY               API key (default: $HUB_API_KEY, else the Ultralytics
                          settings file); never printed`;

const HELP: Record<string, string> = {
  serve: `hub-session serve [options]

Runs the local HUB server (HUB v1 wire protocol) until SIGINT or SIGTERM.

Options:
  --port N                port to listen on; 0 picks a free one (default: 8080)
  --hostname HOST         interface to listen on (default: 127.0.0.1)
  --data DIR              data directory (default: ./.hub-data)
  --api-key KEY           accept only this API key; repeat for more keys
                          (default: accept every request)
  -h, --help              show this help`,
  demo: `hub-session demo [options]

Starts the embedded local HUB on a free port (data under --dir), creates a
model, trains a small network in pure TypeScript, sends every epoch's metrics,
uploads checkpoints and the final weights, and prints a summary read back
from the HUB. Exits 1 unless every epoch is stored and the sha256 matches.

Options:
  --epochs N              epochs to train (default: 20)
  --dir DIR               data, journal and local weights (default: ./.hub-data)
  --hub URL               train against this HUB instead of the embedded one
  --key KEY               API key for --hub; never printed
  -h, --help              show this help`,
  sync: `hub-session sync [options]

Delivers what sessions left in the journal (offline work, or a trainer that
died before the server acknowledged everything): metrics, the last checkpoint
and the final weights. Running it again changes nothing.

Options:
${HUB_OPTIONS}
  --journal DIR           journal root (default: the OS cache directory's
                          hub-session/journal)
  --model ID              deliver only this model (default: every model of --hub)
  -h, --help              show this help`,
  upload: `hub-session upload MODEL_ID FILE [options]

Uploads FILE as the final weights (best.pt) of the model, with a progress bar
on a terminal, retrying network failures; prints the size and the sha256 the
HUB verified.

Options:
${HUB_OPTIONS}
  --map X                 final mAP, a number (default: 0)
  --epoch N               epoch of the weights (default: the model's last
                          stored epoch, else 0)
  -h, --help              show this help`,
  model: `hub-session model MODEL_ID [options]

Prints the model's document as JSON.

Options:
${HUB_OPTIONS}
  -h, --help              show this help`,
};

/** A wrong command line: exit code 2. */
class UsageError extends Error {
  override name = "UsageError";
}

interface Io {
  write: (line: string) => void;
  writeError: (line: string) => void;
  env: (name: string) => string | undefined;
  signal: AbortSignal | undefined;
}

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(
  command: string,
  args: string[],
  options: Record<
    string,
    { type: "string" | "boolean"; multiple?: boolean; short?: string }
  >,
): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: true,
    });
    return { values: values as Values, positionals };
  } catch (error) {
    throw new UsageError(
      `${
        (error as Error).message.split("\n")[0]!.split(". To specify")[0]
      } (see hub-session ${command} --help)`,
    );
  }
}

function text(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

function integer(
  values: Values,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const raw = text(values, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new UsageError(
      `--${name} must be an integer from ${min} to ${max}, got "${raw}"`,
    );
  }
  return value;
}

function positionals(
  command: string,
  given: string[],
  names: string[],
): string[] {
  if (given.length !== names.length) {
    throw new UsageError(
      `hub-session ${command} takes ${names.join(" ")}, got ${
        given.length === 0 ? "nothing" : `${given.length} argument(s)`
      } (see hub-session ${command} --help)`,
    );
  }
  return given;
}

function hubLogger(io: Io): Logger {
  return {
    info: (message) => io.write(`HUB: ${message}`),
    warn: (message) => io.writeError(`HUB: WARNING ${message}`),
    error: (message) => io.writeError(`HUB: ERROR ${message}`),
  };
}

async function connect(
  values: Values,
  io: Io,
): Promise<{ client: HUBClient; apiRoot: string; apiKey: string | undefined }> {
  const config = await resolveConfig({
    apiRoot: text(values, "hub") ?? io.env("ULTRALYTICS_HUB_API") ??
      "http://127.0.0.1:8080",
    apiKey: text(values, "key"),
    env: io.env,
  });
  const client = new HUBClient({
    apiRoot: config.apiRoot,
    apiKey: config.apiKey,
    logger: hubLogger(io),
    ...(io.signal === undefined ? {} : { signal: io.signal }),
  });
  return { client, apiRoot: config.apiRoot, apiKey: config.apiKey };
}

function checkModelId(id: string): void {
  if (!isModelId(id)) {
    throw new Error(
      `Cannot use model id "${id}" as it is not 20 letters and digits: copy the id from the model's URL`,
    );
  }
}

/** Calls `handler` once on SIGINT or SIGTERM; returns a remover. */
function onTermination(handler: () => void): () => void {
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

async function serve(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("serve", args, {
    port: { type: "string", short: "p" },
    hostname: { type: "string" },
    data: { type: "string" },
    "api-key": { type: "string", multiple: true },
  });
  if (values.help === true) return help("serve", io);
  positionals("serve", rest, []);
  const port = integer(values, "port", 0, 65_535) ?? 8080;
  const apiKeys = (values["api-key"] ?? []) as string[];
  if (apiKeys.some((key) => key.trim() === "")) {
    throw new UsageError("--api-key must not be empty");
  }
  const hostname = text(values, "hostname") ?? "127.0.0.1";
  const dataDir = resolve(text(values, "data") ?? ".hub-data");
  io.signal?.throwIfAborted();
  const server = await serveHub({
    port,
    hostname,
    dataDir,
    ...(apiKeys.length > 0 ? { apiKeys } : {}),
  });
  io.write(`HUB listening on ${server.url}`);
  io.write(`HUB data directory: ${dataDir}`);
  io.write(
    apiKeys.length > 0
      ? `HUB accepts ${apiKeys.length} API key${
        apiKeys.length === 1 ? "" : "s"
      }`
      : "HUB accepts every request (no --api-key given)",
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

async function demo(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("demo", args, {
    epochs: { type: "string" },
    dir: { type: "string" },
    hub: { type: "string" },
    key: { type: "string" },
  });
  if (values.help === true) return help("demo", io);
  positionals("demo", rest, []);
  const epochs = integer(values, "epochs", 1, 10_000);
  const hub = text(values, "hub");
  const key = text(values, "key");
  if (key !== undefined && hub === undefined) {
    throw new UsageError(
      "--key needs --hub: the embedded local HUB accepts every request",
    );
  }
  const summary = await runDemo({
    ...(epochs === undefined ? {} : { epochs }),
    ...(hub === undefined ? {} : { hub }),
    ...(key === undefined ? {} : { apiKey: key }),
    ...(text(values, "dir") === undefined ? {} : { dir: text(values, "dir") }),
    write: io.write,
    logger: hubLogger(io),
    ...(io.signal === undefined ? {} : { signal: io.signal }),
  });
  return summary.allEpochsStored && summary.final.match ? 0 : 1;
}

async function sync(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("sync", args, {
    hub: { type: "string" },
    key: { type: "string" },
    journal: { type: "string" },
    model: { type: "string" },
  });
  if (values.help === true) return help("sync", io);
  positionals("sync", rest, []);
  const modelId = text(values, "model");
  if (modelId !== undefined) checkModelId(modelId);
  const journal = resolve(text(values, "journal") ?? defaultJournalRoot());
  const apiRoot = text(values, "hub") ?? io.env("ULTRALYTICS_HUB_API") ??
    "http://127.0.0.1:8080";
  const key = text(values, "key");
  const reports = await syncJournal({
    apiRoot,
    ...(key === undefined ? {} : { apiKey: key }),
    env: io.env,
    journal,
    ...(modelId === undefined ? {} : { modelId }),
    logger: hubLogger(io),
    ...(io.signal === undefined ? {} : { signal: io.signal }),
  });
  if (reports.length === 0) {
    io.write(`Nothing to deliver to ${apiRoot} in ${journal}`);
    return 0;
  }
  let failed = false;
  for (const report of reports) {
    const parts = [
      `${report.epochs.length} epoch(s) delivered`,
      report.weights.length > 0
        ? `weights: ${report.weights.join(", ")}`
        : "no weights",
    ];
    if (report.pendingEpochs.length > 0) {
      parts.push(`still pending: ${report.pendingEpochs.join(", ")}`);
    }
    io.write(`model ${report.modelId}: ${parts.join("; ")}`);
    for (const error of report.errors) {
      io.writeError(`error: model ${report.modelId}: ${error.message}`);
    }
    if (report.errors.length > 0 || report.pendingEpochs.length > 0) {
      failed = true;
    }
  }
  return failed ? 1 : 0;
}

async function upload(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("upload", args, {
    hub: { type: "string" },
    key: { type: "string" },
    map: { type: "string" },
    epoch: { type: "string" },
  });
  if (values.help === true) return help("upload", io);
  const [modelId, fileArg] = positionals("upload", rest, [
    "MODEL_ID",
    "FILE",
  ]) as [string, string];
  const mapText = text(values, "map");
  const map = mapText === undefined ? 0 : Number(mapText);
  if (mapText !== undefined && (mapText.trim() === "" || !isFinite(map))) {
    throw new UsageError(`--map must be a number, got "${mapText}"`);
  }
  let epoch = integer(values, "epoch", 0, 1_000_000);
  checkModelId(modelId);
  const file = resolve(fileArg);
  let size: number;
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new Error("not a file");
    size = info.size;
  } catch {
    throw new Error(
      `Cannot upload ${file} as it does not exist or is not a file: pass the path of the weights`,
    );
  }
  const { client, apiRoot } = await connect(values, io);
  if (epoch === undefined) {
    const stored = await client.listMetrics(modelId);
    epoch = stored.at(-1)?.epoch ?? 0;
  }
  io.write(
    `Uploading ${file} (${
      formatBytes(size)
    }) as the final weights of model ${modelId} on ${apiRoot}, epoch ${epoch}`,
  );
  const bar = createProgressBar({ label: `Uploading ${basename(file)}` });
  let result;
  try {
    result = await retry(
      ({ signal }) =>
        client.uploadModel(modelId, {
          epoch,
          file,
          type: "final",
          map,
          signal,
          ...(bar === undefined ? {} : { onProgress: bar.onProgress }),
        }),
      {
        maxAttempts: 5,
        isRetriable: (error) =>
          (error instanceof HUBRequestError && error.retriable) ||
          error instanceof HUBTimeoutError,
        onRetry: ({ error, attempt, delay }) =>
          io.writeError(
            `HUB: WARNING attempt ${attempt} failed (${
              (error as Error).message
            }): retrying in ${(delay / 1000).toFixed(1)} s`,
          ),
        ...(io.signal === undefined ? {} : { signal: io.signal }),
      },
    );
  } finally {
    bar?.done();
  }
  io.write(
    `Uploaded ${
      formatBytes(result.size)
    }, sha256 ${result.sha256} (verified by the HUB)`,
  );
  io.write(`Model: ${apiRoot}/v1/models/${modelId}`);
  return 0;
}

async function model(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("model", args, {
    hub: { type: "string" },
    key: { type: "string" },
  });
  if (values.help === true) return help("model", io);
  const [modelId] = positionals("model", rest, ["MODEL_ID"]) as [string];
  checkModelId(modelId);
  const { client } = await connect(values, io);
  const doc = await client.getModel(modelId);
  io.write(JSON.stringify(doc, null, 2));
  return 0;
}

function help(command: string, io: Io): number {
  io.write(HELP[command] ?? USAGE);
  return 0;
}

const COMMANDS: Record<string, (args: string[], io: Io) => Promise<number>> = {
  serve,
  demo,
  sync,
  upload,
  model,
};

function oneLine(message: string, secrets: ReadonlyArray<string>): string {
  let line = message.replace(/\s*\n\s*/g, " ").trim();
  for (const secret of secrets) {
    if (secret.length >= 4) line = line.split(secret).join("***");
  }
  return line;
}

/**
 * Runs the command line: `args` are the arguments after the program name.
 * Never throws: failures are printed as one `error:` line.
 *
 * @param args Command and options, e.g. `["model", "<id>", "--hub", url]`.
 * @param options Output, environment and a stop signal (for tests).
 * @returns The exit code: 0 ok, 1 failure, 2 wrong usage.
 *
 * @example Show the help of a command
 * ```ts
 * import { main } from "./mod.ts";
 *
 * const lines: string[] = [];
 * const code = await main(["upload", "--help"], { write: (l) => lines.push(l) });
 * console.assert(code === 0 && lines[0]!.startsWith("hub-session upload"));
 * ```
 */
export async function main(
  args: string[],
  options: CliOptions = {},
): Promise<number> {
  const io: Io = {
    write: options.write ?? ((line) => console.log(line)),
    writeError: options.writeError ?? ((line) => console.error(line)),
    env: options.env ?? readEnv,
    signal: options.signal,
  };
  // Values that must never reach the output, whatever went wrong.
  const secrets: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const match = /^--(?:key|api-key)=(.*)$/.exec(arg);
    if (match !== null) secrets.push(match[1]!);
    else if (arg === "--key" || arg === "--api-key") {
      if (args[i + 1] !== undefined) secrets.push(args[i + 1]!);
    }
  }
  const envKey = io.env("HUB_API_KEY");
  if (envKey !== undefined) secrets.push(envKey);
  const [command, ...rest] = args;
  try {
    if (command === undefined) {
      io.writeError(USAGE);
      return 2;
    }
    if (command === "-h" || command === "--help" || command === "help") {
      io.write(
        rest[0] !== undefined && HELP[rest[0]] !== undefined
          ? HELP[rest[0]]!
          : USAGE,
      );
      return 0;
    }
    if (command === "--version" || command === "-v") {
      io.write(`hub-session ${VERSION}`);
      return 0;
    }
    const run = Object.hasOwn(COMMANDS, command)
      ? COMMANDS[command]
      : undefined;
    if (run === undefined) {
      throw new UsageError(
        `Unknown command "${command}": use serve, demo, sync, upload or model (see hub-session --help)`,
      );
    }
    return await run(rest, io);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.writeError(`error: ${oneLine(message, secrets)}`);
    return error instanceof UsageError ? 2 : 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Exit explicitly only on failure, so that a leaked handle would show up
  // as a process that does not end.
  if (code !== 0) process.exit(code);
}
