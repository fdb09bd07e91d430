/**
 * Deliver what sessions left in the journal (offline work, or a trainer that
 * died before the server acknowledged everything): metrics, the last
 * checkpoint and the final weights. Running it again changes nothing.
 *
 * @module
 */

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { HUBClient } from "../transport/client.ts";
import { resolvePlatformConfig } from "../transport/platform/config.ts";
import { PlatformTransport } from "../transport/platform/transport.ts";
import { readEnv } from "./config.ts";
import type { SessionTransport } from "./options.ts";
import { resolveConfig } from "./config.ts";
import type { ConfigOptions } from "./config.ts";
import { type HUBError, toHUBError } from "../common/errors.ts";
import { isModelId } from "./identifier.ts";
import {
  deferredWeightsIn,
  dropDeferredWeights,
  MetricsJournal,
} from "./journal.ts";
import {
  defaultJournalRoot,
  serverDirsOfInstance,
  serverJournalDir,
} from "./journal_paths.ts";
import { consoleLogger, redactingLogger } from "../common/logger.ts";
import { MetricsQueue } from "./metrics_queue.ts";
import { MetricsPump } from "./metrics_pump.ts";
import { type BackoffOptions, RequestRunner } from "./request_runner.ts";
import type { Logger } from "../protocol/types.ts";

/** Options for {@linkcode syncJournal}. */
export interface SyncJournalOptions extends ConfigOptions {
  /**
   * Deliver the journals of Ultralytics Platform runs (`ul://` sessions) to
   * this Platform URL instead of a HUB's; the key comes from `apiKey`, else
   * `ULTRALYTICS_API_KEY`. `true` takes `ULTRALYTICS_PLATFORM_URL`, else the
   * hosted Platform.
   *
   * @default {undefined}
   */
  platformUrl?: string | true | undefined;
  /** Journal root. @default {defaultJournalRoot()} */
  journal?: string | undefined;
  /** Deliver only this model's journal. @default {every model of the server} */
  modelId?: string | undefined;
  /** `fetch` to use. @default {globalThis.fetch} */
  fetch?: typeof fetch | undefined;
  /** Aborts the delivery. @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Where messages go; `"quiet"` drops them. @default {console} */
  logger?: Logger | "quiet" | undefined;
  /** Backoff between attempts. @default {@std/async's defaults} */
  backoff?: BackoffOptions | undefined;
}

/** What {@linkcode syncJournal} delivered for one model. */
export interface SyncModelReport {
  /** Id of the model. */
  modelId: string;
  /** Epochs the server acknowledged in this run. */
  epochs: number[];
  /** What the journal held for this model when the run started. */
  found: { epochs: number; weights: Array<"checkpoint" | "final"> };
  /** Epochs still waiting (the server could not be reached). */
  pendingEpochs: number[];
  /** Epochs the server refused for good (a 400 about that epoch), set aside. */
  rejectedEpochs: number[];
  /** Weights delivered in this run. */
  weights: Array<"checkpoint" | "final">;
  /** What failed, if anything; the journal keeps it for the next run. */
  errors: HUBError[];
}

/**
 * Delivers the journal of one model, or of every model of the API root.
 *
 * @param options Server, credentials, journal root and model.
 * @returns One report per model found in the journal.
 *
 * @example Deliver everything left for a local HUB
 * ```ts
 * import { syncJournal } from "./sync.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const journal = await mkdtemp(join(tmpdir(), "journal-"));
 * const reports = await syncJournal({
 *   apiRoot: "http://127.0.0.1:9",
 *   journal,
 *   settingsFile: false,
 *   logger: "quiet",
 * });
 * console.assert(reports.length === 0);
 * await rm(journal, { recursive: true });
 * ```
 */
