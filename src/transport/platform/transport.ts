/**
 * {@linkcode PlatformTransport}: the session's view of a server (start a
 * model, send metrics, send weights), spoken as the Ultralytics Platform
 * webhook protocol. It keeps the run's state: the `modelId`, `runId` and slug
 * the server answered, whether the user stopped the run, and the fitness
 * seen so far for `training_complete`.
 *
 * The protocol is taken from the behaviour of the Python trainer's Platform
 * callbacks; it is verified against the local HUB, which accepts the same
 * endpoints, and not against the live service, which cannot be reached from
 * our test machines.
 *
 * Length (~550 lines): one class holding the run's state, which every event
 * method reads and updates; the event data builders are in `events.ts`, the
 * HTTP exchange in `client.ts`, the signed upload in `signed_put.ts`.
 *
 * @module
 */

import { basename } from "node:path";
import {
  HUBError,
  HUBModelError,
  HUBRequestError,
} from "../../common/errors.ts";
import { consoleLogger } from "../../common/logger.ts";
import { PlatformClient } from "./client.ts";
import type { WeightsUpload } from "../client.ts";
import type {
  PlatformClientOptions,
  PlatformRequestOptions,
} from "./client.ts";
import { platformEnvironment } from "./environment.ts";
import { sendAll } from "./send_all.ts";
import {
  argsFromPayload,
  epochEndData,
  trainingStartedData,
} from "./events.ts";
import type {
  EpochEndData,
  PlatformEnvironment,
  PlatformEventReply,
  PlatformTarget,
  TrainingCompleteData,
} from "../../protocol/platform.ts";
import type {
  CreateModelPayload,
  EpochMetrics,
  Logger,
  ModelDocument,
  TrainArgs,
} from "../../protocol/types.ts";

/** Options of the {@linkcode PlatformTransport} constructor. */
export interface PlatformTransportOptions extends PlatformClientOptions {
  /** Project, `owner/slug`; may be left out when `modelId` is given. */
  project?: string | undefined;
  /** Run name (a slug); may be left out when `modelId` is given. */
  name?: string | undefined;
  /** Platform base URL, for model page links. @default {the webhooks root's origin} */
  platformUrl?: string | undefined;
  /** Called once when the server answers `cancelled: true`. @default {undefined} */
  onCancel?: (() => void) | undefined;
  /** Environment sent with `training_started`. @default {platformEnvironment()} */
  environment?: PlatformEnvironment | undefined;
  /**
   * The model id of a run already started (e.g. to deliver a journal), so
   * that events name it instead of the project and name.
   *
   * @default {undefined}
   */
  modelId?: string | undefined;
  /** `epoch_end` requests in flight at once when a batch is sent, until the server answers one. @default {4} */
  concurrency?: number | undefined;
  /** `epoch_end` requests in flight once the server answered one in the batch (a backlog after an outage). @default {16} */
  wideConcurrency?: number | undefined;
}

/** A checkpoint stored by its `PUT`, waiting for its `checkpoint_saved`. */
interface StoredCheckpoint {
  file: string;
  epoch: number;
  size: number;
  sha256: string;
  path: string;
  uploadPath: string;
}

/** Options of {@linkcode PlatformTransport.uploadModel}. */
export interface PlatformUploadOptions
  extends PlatformRequestOptions, WeightsUpload {}

/**
 * The Platform transport of a session.
 *
 * @example Start a run against a server
 * ```ts
 * import { PlatformTransport } from "./transport.ts";
 *
 * const fetch = (() =>
 *   Promise.resolve(Response.json({ modelId: "m1", runId: "r1", modelSlug: "run" }))) as unknown as typeof globalThis.fetch;
 * const transport = new PlatformTransport({
 *   webhooksUrl: "http://127.0.0.1:8080/api/webhooks",
 *   apiKey: "ul_" + "0".repeat(40),
 *   project: "ada/signs",
 *   name: "run",
 *   fetch,
 *   logger: { info() {}, warn() {}, error() {} },
 * });
 * console.assert(await transport.startRun({ epochs: 2 }) === "m1");
 * console.assert(transport.runId === "r1");
 * ```
 */
