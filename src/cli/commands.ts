/**
 * The `hub-session` commands that talk to a HUB as a client: `demo`, `sync`,
 * `upload` and `model`.
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import { stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { HUBClient } from "../transport/client.ts";
import { resolveConfig } from "../session/config.ts";
import { runDemo } from "../demo/run.ts";
import { HUBModelError, HUBRequestError } from "../common/errors.ts";
import { isModelId } from "../session/identifier.ts";
import { defaultJournalRoot } from "../session/journal_paths.ts";
import { createProgressReporter } from "../session/progress.ts";
import { RequestRunner } from "../session/request_runner.ts";
import { listJournals, syncJournal } from "../session/sync.ts";
import { resolvePlatformConfig } from "../transport/platform/config.ts";
import type { Logger } from "../protocol/types.ts";
import {
  integer,
  type Io,
  parse,
  positionals,
  readKeys,
  text,
  UsageError,
  type Values,
} from "./args.ts";
import { HELP } from "./help.ts";

const CLIENT_FLAGS = ["hub", "key", "api-key-file"];

/**
 * The logger of the commands: `HUB: ` lines, warnings and errors on
 * standard error.
 *
 * @param io Where lines go.
 * @returns The logger.
 */
export function hubLogger(io: Io): Logger {
  return {
    info: (message) => io.write(`HUB: ${message}`),
    warn: (message) => io.writeError(`HUB: WARNING ${message}`),
    error: (message) => io.writeError(`HUB: ERROR ${message}`),
  };
}

function apiRootOf(values: Values, io: Io): string {
  return text(values, "hub") ?? io.env("ULTRALYTICS_HUB_API") ??
    "http://127.0.0.1:8080";
}

async function apiKeyOf(
  values: Values,
  io: Io,
): Promise<string | undefined> {
  return (await readKeys(values, "key", io))[0];
}

async function connect(
  values: Values,
  io: Io,
): Promise<{ client: HUBClient; apiRoot: string }> {
  const config = await resolveConfig({
    apiRoot: apiRootOf(values, io),
    apiKey: await apiKeyOf(values, io),
    env: io.env,
  });
  const client = new HUBClient({
    apiRoot: config.apiRoot,
    apiKey: config.apiKey,
    logger: hubLogger(io),
    signal: io.signal,
  });
  return { client, apiRoot: config.apiRoot };
}

function checkModelId(id: string): void {
  if (!isModelId(id)) {
    throw new HUBModelError(
      `Cannot use model id "${id}" as it is not 20 letters and digits: copy the id from the model's URL`,
    );
  }
}

/** Says what a refusal means for a command on one model. */
function explain(error: unknown, modelId: string, apiRoot: string): unknown {
  if (!(error instanceof HUBRequestError)) return error;
  if (error.status === 404) {
    return new HUBModelError(
      `Cannot find model ${modelId} on ${apiRoot}: check the id (hub-session model ${modelId} --hub ${apiRoot}) and the HUB address`,
      { cause: error },
    );
  }
  if (error.status === 401 || error.status === 403) {
    return new HUBRequestError(
      `Cannot use model ${modelId} on ${apiRoot} as the server refused the API key (${error.status}): set the right key in HUB_API_KEY or --api-key-file`,
      {
        method: error.method,
        path: error.path,
        status: error.status,
        serverMessage: error.serverMessage,
        retriable: false,
        cause: error,
      },
    );
  }
  return error;
}

/**
 * Runs `demo`.
 *
 * @param args The arguments after `demo`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function demo(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("demo", args, {
    string: ["epochs", "dir", ...CLIENT_FLAGS],
  });
  if (values.help === true) {
    io.write(HELP.demo!);
    return 0;
  }
  positionals("demo", rest, []);
  const epochs = integer(values, "epochs", 1, 10_000);
  const hub = text(values, "hub");
  if (
    hub === undefined &&
    (values.key !== undefined || values["api-key-file"] !== undefined)
  ) {
    throw new UsageError(
      "--key and --api-key-file need --hub: the embedded local HUB accepts every request",
    );
  }
  const apiKey = hub === undefined ? undefined : await apiKeyOf(values, io);
  const summary = await runDemo({
    epochs,
    hub,
    apiKey,
    dir: text(values, "dir"),
    write: io.write,
    logger: hubLogger(io),
    signal: io.signal,
  });
  return summary.allEpochsStored && summary.final.match ? 0 : 1;
}

/**
 * Where `sync` delivers Platform journals, if it does: `--platform-url`, else
 * (without `--hub`) `$ULTRALYTICS_PLATFORM_URL` or `$PLATFORM_API_URL`. The
 * key comes from `--key`/`--api-key-file`, else `$ULTRALYTICS_API_KEY`, and
 * is checked here so that a bad one stops the command before any request
 * (its message never shows the key).
 */
