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
import { resolveConfig } from "./config.ts";
import type { ConfigOptions } from "./config.ts";
import { HUBError } from "../common/errors.ts";
import { isModelId } from "./identifier.ts";
import {
  defaultJournalRoot,
  deferredWeightsIn,
  dropDeferredWeights,
  journalDir,
  MetricsJournal,
  serverJournalDir,
} from "./journal.ts";
import { consoleLogger, redactingLogger } from "../common/logger.ts";
import { MetricsQueue } from "./metrics_queue.ts";
import { RequestQueue } from "./request_runner.ts";
import type { Logger } from "../protocol/types.ts";

/** Options for {@linkcode syncJournal}. */
export interface SyncJournalOptions extends ConfigOptions {
  /** Journal root. @default {defaultJournalRoot()} */
  journal?: string;
  /** Deliver only this model's journal. @default {every model of the server} */
  modelId?: string;
  /** `fetch` to use. @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** Aborts the delivery. @default {undefined} */
  signal?: AbortSignal;
  /** Where messages go; `"quiet"` drops them. @default {console} */
  logger?: Logger | "quiet";
  /** Backoff between attempts. @default {@std/async's defaults} */
  backoff?: {
    minTimeout?: number;
    maxTimeout?: number;
    multiplier?: number;
    jitter?: number;
  };
}

/** What {@linkcode syncJournal} delivered for one model. */
export interface SyncModelReport {
  /** Id of the model. */
  modelId: string;
  /** Epochs the server acknowledged in this run. */
  epochs: number[];
  /** Epochs still waiting (the server could not be reached or refused). */
  pendingEpochs: number[];
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
  const config = await resolveConfig(options);
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
  const serverDir = serverJournalDir(root, config.apiRoot);
  let ids: string[];
  if (options.modelId !== undefined) ids = [options.modelId];
  else {
    try {
      ids = readdirSync(serverDir).filter((name) =>
        isModelId(name) && statSync(join(serverDir, name)).isDirectory()
      );
    } catch {
      ids = [];
    }
  }
  const client = new HUBClient({
    apiRoot: config.apiRoot,
    apiKey: config.apiKey,
    logger,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const queue = new RequestQueue({
    logger,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
  });
  const reports: SyncModelReport[] = [];
  for (const modelId of ids.sort()) {
    reports.push(
      await syncModel(
        client,
        queue,
        journalDir(root, config.apiRoot, modelId),
        modelId,
      ),
    );
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
  client: HUBClient,
  queue: RequestQueue,
  dir: string,
  modelId: string,
): Promise<SyncModelReport> {
  const report: SyncModelReport = {
    modelId,
    epochs: [],
    pendingEpochs: [],
    weights: [],
    errors: [],
  };
  const toError = (error: unknown): HUBError =>
    error instanceof HUBError
      ? error
      : new HUBError(String(error), { cause: error });
  const journal = MetricsJournal.open(dir);
  const metrics = new MetricsQueue();
  metrics.attachJournal(journal);
  try {
    if (metrics.size > 0) {
      const batch = metrics.take();
      try {
        await queue.run(
          "metrics",
          `journal metrics upload of model ${modelId}`,
          ({ signal }) =>
            client.uploadMetrics(modelId, batch.metrics, { signal }),
        );
        report.epochs = metrics.ack(batch);
      } catch (error) {
        report.errors.push(toError(error));
      }
    }
    for (const weights of deferredWeightsIn(dir)) {
      try {
        await queue.run(
          weights.kind === "final" ? "final" : "checkpoint",
          `journal ${weights.kind} upload of model ${modelId}`,
          ({ signal }) =>
            client.uploadModel(modelId, {
              epoch: weights.epoch,
              file: weights.path,
              type: weights.kind === "final" ? "final" : "epoch",
              isBest: weights.isBest,
              map: weights.map,
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
