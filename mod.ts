/**
 * Run a model-training session against a HUB server: open (or create) the
 * model, keep the server told that the trainer is alive, stream per-epoch
 * metrics, upload checkpoints and the final weights, and lose none of it to
 * a flaky network. Works on Deno and Bun and depends only on the Deno
 * standard library (`@std/async`, `@std/fmt`); the local HUB
 * server (`./server`) speaks the same v1 protocol.
 *
 * @example Train against the local HUB
 * ```ts
 * import { HUBTrainingSession } from "./mod.ts";
 * import { serveHub } from "./src/server/mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const hub = await serveHub({ dataDir });
 * await using session = await HUBTrainingSession.create("yolov8n.yaml", {
 *   apiRoot: hub.url,
 *   webRoot: hub.url,
 *   logger: "quiet",
 *   journal: false,
 * });
 * await session.createModel({ data: "coco8.yaml", epochs: 1 });
 * session.queueMetrics(0, { "train/loss": 0.5 });
 * const report = await session.close();
 * console.assert(report.pendingEpochs.length === 0);
 * await hub.close();
 * await rm(dataDir, { recursive: true });
 * ```
 *
 * @module
 */

export { HUBTrainingSession } from "./src/session/session.ts";
export {
  DEFAULT_RATE_LIMITS,
  type FinalUploadResult,
  type FlushOptions,
  type FlushReport,
  type MetricsUploadResult,
  type RateLimits,
  type SessionOptions,
  type SessionTransport,
  type UploadModelCallOptions,
} from "./src/session/options.ts";
export { createModelPayload } from "./src/protocol/model_payload.ts";
export type { CheckpointOutcome } from "./src/session/checkpoints.ts";
export {
  type HUBCallbacks,
  type HubCallbacks,
  hubCallbacks,
  type HUBCallbacksOptions,
  type HubCallbacksOptions,
  type PretrainTrainer,
  type TrainEndReport,
  type TrainerArgs,
} from "./src/session/callbacks.ts";
export {
  HUBClient,
  type HUBClientOptions,
  isRetriableStatus,
  type RequestOptions,
  type UploadModelOptions,
  type UploadResult,
  type WeightsUpload,
} from "./src/transport/client.ts";
export {
  HUBConfigError,
  HUBError,
  HUBModelError,
  HUBRequestError,
  type HUBRequestErrorInit,
  HUBTimeoutError,
  toHUBError,
} from "./src/common/errors.ts";
export {
  isModelId,
  type ParsedIdentifier,
  parseIdentifier,
  type ParseIdentifierOptions,
} from "./src/session/identifier.ts";
export {
  type ConfigOptions,
  DEFAULT_API_ROOT,
  DEFAULT_WEB_ROOT,
  resolveConfig,
  type ResolvedConfig,
} from "./src/session/config.ts";
export type {
  BackoffOptions,
  BudgetOverrides,
  RequestBudget,
  RequestKind,
} from "./src/session/request_runner.ts";
export { defaultJournalRoot } from "./src/session/journal_paths.ts";
export {
  syncJournal,
  type SyncJournalOptions,
  type SyncModelReport,
} from "./src/session/sync.ts";
export {
  createProgressBar,
  createProgressLines,
  type ProgressBar,
  type ProgressBarOptions,
  type ProgressLinesOptions,
} from "./src/session/progress.ts";
export { consoleLogger } from "./src/common/logger.ts";
export { VERSION } from "./src/common/version.ts";
export type {
  CreateModelPayload,
  EpochMetrics,
  Logger,
  ModelDocument,
  ModelStatus,
  ProgressCallback,
  StoredEpochMetrics,
  TrainArgs,
  UploadProgress,
} from "./src/protocol/types.ts";
export {
  PlatformTransport,
  type PlatformTransportOptions,
  type PlatformUploadOptions,
} from "./src/transport/platform/transport.ts";
export {
  PlatformClient,
  type PlatformClientOptions,
  type PlatformRequestOptions,
} from "./src/transport/platform/client.ts";
export {
  type PlatformConfig,
  type PlatformConfigOptions,
  resolvePlatformConfig,
} from "./src/transport/platform/config.ts";
export {
  type CheckpointSavedData,
  DEFAULT_PLATFORM_URL,
  type EpochEndData,
  isPlatformKey,
  parsePlatformUri,
  type PlatformEnvironment,
  type PlatformEventName,
  type PlatformEventReply,
  type PlatformModelInfo,
  type PlatformModelUri,
  type PlatformTarget,
  slugify,
  type TrainingCompleteData,
  type TrainingStartedData,
  type UploadUrlReply,
} from "./src/protocol/platform.ts";
export type { SignedPutResult } from "./src/transport/platform/signed_put.ts";
