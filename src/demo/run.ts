/**
 * The demo behind `deno task demo`: a real tiny training (the
 * {@linkcode TinyTrainer} on two spirals) run through {@linkcode hubCallbacks}
 * against the embedded local HUB, or another HUB, ending with a summary read
 * back from the server. Its options and summary types are in
 * `demo_options.ts`.
 *
 * @module
 */

import { mkdir, rmdir } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import process from "node:process";
import { hubCallbacks } from "../session/callbacks.ts";
import type { CheckpointOutcome } from "../session/checkpoints.ts";
import { HUBClient } from "../transport/client.ts";
import { HUBError } from "../common/errors.ts";
import { serverJournalDir } from "../session/journal_paths.ts";
import { format as formatBytes } from "@std/fmt/bytes";
import { serveHub } from "../server/mod.ts";
import type { HubServer } from "../server/mod.ts";
import { HUBTrainingSession } from "../session/session.ts";
import {
  DEMO_RATE_LIMITS,
  type DemoOptions,
  type DemoSummary,
} from "./demo_options.ts";
import { TinyTrainer } from "./trainer.ts";
import { sha256File } from "../common/hash.ts";

export {
  DEMO_RATE_LIMITS,
  type DemoOptions,
  type DemoSummary,
} from "./demo_options.ts";