export class PlatformTransport {
  /** The client the transport sends with. */
  readonly client: PlatformClient;
  /** Project, `owner/slug` (`""` when only the model id was given). */
  readonly project: string;
  /** Requested run name (`""` when only the model id was given). */
  readonly name: string;
  #platformUrl: string;
  #logger: Logger;
  #onCancel: (() => void) | undefined;
  #environment: PlatformEnvironment | undefined;
  #modelId: string | undefined;
  #modelSlug: string | undefined;
  #runId: string | undefined;
  #cancel = new AbortController();
  #fitness = new Map<number, number>();
  #delivered = new Map<number, string>();
  #concurrency: number;
  #wideConcurrency: number;
  #lastMetrics: { epoch: number; metrics: EpochMetrics } | undefined;
  #final:
    | { file: string; size: number; sha256: string; path: string }
    | undefined;
  #checkpoint: StoredCheckpoint | undefined;
  #untrackedSaid = false;

  /**
   * Creates the transport; nothing is sent until a method is called.
   *
   * @param options Client options, project, name and the cancel hook.
   */
  constructor(options: PlatformTransportOptions) {
    const {
      project,
      name,
      platformUrl,
      onCancel,
      environment,
      modelId,
      concurrency = 4,
      wideConcurrency = Math.max(16, concurrency),
      ...rest
    } = options;
    if (
      modelId !== undefined && (typeof modelId !== "string" || modelId === "")
    ) {
      throw new TypeError(
        "Cannot report to the Platform as 'modelId' is not a non-empty string",
      );
    }
    if (
      (project !== undefined || modelId === undefined) &&
      (typeof project !== "string" || !/^[^/\s]+\/[a-z0-9-]+$/.test(project))
    ) {
      throw new TypeError(
        `Cannot report to the Platform as the project "${project}" is not "<owner>/<slug>"`,
      );
    }
    if (
      (name !== undefined || modelId === undefined) &&
      (typeof name !== "string" || !/^[a-z0-9-]{1,128}$/.test(name))
    ) {
      throw new TypeError(
        `Cannot report to the Platform as the name "${name}" is not a slug ([a-z0-9-], at most 128 characters)`,
      );
    }

    this.client = new PlatformClient(rest);
    this.project = project ?? "";
    this.name = name ?? "";
    this.#platformUrl = (platformUrl ?? new URL(this.client.webhooksUrl).origin)
      .replace(/\/+$/, "");
    this.#logger = rest.logger ?? consoleLogger();
    this.#onCancel = onCancel;
    this.#environment = environment;
    if (modelId !== undefined) this.#modelId = modelId;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(
        `Cannot report to the Platform with a concurrency of ${concurrency}: pass an integer >= 1`,
      );
    }
    this.#concurrency = concurrency;
    if (!Number.isInteger(wideConcurrency) || wideConcurrency < concurrency) {
      throw new RangeError(
        `Cannot report to the Platform with a wideConcurrency of ${wideConcurrency}: pass an integer >= concurrency (${concurrency})`,
      );
    }
    this.#wideConcurrency = wideConcurrency;
  }

  /** The model id the server answered, once it did. */
  get modelId(): string | undefined {
    return this.#modelId;
  }

  /** The run id the server answered, once it did. */
  get runId(): string | undefined {
    return this.#runId;
  }

  /** The model's slug as the server answered it (e.g. `train-2`), else the name. */
  get modelSlug(): string {
    return this.#modelSlug ?? this.name;
  }

  /** Whether the server answered `cancelled: true`. */
  get cancelled(): boolean {
    return this.#cancel.signal.aborted;
  }

  /** Aborted (once) when the server answers `cancelled: true`: the user stopped the run. */
  get cancelSignal(): AbortSignal {
    return this.#cancel.signal;
  }

  /**
   * The model's page on the Platform: `<platform>/<project>/<slug>`.
   *
   * @param _id Model id (the transport knows its own).
   * @returns The URL.
   */
  modelUrl(_id?: string): string {
    if (this.project === "") {
      return `${this.#platformUrl}/models/${this.#modelId ?? _id ?? ""}`;
    }
    return `${this.#platformUrl}/${this.project}/${this.modelSlug}`;
  }

  /**
   * Where a program finds the model: the Platform's webhooks are
   * write-only and its protocol has no per-model API, so this is the
   * model's page ({@linkcode PlatformTransport.modelUrl}).
   *
   * @param id Model id (the transport knows its own).
   * @returns The URL.
   */
  apiUrl(id?: string): string {
    return this.modelUrl(id);
  }

  #target(): PlatformTarget {
    return this.#modelId === undefined
      ? { project: this.project, name: this.name }
      : { modelId: this.#modelId };
  }

  #adopt(reply: PlatformEventReply): void {
    if (reply.modelId !== undefined) this.#modelId ??= reply.modelId;
    if (reply.modelSlug !== undefined && reply.modelSlug !== "") {
      this.#modelSlug = reply.modelSlug;
    }
    if (reply.runId !== undefined) this.#runId ??= reply.runId;
    if (reply.cancelled === true && !this.#cancel.signal.aborted) {
      this.#cancel.abort(
        new HUBError(
          `Training was stopped on the Platform: ${this.modelUrl()}`,
        ),
      );
      this.#logger.info(
        `Training was stopped on the Platform: ${this.modelUrl()}`,
      );
      try {
        this.#onCancel?.();
      } catch (error) {
        this.#logger.warn(
          `The cancel hook failed: ${
            error instanceof Error ? error.message : String(error)
          }`,
        );
      }
    }
  }

  /**
   * Sends `training_started` (awaited) and adopts the `modelId`, `runId`
   * and slug it answers. Without a `modelId` the run is not tracked: this
   * is said once, and later events name the project and run instead.
   *
   * @param trainArgs The trainer's arguments.
   * @param options Signal and timeout.
   * @returns The model id, or `<project>/<name>` when the server gave none.
   */
  async startRun(
    trainArgs: TrainArgs,
    options: PlatformRequestOptions = {},
  ): Promise<string> {
    this.#environment ??= platformEnvironment();
    const reply = await this.client.sendEvent(
      "training_started",
      trainingStartedData(trainArgs, this.#environment),
      this.#target(),
      options,
    );
    this.#adopt(reply);
    if (this.#modelId === undefined) {
      if (!this.#untrackedSaid) {
        this.#untrackedSaid = true;
        this.#logger.warn(
          `The Platform answered training_started without a modelId: this run is not tracked, metrics may not show on ${this.modelUrl()}`,
        );
      }
      return `${this.project}/${this.name}`;
    }
    return this.#modelId;
  }

  /**
   * Sends one `epoch_end` per epoch, oldest first, `concurrency` at a time
   * until the server answers one and `wideConcurrency` after, and notes a
   * `cancelled: true` reply. An epoch whose request failed on a retriable
   * error is tried again in this call (up to 3 times, after the server's
   * `Retry-After`), and a request still waiting when nothing else is left
   * gets a copy. Rejects when any epoch was not acknowledged, or sooner when
   * more requests failed than succeeded (a server that is down); an epoch
   * already acknowledged with the same values is not sent again.
   *
   * @param epochs Metrics by epoch.
   * @param options Signal and timeout.
   */
  async sendEpochs(
    epochs: ReadonlyMap<number, EpochMetrics>,
    options: PlatformRequestOptions = {},
  ): Promise<void> {
    const jobs: Array<
      { epoch: number; all: EpochMetrics; key: string; data: EpochEndData }
    > = [];
    for (const epoch of [...epochs.keys()].sort((a, b) => a - b)) {
      const all = epochs.get(epoch)!;
      // An epoch is one request: when a batch is sent again after a failure,
      // the epochs the server already acknowledged with these values are
      // not sent twice, so that every retry makes progress.
      // (JSON.stringify writes a non-finite number as null by itself.)
      const key = JSON.stringify(all);
      if (this.#delivered.get(epoch) === key) continue;
      const data = epochEndData(epoch, all);
      if (typeof data.fitness === "number" && Number.isFinite(data.fitness)) {
        this.#fitness.set(epoch, data.fitness);
      }
      const best = this.#best(epoch);
      if (best !== undefined) data.best_fitness = best.fitness;
      jobs.push({ epoch, all, key, data });
    }
    // One request per epoch, oldest first, a few at a time until the server
    // answers and more after (see send_all.ts): a backlog left by an outage
    // drains in one call, an epoch that hit a fault is tried again in the
    // same call while the server answers, and a request that hangs when
    // nothing else is left gets a copy (an epoch is its own idempotency key).
    const result = await sendAll(
      jobs,
      async (job, signal) => {
        const reply = await this.client.sendEvent(
          "epoch_end",
          job.data,
          this.#target(),
          { ...options, signal },
        );
        this.#adopt(reply);
        this.#delivered.set(job.epoch, job.key);
        const last = this.#lastMetrics;
        if (last === undefined || job.epoch >= last.epoch) {
          this.#lastMetrics = { epoch: job.epoch, metrics: job.all };
        }
      },
      {
        concurrency: this.#concurrency,
        wideConcurrency: this.#wideConcurrency,
        signal: options.signal,
        halted: () => this.client.unauthorized !== undefined,
      },
    );
    if (result.failed.length > 0) {
      const errors = result.failed.map((f) => f.error).filter((e) =>
        e !== undefined
      );
      if (options.signal?.aborted) throw options.signal.reason;
      throw this.client.unauthorized ??
        errors.find((e) => e instanceof HUBRequestError && !e.retriable) ??
        errors[0] ??
        new HUBRequestError(
          `Cannot send epoch_end for ${result.failed.length} epoch(s) as the server failed more requests than it answered: retry later`,
          {
            method: "POST",
            path: "/training/metrics",
            retriable: true,
          },
        );
    }
  }

  #best(upTo = Infinity): { epoch: number; fitness: number } | undefined {
    let best: { epoch: number; fitness: number } | undefined;
    for (const [epoch, fitness] of this.#fitness) {
      if (epoch <= upTo && (best === undefined || fitness > best.fitness)) {
        best = { epoch, fitness };
      }
    }
    return best;
  }

  /**
   * Uploads weights: asks for a signed URL, streams the file with one `PUT`,
   * then sends `checkpoint_saved` (checkpoints, when the run id is known) or
   * `training_complete` (final weights, awaited). A retried final upload
   * whose file was already stored only sends `training_complete` again.
   *
   * @param options What to upload and how.
   * @returns Bytes and sha256 sent.
   */
  async uploadWeights(
    options: PlatformUploadOptions,
  ): Promise<{ size: number; sha256: string }> {
    const {
      epoch,
      file,
      type,
      map = 0,
      classNames,
      onProgress,
      signal,
      timeout,
    } = options;
    if (
      classNames !== undefined &&
      (!Array.isArray(classNames) ||
        !classNames.every((n) => typeof n === "string"))
    ) {
      throw new TypeError(
        "Cannot upload the final weights as 'classNames' is not an array of strings: pass the class names by class id, or leave it out",
      );
    }
    const call = {
      ...(signal === undefined ? {} : { signal }),
      ...(timeout === undefined ? {} : { timeout }),
    };
    const filename = type === "final" ? "best.pt" : "last.pt";
    let stored = type === "final" && this.#final?.file === file
      ? this.#final
      : undefined;
    // A checkpoint whose PUT succeeded but whose checkpoint_saved failed:
    // its retry sends only the event, not the file again.
    const saved = this.#checkpoint;
    if (
      type === "epoch" && saved !== undefined && saved.file === file &&
      saved.epoch === epoch
    ) {
      await this.#checkpointSaved(saved, call);
      return { size: saved.size, sha256: saved.sha256 };
    }
    if (stored === undefined) {
      const url = await this.client.requestUpload(
        filename,
        this.#target(),
        this.#runId,
        call,
      );
      const sent = await this.client.putFile(url.uploadUrl, file, {
        ...call,
        onProgress,
      });
      if (
        sent.storedSha256 !== undefined && sent.storedSha256 !== sent.sha256
      ) {
        throw new HUBRequestError(
          `Cannot upload ${
            basename(file)
          } as the store kept sha256 ${sent.storedSha256} but ${sent.sha256} was sent: retry the upload`,
          { method: "PUT", path: "/", status: sent.status, retriable: true },
        );
      }
      stored = {
        file,
        size: sent.size,
        sha256: sent.sha256,
        path: url.gcsPath,
      };
      if (type === "epoch") {
        const checkpoint = {
          ...stored,
          epoch,
          uploadPath: url.uploadPath ?? url.gcsPath,
        };
        this.#checkpoint = checkpoint;
        await this.#checkpointSaved(checkpoint, call);
        return { size: stored.size, sha256: stored.sha256 };
      }
      this.#final = stored;
    }
    const best = this.#best();
    const last = this.#lastMetrics;
    const lastData = last === undefined
      ? undefined
      : epochEndData(last.epoch, last.metrics);
    const complete: TrainingCompleteData = {
      results: {
        metrics: {
          ...(lastData?.metrics ?? {}),
          ...(lastData?.fitness === undefined
            ? {}
            : { fitness: lastData.fitness }),
        },
        bestEpoch: best?.epoch ?? epoch,
        bestFitness: best?.fitness ?? map,
        modelPath: stored.path,
        modelSize: stored.size,
      },
      ...(classNames === undefined || classNames.length === 0
        ? {}
        : { classNames: [...classNames] }),
      ...(this.#runId === undefined ? {} : { runId: this.#runId }),
    };
    const reply = await this.client.sendEvent(
      "training_complete",
      complete,
      this.#target(),
      call,
    );
    this.#adopt(reply);
    return { size: stored.size, sha256: stored.sha256 };
  }

  async #checkpointSaved(
    checkpoint: StoredCheckpoint,
    call: PlatformRequestOptions,
  ): Promise<void> {
    if (this.#runId !== undefined) {
      const reply = await this.client.sendEvent(
        "checkpoint_saved",
        {
          modelPath: checkpoint.path,
          runId: this.#runId,
          uploadPath: checkpoint.uploadPath,
        },
        this.#target(),
        call,
      );
      this.#adopt(reply);
    }
    if (this.#checkpoint === checkpoint) this.#checkpoint = undefined;
  }

  // The session's transport contract.

  /**
   * The Platform has no model documents to load: a run starts with
   * {@linkcode PlatformTransport.createModel}.
   *
   * @param id Model id.
   * @returns Never.
   */
  getModel(id: string): Promise<ModelDocument> {
    return Promise.reject(
      new HUBModelError(
        `Cannot load model ${id} from the Platform: open the session with ul://<owner>/<project>/<name> and start the run with createModel()`,
      ),
    );
  }

  /**
   * Starts the run (`training_started`) from the trainer's arguments, or
   * from the create payload when no arguments are given.
   *
   * @param payload The v1 create payload.
   * @param options Signal, timeout and the trainer's arguments.
   * @returns The model id.
   */
  createModel(
    payload: CreateModelPayload,
    options: PlatformRequestOptions & { trainArgs?: TrainArgs | undefined } =
      {},
  ): Promise<string> {
    const { trainArgs, ...call } = options;
    return this.startRun(trainArgs ?? argsFromPayload(payload), call);
  }

  /**
   * Sends epochs' metrics (see {@linkcode PlatformTransport.sendEpochs}).
   *
   * @param _id Model id (the transport knows its own).
   * @param metrics Metrics by epoch.
   * @param options Signal and timeout.
   */
  uploadMetrics(
    _id: string,
    metrics: ReadonlyMap<number, EpochMetrics>,
    options: PlatformRequestOptions = {},
  ): Promise<void> {
    return this.sendEpochs(metrics, options);
  }

  /**
   * Uploads weights (see {@linkcode PlatformTransport.uploadWeights}).
   *
   * @param _id Model id (the transport knows its own).
   * @param options What to upload and how.
   * @returns Bytes and sha256 sent.
   */
  uploadModel(
    _id: string,
    options: PlatformUploadOptions,
  ): Promise<{ size: number; sha256: string }> {
    return this.uploadWeights(options);
  }

  /**
   * The Platform has no heartbeat: the events themselves show the run alive.
   *
   * @param _id Model id.
   * @param body The previous agent id.
   * @returns The same agent id.
   */
  heartbeat(
    _id: string,
    body: { agentId: string | null },
  ): Promise<{ agentId: string | null }> {
    return Promise.resolve({ agentId: body.agentId });
  }
}