async function platformOf(
  values: Values,
  io: Io,
): Promise<{ platformUrl: string; apiKey: string } | undefined> {
  const flag = text(values, "platform-url");
  if (flag !== undefined && values.hub !== undefined) {
    throw new UsageError(
      "--hub and --platform-url name two different servers: pass one of them",
    );
  }
  const fromEnv = values.hub === undefined &&
    [io.env("ULTRALYTICS_PLATFORM_URL"), io.env("PLATFORM_API_URL")].some(
      (v) => v !== undefined && v.trim() !== "",
    );
  if (flag === undefined && !fromEnv) return undefined;
  // HUB_API_KEY is a HUB's key: a Platform key is only taken from the
  // flags or ULTRALYTICS_API_KEY.
  const given = values.key !== undefined || values["api-key-file"] !== undefined
    ? (await readKeys(values, "key", io))[0]
    : undefined;
  const config = resolvePlatformConfig({
    platformUrl: flag,
    apiKey: given,
    env: io.env,
  });
  return { platformUrl: config.platformUrl, apiKey: config.apiKey };
}

/**
 * Runs `sync`.
 *
 * @param args The arguments after `sync`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function sync(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("sync", args, {
    string: ["journal", "model", "platform-url", ...CLIENT_FLAGS],
  });
  if (values.help === true) {
    io.write(HELP.sync!);
    return 0;
  }
  positionals("sync", rest, []);
  const modelId = text(values, "model");
  if (modelId !== undefined) checkModelId(modelId);
  const journal = resolve(text(values, "journal") ?? defaultJournalRoot());
  const platform = await platformOf(values, io);
  const apiRoot = platform?.platformUrl ?? apiRootOf(values, io);
  const reports = await syncJournal({
    ...(platform === undefined
      ? { apiRoot, apiKey: await apiKeyOf(values, io) }
      : { platformUrl: platform.platformUrl, apiKey: platform.apiKey }),
    env: io.env,
    journal,
    modelId,
    logger: hubLogger(io),
    signal: io.signal,
  });
  if (reports.length === 0 && modelId !== undefined) {
    const known = listJournals(journal);
    throw new HUBModelError(
      `Cannot sync model ${modelId} as the journal ${journal} holds nothing for model ${modelId} on ${apiRoot}: ${
        known.length === 0
          ? "the journal is empty"
          : `journals exist for ${known.join(", ")}; pass the ${
            platform === undefined ? "--hub" : "--platform-url"
          } address the model was trained against`
      }`,
    );
  }
  if (reports.length === 0) {
    io.write(`Nothing to deliver to ${apiRoot} in ${journal}`);
    return 0;
  }
  let failed = false;
  for (const report of reports) {
    const parts = [
      `found ${report.found.epochs} epoch(s) and ${
        report.found.weights.join(" and ") || "no weights"
      }`,
      `delivered ${report.epochs.length} epoch(s)${
        report.weights.length > 0 ? ` and ${report.weights.join(" and ")}` : ""
      }`,
    ];
    if (report.pendingEpochs.length > 0) {
      parts.push(`still pending: ${report.pendingEpochs.join(", ")}`);
    }
    if (report.rejectedEpochs.length > 0) {
      parts.push(`refused by the server: ${report.rejectedEpochs.join(", ")}`);
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

/**
 * Runs `upload`.
 *
 * @param args The arguments after `upload`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function upload(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("upload", args, {
    string: ["map", "epoch", ...CLIENT_FLAGS],
  });
  if (values.help === true) {
    io.write(HELP.upload!);
    return 0;
  }
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
  const logger = hubLogger(io);
  try {
    // Ask for the model first: an unknown model or a wrong key says so.
    await client.getModel(modelId);
    if (epoch === undefined) {
      const stored = await client.listMetrics(modelId);
      epoch = stored.at(-1)?.epoch ?? 0;
    }
  } catch (error) {
    throw explain(error, modelId, apiRoot);
  }
  io.write(
    `Uploading ${file} (${
      formatBytes(size)
    }) as the final weights of model ${modelId} on ${apiRoot}, epoch ${epoch}`,
  );
  const progress = createProgressReporter({
    label: `Uploading ${basename(file)}`,
    logger,
  });
  const runner = new RequestRunner({ logger, signal: io.signal });
  let result;
  try {
    result = await runner.run(
      "final",
      `upload of ${basename(file)} to model ${modelId}`,
      ({ signal }) =>
        client.uploadModel(modelId, {
          epoch,
          file,
          type: "final",
          map,
          signal,
          onProgress: progress.onProgress,
        }),
      { budget: { maxAttempts: 5 }, logFailure: false },
    );
  } catch (error) {
    throw explain(error, modelId, apiRoot);
  } finally {
    progress.done();
  }
  io.write(
    `Uploaded ${
      formatBytes(result.size)
    }, sha256 ${result.sha256} (verified by the HUB)`,
  );
  io.write(`Model: ${apiRoot}/v1/models/${modelId}`);
  return 0;
}

/**
 * Runs `model`.
 *
 * @param args The arguments after `model`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function model(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("model", args, {
    string: CLIENT_FLAGS,
  });
  if (values.help === true) {
    io.write(HELP.model!);
    return 0;
  }
  const [modelId] = positionals("model", rest, ["MODEL_ID"]) as [string];
  checkModelId(modelId);
  const { client, apiRoot } = await connect(values, io);
  try {
    const doc = await client.getModel(modelId);
    io.write(JSON.stringify(doc, null, 2));
  } catch (error) {
    throw explain(error, modelId, apiRoot);
  }
  return 0;
}