/** Quotes a word for a POSIX shell when it needs it. */
function shellWord(word: string): string {
  return /^[\w./:@%+=-]+$/.test(word)
    ? word
    : `'${word.replaceAll("'", `'\\''`)}'`;
}

function display(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === ""
    ? "."
    : rel.startsWith("..") || isAbsolute(rel)
    ? path
    : `./${rel}`;
}

function serverSha(doc: Record<string, unknown>): string | undefined {
  const checkpoints = doc.checkpoints as
    | { best?: { sha256?: unknown } | null }
    | undefined;
  const sha = checkpoints?.best?.sha256;
  return typeof sha === "string" ? sha : undefined;
}

/**
 * Runs the demo: starts the embedded local HUB (unless `hub` is given),
 * creates a model, trains the tiny network with {@linkcode hubCallbacks}
 * (per-epoch metrics, checkpoints, final upload with progress), reads the
 * metrics and the final weights' sha256 back from the HUB, prints a summary
 * and stops everything it started.
 *
 * @param options HUB, epochs, directory, output.
 * @returns What was stored on the HUB.
 * @throws {RangeError} When `epochs` is not an integer from 1 to 10000.
 * @throws {HUBError} When the HUB cannot be reached or refuses the model.
 *
 * @example Run a three-epoch demo in a temporary directory
 * ```ts
 * import { runDemo } from "./run.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "hub-demo-"));
 * const summary = await runDemo({
 *   epochs: 3,
 *   dir,
 *   trainer: { samples: 200, hidden: 8 },
 *   write: () => {},
 *   logger: "quiet",
 * });
 * console.assert(summary.allEpochsStored && summary.final.match);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoSummary> {
  const started = performance.now();
  const {
    hub: hubOption,
    apiKey,
    epochs = 20,
    dir: dirOption = ".hub-data",
    trainer: trainerOptions = {},
    rateLimits: rateOption,
    write = (line: string) => console.log(line),
    logger = undefined,
    onProgress,
    signal,
  } = options;
  if (!Number.isInteger(epochs) || epochs < 1 || epochs > 10_000) {
    throw new RangeError(
      `Cannot run the demo for ${epochs} epochs: pass an integer from 1 to 10000`,
    );
  }
  if (typeof write !== "function") {
    throw new TypeError("Cannot run the demo as 'write' is not a function");
  }
  if (hubOption !== undefined) {
    try {
      new URL(hubOption);
    } catch {
      throw new TypeError(
        `Cannot run the demo against "${hubOption}" as it is not a URL: pass e.g. http://127.0.0.1:8080`,
      );
    }
  }
  signal?.throwIfAborted();
  const rateLimits = { ...DEMO_RATE_LIMITS, ...rateOption };
  const dir = resolve(dirOption);
  await mkdir(dir, { recursive: true });

  let server: HubServer | undefined;
  let session: HUBTrainingSession | undefined;
  let hubUrl: string | undefined;
  const journal = join(dir, "journal");
  try {
    if (hubOption === undefined) {
      server = await serveHub({ port: 0, dataDir: dir });
      write(`Local HUB: ${server.url} (data in ${display(dir)})`);
    } else {
      write(`HUB: ${hubOption}`);
    }
    hubUrl = server?.url ?? hubOption!;
    write(
      `Rate limits (small for the demo; the hosted HUB used 3 s and 15 min): metrics ${rateLimits.metrics} ms, checkpoints ${rateLimits.ckpt} ms`,
    );

    const trainer = new TinyTrainer({
      hidden: 64,
      samples: 6000,
      ...trainerOptions,
      epochs,
      signal,
    });
    const args = trainer.args;
    write(
      `Training: ${args.model} on ${args.data} (${args.samples} points), ${args.epochs} epochs, Adam lr ${args.lr0}, batch ${args.batch}`,
    );

    session = await HUBTrainingSession.create(`${args.model}.yaml`, {
      apiRoot: hubUrl,
      webRoot: hubUrl,
      rateLimits,
      journal,
      logger,
      signal,
      ...(server === undefined
        ? (apiKey === undefined ? {} : { apiKey })
        : { settingsFile: false, env: () => undefined }),
    });
    const hooks = hubCallbacks(session, {
      logger,
      onProgress,
    });

    const modelId = await hooks.onPretrainRoutineStart(trainer);
    const modelUrl = session.apiUrl ?? `${hubUrl}/v1/models/${modelId}`;
    write(`Model: ${modelUrl}`);
    hooks.onPretrainRoutineEnd();

    const weightsDir = join(dir, "runs", modelId, "weights");
    const last = join(weightsDir, "last.pt");
    const best = join(weightsDir, "best.pt");
    const uploaded: number[] = [];
    const outcomes: Array<Promise<CheckpointOutcome>> = [];
    const width = String(epochs).length;
    let first: Record<string, number> | undefined;
    let latest: Record<string, number> = {};
    let lastEpoch = 0;
    while (!trainer.done) {
      const result = await trainer.trainEpoch();
      const { epoch, metrics, isBest } = result;
      first ??= metrics;
      latest = metrics;
      lastEpoch = epoch;
      hooks.onFitEpochEnd(epoch, metrics);
      await trainer.save(last);
      if (isBest) await trainer.save(best, { optimizer: false });
      const outcome = hooks.onModelSave(epoch, last, isBest);
      outcomes.push(outcome);
      void outcome.then((o) => {
        if (o.status === "uploaded") {
          uploaded.push(o.epoch);
          write(
            `  checkpoint of epoch ${o.epoch + 1} stored on the HUB (${
              formatBytes(o.size)
            })`,
          );
        } else if (o.status === "failed") {
          write(
            `  checkpoint of epoch ${
              o.epoch + 1
            } not uploaded: ${o.error.message}`,
          );
        }
      });
      write(
        `epoch ${String(epoch + 1).padStart(width)}/${epochs}  loss ${
          (metrics["train/loss"] ?? NaN).toFixed(4)
        }  val_loss ${(metrics["val/loss"] ?? NaN).toFixed(4)}  accuracy ${
          (metrics["metrics/accuracy"] ?? NaN).toFixed(3)
        }${isBest ? "  best" : ""}`,
      );
    }

    write(`Uploading the final weights (${display(best)})`);
    const report = await hooks.onTrainEnd(
      lastEpoch,
      best,
      trainer.bestFitness,
    );
    await Promise.all(outcomes);
    if (report.final === undefined) {
      throw report.finalError ??
        new HUBError("Cannot finish the demo as the final upload failed");
    }

    const client = new HUBClient({
      apiRoot: hubUrl,
      apiKey: server === undefined ? apiKey : undefined,
      signal,
    });
    const stored = await client.listMetrics(modelId);
    const doc = await client.getModel(modelId);
    const storedEpochs = stored.map((entry) => entry.epoch);
    const wanted = Array.from({ length: epochs }, (_, i) => i);
    const allEpochsStored = wanted.every((e) => storedEpochs.includes(e));
    const localSha = await sha256File(report.final.path);
    const remoteSha = serverSha(doc) ?? report.final.sha256;
    const serverModelDir = server === undefined
      ? undefined
      : join(dir, "models", modelId);
    uploaded.sort((a, b) => a - b);
    const durationMs = performance.now() - started;

    const summary: DemoSummary = {
      hubUrl,
      embedded: server !== undefined,
      dir,
      modelId,
      modelUrl,
      epochs,
      storedEpochs,
      allEpochsStored,
      loss: {
        first: first?.["train/loss"] ?? NaN,
        last: latest["train/loss"] ?? NaN,
      },
      accuracy: {
        first: first?.["metrics/accuracy"] ?? NaN,
        last: latest["metrics/accuracy"] ?? NaN,
      },
      checkpointsUploaded: uploaded,
      checkpointsSkipped: epochs - uploaded.length,
      final: {
        path: report.final.path,
        size: report.final.size,
        sha256: localSha,
        serverSha256: remoteSha,
        match: localSha === remoteSha,
      },
      weightsDir,
      serverModelDir,
      report,
      durationMs,
    };

    write("");
    write(`Done in ${(durationMs / 1000).toFixed(1)} s`);
    write(`  model        ${modelUrl}`);
    write(
      `  epochs       ${storedEpochs.length} of ${epochs} stored on the HUB${
        allEpochsStored ? "" : " (MISSING SOME)"
      } (read back from ${hubUrl}/v1/models/${modelId}/metrics)`,
    );
    write(
      `  training     loss ${summary.loss.first.toFixed(4)} -> ${
        summary.loss.last.toFixed(4)
      }, accuracy ${summary.accuracy.first.toFixed(3)} -> ${
        summary.accuracy.last.toFixed(3)
      }`,
    );
    write(
      `  checkpoints  ${uploaded.length} uploaded (epoch ${
        uploaded.map((e) => e + 1).join(", ") || "none"
      }), ${summary.checkpointsSkipped} skipped by the ${rateLimits.ckpt} ms rate limit or superseded`,
    );
    write(
      `  final        ${display(report.final.path)}, ${
        formatBytes(report.final.size)
      }, sha256 ${localSha}`,
    );
    write(
      `               HUB's sha256 ${remoteSha}: ${
        summary.final.match ? "match" : "MISMATCH"
      }`,
    );
    if (report.pendingEpochs.length > 0 || !report.settled) {
      write(
        `  undelivered  ${
          report.pendingEpochs.join(", ") || "none"
        } (settled: ${report.settled})`,
      );
    }
    write(`  local files  ${display(weightsDir)}/ (last.pt, best.pt)`);
    if (serverModelDir !== undefined) {
      write(
        `  HUB files    ${
          display(serverModelDir)
        }/ (model.json, metrics.jsonl), weights in ${
          display(join(dir, "weights", modelId))
        }/`,
      );
      // A command that works as typed, from this checkout, without deno on
      // PATH, on the same port so the URLs above stay valid.
      const port = new URL(hubUrl).port;
      write(
        `  the local HUB has stopped; serve this data again on the same URLs with:`,
      );
      write(
        `    npx -y deno@2.9.6 task hub --port ${port} --data ${
          shellWord(display(dir))
        }`,
      );
      write(`    then open ${hubUrl}/models/${modelId}`);
    }
    return summary;
  } finally {
    await session?.close({ timeout: 0 });
    await server?.close();
    // A delivered journal leaves empty directories (one per HUB URL, and the
    // embedded HUB's port changes every run): remove them, keep anything else.
    if (hubUrl !== undefined) {
      await rmdir(serverJournalDir(journal, hubUrl)).catch(() => {});
      await rmdir(journal).catch(() => {});
    }
  }
}
