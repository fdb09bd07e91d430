/**
 * The data of the Platform's webhook events, built from what the session
 * has: a flat metrics map becomes an `epoch_end`, the trainer's arguments a
 * `training_started`.
 *
 * @module
 */

import type {
  EpochEndData,
  PlatformEnvironment,
  PlatformModelInfo,
  TrainingStartedData,
} from "../../protocol/platform.ts";
import type {
  CreateModelPayload,
  EpochMetrics,
  TrainArgs,
} from "../../protocol/types.ts";

const MODEL_INFO_KEYS = {
  parameters: "model/parameters",
  gflops: "model/GFLOPs",
  speedMs: "model/speed_PyTorch(ms)",
} as const;

/**
 * Splits a flat metrics map into the parts of an `epoch_end`: `model/*`
 * facts become `modelInfo` (epoch 0), `system/*` values `system`, a
 * `fitness` value the epoch's fitness (else `0.1 mAP50 + 0.9 mAP50-95` when
 * both are present, as the Ultralytics detection fitness); the rest stays
 * in `metrics`.
 *
 * @param epoch Zero-based epoch.
 * @param all The epoch's flat metrics.
 * @returns The `epoch_end` data without `best_fitness`.
 *
 * @example Split epoch 0
 * ```ts
 * import { epochEndData } from "./events.ts";
 *
 * const data = epochEndData(0, { "train/loss": 1, "model/parameters": 3000 });
 * console.assert(data.modelInfo?.parameters === 3000 && !("model/parameters" in data.metrics));
 * ```
 */
export function epochEndData(epoch: number, all: EpochMetrics): EpochEndData {
  const metrics: Record<string, number> = {};
  const system: Record<string, number> = {};
  let info: Partial<PlatformModelInfo> | undefined;
  let fitness: number | undefined;
  for (const [key, value] of Object.entries(all)) {
    const infoKey = (Object.keys(MODEL_INFO_KEYS) as Array<
      keyof typeof MODEL_INFO_KEYS
    >).find((k) => MODEL_INFO_KEYS[k] === key);
    if (infoKey !== undefined) (info ??= {})[infoKey] = value;
    else if (key.startsWith("system/")) system[key.slice(7)] = value;
    else if (key === "fitness") fitness = value;
    else metrics[key] = value;
  }
  const map50 = all["metrics/mAP50(B)"];
  const map = all["metrics/mAP50-95(B)"];
  if (fitness === undefined && map50 !== undefined && map !== undefined) {
    fitness = 0.1 * map50 + 0.9 * map;
  }
  const data: EpochEndData = { epoch, metrics };
  if (Object.keys(system).length > 0) data.system = system;
  if (fitness !== undefined) data.fitness = fitness;
  if (info !== undefined && epoch === 0) {
    data.modelInfo = {
      parameters: info.parameters ?? 0,
      gflops: info.gflops ?? 0,
      speedMs: info.speedMs ?? 0,
    };
  }
  return data;
}

/**
 * Builds the `training_started` data from the trainer's arguments: every
 * argument as a string, `epochs` (default 300) and `device`.
 *
 * @param args The trainer's arguments.
 * @param environment The machine and runtime.
 * @returns The event's data.
 *
 * @example Arguments become strings
 * ```ts
 * import { trainingStartedData } from "./events.ts";
 * import { platformEnvironment } from "./environment.ts";
 *
 * const data = trainingStartedData({ epochs: 3, batch: 16 }, platformEnvironment());
 * console.assert(data.trainArgs.batch === "16" && data.epochs === 3);
 * ```
 */
export function trainingStartedData(
  args: TrainArgs,
  environment: PlatformEnvironment,
): TrainingStartedData {
  const trainArgs: Record<string, string> = {};
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined) continue;
    trainArgs[key] = typeof value === "string"
      ? value
      : typeof value === "object" && value !== null
      ? JSON.stringify(value)
      : String(value);
  }
  const epochs = typeof args.epochs === "number" && Number.isFinite(args.epochs)
    ? args.epochs
    : 300;
  return {
    trainArgs,
    epochs,
    device: String(args.device ?? ""),
    environment,
  };
}

/**
 * The trainer's arguments a v1 model-creation payload stands for, so that a
 * session that creates its model through `createModel()` starts the run with
 * them.
 *
 * @param payload The v1 payload.
 * @returns The arguments.
 *
 * @example Arguments of a payload
 * ```ts
 * import { argsFromPayload } from "./events.ts";
 * import { createModelPayload } from "../../protocol/model_payload.ts";
 *
 * const args = argsFromPayload(createModelPayload("yolov8n.pt", { epochs: 3 }));
 * console.assert(args.epochs === 3 && args.model === "yolov8n.pt");
 * ```
 */
export function argsFromPayload(payload: CreateModelPayload): TrainArgs {
  return {
    model: payload.meta.name,
    ...(payload.dataset.name === undefined
      ? {}
      : { data: payload.dataset.name }),
    epochs: payload.config.epochs,
    batch: payload.config.batchSize,
    imgsz: payload.config.imageSize,
    patience: payload.config.patience,
    device: payload.config.device,
    cache: payload.config.cache,
  };
}