export async function syncJournal(
  options: SyncJournalOptions = {},
): Promise<SyncModelReport[]> {
  const platform = options.platformUrl === undefined
    ? undefined
    : resolvePlatformConfig({
      platformUrl: options.platformUrl === true
        ? undefined
        : options.platformUrl,
      apiKey: options.apiKey,
      env: options.env ?? readEnv,
    });
  const config = platform === undefined
    ? await resolveConfig(options)
    : { apiRoot: platform.webhooksUrl, apiKey: platform.apiKey };
  const root = options.journal ?? defaultJournalRoot();
  const logger = redactingLogger(
    options.logger === "quiet"
      ? consoleLogger(true)
      : options.logger ?? consoleLogger(),
    [config.apiKey],
  );
  if (options.modelId !== undefined && !isModelId(options.modelId)) {
    throw new TypeError(
      `Cannot sync model "${options.modelId}" as it is not a 20-character model id`,
    );
  }
  const client = platform === undefined
    ? new HUBClient({
      apiRoot: config.apiRoot,
      apiKey: config.apiKey,
      logger,
      fetch: options.fetch,
      signal: options.signal,
    })
    : undefined;
  // A Platform run's transport knows its model id: its events name it.
  const transportFor = (modelId: string): SessionTransport =>
    client ?? new PlatformTransport({
      webhooksUrl: platform!.webhooksUrl,
      platformUrl: platform!.platformUrl,
      apiKey: platform!.apiKey,
      modelId,
      logger,
      fetch: options.fetch,
      signal: options.signal,
    });
  const runner = new RequestRunner({
    logger,
    signal: options.signal,
    backoff: options.backoff,
  });
  // Journals written for this address, then those of the same HUB reached
  // on another address (a demo's random port), found by its instance id.
  const dirs = [{ dir: serverJournalDir(root, config.apiRoot), moved: "" }];
  await client?.auth({ signal: options.signal }).catch(() => false);
  if (client?.instanceId !== undefined) {
    for (const found of serverDirsOfInstance(root, client.instanceId)) {
      if (found.dir !== dirs[0]!.dir) {
        dirs.push({ dir: found.dir, moved: found.apiRoot });
      }
    }
  }
  const reports: SyncModelReport[] = [];
  for (const { dir, moved } of dirs) {
    let ids = modelDirsIn(dir);
    if (options.modelId !== undefined) {
      // Nothing for that model: no report (the command line says why).
      ids = ids.includes(options.modelId) ? [options.modelId] : [];
    }
    for (const modelId of ids.sort()) {
      if (moved !== "") {
        logger.info(
          `Found the journal of model ${modelId} written for ${moved}: the same HUB (instance ${client?.instanceId}) now answers on ${config.apiRoot}`,
        );
      }
      reports.push(
        await syncModel(
          transportFor(modelId),
          runner,
          logger,
          join(dir, modelId),
          modelId,
        ),
      );
    }
  }
  for (const report of reports) {
    logger.info(
      `Synced model ${report.modelId}: ${report.epochs.length} epoch(s), ${
        report.weights.join(" and ") || "no weights"
      }${
        report.errors.length > 0
          ? `; ${report.errors.length} error(s), run again later`
          : ""
      }`,
    );
  }
  return reports;
}

async function syncModel(
  client: SessionTransport,
  runner: RequestRunner,
  logger: Logger,
  dir: string,
  modelId: string,
): Promise<SyncModelReport> {
  const report: SyncModelReport = {
    modelId,
    found: { epochs: 0, weights: [] },
    epochs: [],
    pendingEpochs: [],
    rejectedEpochs: [],
    weights: [],
    errors: [],
  };
  const toError = (error: unknown): HUBError =>
    toHUBError(error, `Cannot deliver the journal of model ${modelId}`);
  const journal = MetricsJournal.open(dir, { logger });
  const metrics = new MetricsQueue();
  metrics.attachJournal(journal);
  report.found = {
    epochs: metrics.size,
    weights: deferredWeightsIn(dir).map((w) => w.kind),
  };
  const pump = new MetricsPump({
    queue: metrics,
    runner,
    transport: client,
    logger,
    interval: 0,
    modelId: () => modelId,
    held: () => false,
  });
  pump.stop(); // no background schedule: one upload, awaited here
  try {
    if (metrics.size > 0) {
      const result = await pump.upload();
      report.epochs = result.sent;
      report.rejectedEpochs = result.rejected;
      if (result.error !== undefined && metrics.size > 0) {
        report.errors.push(result.error);
      }
    }
    for (const weights of deferredWeightsIn(dir)) {
      try {
        await runner.run(
          weights.kind === "final" ? "final" : "checkpoint",
          `journal ${weights.kind} upload of model ${modelId}`,
          ({ signal }) =>
            client.uploadModel(modelId, {
              epoch: weights.epoch,
              file: weights.path,
              type: weights.kind === "final" ? "final" : "epoch",
              isBest: weights.isBest,
              map: weights.map,
              ...(Array.isArray(weights.classNames)
                ? { classNames: weights.classNames }
                : {}),
              signal,
            }),
        );
        dropDeferredWeights(weights);
        report.weights.push(weights.kind);
      } catch (error) {
        report.errors.push(toError(error));
      }
    }
  } finally {
    report.pendingEpochs = metrics.pendingEpochs;
    metrics.detachJournal();
    await journal.close({ pending: metrics.size, remove: true });
  }
  return report;
}

/** The model ids that have a journal directory in a server's directory. */
function modelDirsIn(serverDir: string): string[] {
  try {
    return readdirSync(serverDir).filter((name) =>
      isModelId(name) && statSync(join(serverDir, name)).isDirectory()
    );
  } catch {
    return [];
  }
}

/**
 * Lists every `<server directory>/<model id>` journal in a journal root, to
 * tell a user where their journals are.
 *
 * @param root The journal root.
 * @returns The journals, sorted.
 *
 * @example List the journals
 * ```ts
 * import { listJournals } from "./sync.ts";
 *
 * console.assert(listJournals("/nonexistent").length === 0);
 * ```
 */
export function listJournals(root: string): string[] {
  const out: string[] = [];
  let servers: string[];
  try {
    servers = readdirSync(root);
  } catch {
    return out;
  }
  for (const server of servers.sort()) {
    for (const id of modelDirsIn(join(root, server)).sort()) {
      out.push(`${server}/${id}`);
    }
  }
  return out;
}
