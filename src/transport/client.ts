/**
 * {@linkcode HUBClient}: one typed method per endpoint of the HUB v1 wire
 * protocol, over `fetch`.
 *
 * Every reply's envelope (`{ success, data, message }`) is checked; every
 * failure becomes a {@linkcode HUBRequestError} (with `status`, the server's
 * `message`, `retriable` and `retryAfter`) or a {@linkcode HUBTimeoutError};
 * a caller's abort rejects with the signal's reason. The API key travels only
 * in the `x-api-key` header and never appears in an error.
 *
 * Length: one documented method per endpoint (~640 lines) is the client's
 * table of contents; the exchange itself is in `exchange.ts`, the status and
 * `Retry-After` rules in `http_status.ts`, reply reading in `reply.ts`.
 *
 * @module
 */

import { HUBRequestError } from "../common/errors.ts";
import { assertSafeTransport } from "../common/safe_transport.ts";
import { consoleLogger } from "../common/logger.ts";
import { createMultipartUpload } from "./multipart_body.ts";
import { UPLOAD_FILE_PARTS } from "../protocol/upload.ts";
import { AGENT } from "../common/version.ts";
import { isRecord } from "./reply.ts";
import {
  badReply,
  type Call,
  checkTimeout,
  type Envelope,
  exchange,
  type ExchangeContext,
} from "./exchange.ts";

export {
  isRetriableStatus,
  MAX_RETRY_AFTER,
  parseRetryAfter,
  RETRIABLE_STATUSES,
} from "./http_status.ts";
export { MAX_RESPONSE_BYTES } from "./reply.ts";
import type {
  CreateModelPayload,
  EpochMetrics,
  Logger,
  ModelDocument,
  ProgressCallback,
  StoredEpochMetrics,
  UploadProgress,
} from "../protocol/types.ts";

const DEFAULT_TIMEOUT = 30_000;

/** Per-call options of every {@linkcode HUBClient} method. */
export interface RequestOptions {
  /** Aborts this request; it then rejects with the signal's reason. @default {undefined} */
  signal?: AbortSignal | undefined;
  /**
   * Time limit of this attempt in milliseconds (for uploads: the longest
   * time without progress). @default {the client's `timeout`}
   */
  timeout?: number | undefined;
}

/** Options of the {@linkcode HUBClient} constructor. */
export interface HUBClientOptions {
  /** API root, e.g. `http://127.0.0.1:8080` (a trailing slash is removed). */
  apiRoot: string;
  /** API key, sent as `x-api-key`. @default {undefined} */
  apiKey?: string | undefined;
  /** ID token, sent as `authorization: Bearer` when no API key is set. @default {undefined} */
  idToken?: string | undefined;
  /** `fetch` to use, e.g. a fault injector in tests. @default {globalThis.fetch} */
  fetch?: typeof fetch | undefined;
  /** Aborts every request of this client. @default {undefined} */
  signal?: AbortSignal | undefined;
  /**
   * Time limit of each request in milliseconds; for uploads, the longest
   * time without progress (no body chunk taken and no reply). @default {30000}
   */
  timeout?: number | undefined;
  /** Agent name sent as `user-agent` and in heartbeats. @default {AGENT} */
  agent?: string | undefined;
  /** Where warnings go (e.g. a progress callback that threw). @default {consoleLogger()} */
  logger?: Logger | undefined;
}

/**
 * Which weights to upload: the part of an upload's options shared by
 * {@linkcode HUBClient.uploadModel} and the Platform transport.
 */
export interface WeightsUpload {
  /** Epoch of the weights. */
  epoch: number;
  /** Path of the weights file. */
  file: string;
  /** `"epoch"` sends a checkpoint as `last.pt`; `"final"` the final weights as `best.pt`. */
  type: "epoch" | "final";
  /** Whether this checkpoint is the best so far (type `"epoch"`). @default {false} */
  isBest?: boolean | undefined;
  /**
   * Final mAP (type `"final"`); the Platform also sends it as the best
   * fitness when no fitness was seen. @default {0}
   */
  map?: number | undefined;
  /**
   * Class names of the final model (type `"final"`): sent by the Platform
   * transport in `training_complete`, not part of the HUB v1 upload.
   * @default {undefined}
   */
  classNames?: readonly string[] | undefined;
  /** Receives `{ loaded, total }` in request-body bytes. @default {undefined} */
  onProgress?: ProgressCallback | undefined;
}

/** Options of {@linkcode HUBClient.uploadModel}. */
export interface UploadModelOptions extends RequestOptions, WeightsUpload {}

/** What the server stored for an upload. */
export interface UploadResult {
  /** Size of the stored file in bytes. */
  size: number;
  /** sha256 of the stored file, lowercase hex. */
  sha256: string;
}

function checkId(id: unknown, action: string): string {
  if (typeof id !== "string" || id.trim() === "") {
    throw new TypeError(
      `Cannot ${action} as the model id must be a non-empty string`,
    );
  }
  return encodeURIComponent(id);
}

/**
 * A typed client of the HUB v1 wire protocol: one method per endpoint.
 *
 * @example Talk to a local HUB
 * ```ts
 * import { HUBClient } from "./client.ts";
 *
 * // A fetch that plays the server, to keep the example self-contained.
 * const fetch = (() =>
 *   Promise.resolve(Response.json({ success: true, data: { id: "abc" } }))) as unknown as typeof globalThis.fetch;
 * const client = new HUBClient({ apiRoot: "http://127.0.0.1:8080", fetch });
 * console.assert(await client.auth());
 * ```
 */
export class HUBClient {
  /** The API root, without trailing slash. */
  readonly apiRoot: string;
  /** The agent name sent as `user-agent` and in heartbeats. */
  readonly agent: string;
  #apiKey: string | undefined;
  #instanceId: string | undefined;
  #idToken: string | undefined;
  #fetch: typeof fetch;
  /** The runtime's own fetch: upload chunks may be released once sent. */
  #nativeFetch: boolean;
  readonly #context: ExchangeContext;
  #signal: AbortSignal | undefined;
  #timeout: number;
  #logger: Logger;

  /**
   * Creates a client; nothing is sent until a method is called.
   *
   * @param options The API root, credentials, `fetch`, signal and timeout.
   * @throws {TypeError} If the API root is not an http(s) URL or an option has the wrong type.
   * @throws {RangeError} If `timeout` is not positive.
   */
  constructor(options: HUBClientOptions) {
    const {
      apiRoot,
      apiKey,
      idToken,
      fetch: fetchFn = globalThis.fetch,
      signal,
      timeout = DEFAULT_TIMEOUT,
      agent = AGENT,
      logger = consoleLogger(),
    } = options ?? {};
    let url: URL;
    try {
      url = new URL(String(apiRoot));
    } catch {
      throw new TypeError(
        "Cannot create the client as 'apiRoot' is not a URL: pass e.g. http://127.0.0.1:8080",
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(
        `Cannot create the client as 'apiRoot' must use http or https, got ${url.protocol}`,
      );
    }
    if (url.username !== "" || url.password !== "" || url.search !== "") {
      throw new TypeError(
        "Cannot create the client as 'apiRoot' must not carry credentials or a query: pass the key as 'apiKey'",
      );
    }
    if (apiKey !== undefined && (typeof apiKey !== "string" || apiKey === "")) {
      throw new TypeError(
        "Cannot create the client as 'apiKey' must be a non-empty string",
      );
    }
    if (
      idToken !== undefined && (typeof idToken !== "string" || idToken === "")
    ) {
      throw new TypeError(
        "Cannot create the client as 'idToken' must be a non-empty string",
      );
    }
    assertSafeTransport(url.href, apiKey ?? idToken);
    if (typeof fetchFn !== "function") {
      throw new TypeError(
        "Cannot create the client as 'fetch' is not a function",
      );
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        "Cannot create the client as 'signal' is not an AbortSignal",
      );
    }
    if (typeof agent !== "string" || agent === "" || /[\r\n]/.test(agent)) {
      throw new TypeError(
        "Cannot create the client as 'agent' must be a single-line string",
      );
    }
    this.apiRoot = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
    this.agent = agent;
    this.#apiKey = apiKey;
    this.#idToken = idToken;
    this.#fetch = fetchFn;
    this.#nativeFetch = fetchFn === globalThis.fetch;
    this.#signal = signal;
    this.#timeout = checkTimeout(timeout, "the client");
    this.#logger = logger;
    // Fixed for the client's life: built once, not per request.
    this.#context = {
      apiRoot: this.apiRoot,
      agent: this.agent,
      apiKey: this.#apiKey,
      idToken: this.#idToken,
      fetch: this.#fetch,
      signal: this.#signal,
      timeout: this.#timeout,
      onInstance: (id) => {
        this.#instanceId = id;
      },
    };
  }

  /**
   * Checks the credentials with `POST /v1/auth`.
   *
   * @param options Signal and timeout.
   * @returns `true` when the server accepts them, `false` when it answers
   * 401/403 or `success: false`.
   */
  async auth(options: RequestOptions = {}): Promise<boolean> {
    const envelope = await this.#send({
      method: "POST",
      path: "/v1/auth",
      action: "check the API key",
      acceptRefusal: true,
    }, options);
    return envelope.success;
  }

  /**
   * Reads a model document with `GET /v1/models/{id}`.
   *
   * @param id Model id.
   * @param options Signal and timeout.
   * @returns The model document.
   */
  async getModel(
    id: string,
    options: RequestOptions = {},
  ): Promise<ModelDocument> {
    const action = "get the model";
    const envelope = await this.#send({
      method: "GET",
      path: `/v1/models/${checkId(id, action)}`,
      action,
    }, options);
    const data = envelope.data;
    if (!isRecord(data) || typeof data.id !== "string") {
      throw this.#badReply(
        "GET",
        `/v1/models/${encodeURIComponent(id)}`,
        action,
        "has no model document in 'data'",
      );
    }
    return data as ModelDocument;
  }

  /**
   * Creates a model with `POST /v1/models`.
   *
   * @param payload The create-model payload.
   * @param options Signal and timeout.
   * @returns The new model's id.
   */
  async createModel(
    payload: CreateModelPayload,
    options: RequestOptions = {},
  ): Promise<string> {
    const action = "create the model";
    if (!isRecord(payload)) {
      throw new TypeError(`Cannot ${action} as 'payload' is not an object`);
    }
    const envelope = await this.#send({
      method: "POST",
      path: "/v1/models",
      action,
      json: payload,
    }, options);
    const data = envelope.data;
    if (!isRecord(data) || typeof data.id !== "string" || data.id === "") {
      throw this.#badReply("POST", "/v1/models", action, "has no 'data.id'");
    }
    return data.id;
  }

  /**
   * Updates fields of a model with `PATCH /v1/models/{id}`.
   *
   * @param id Model id.
   * @param patch The fields to change.
   * @param options Signal and timeout.
   */
  async updateModel(
    id: string,
    patch: Record<string, unknown>,
    options: RequestOptions = {},
  ): Promise<void> {
    const action = "update the model";
    const path = `/v1/models/${checkId(id, action)}`;
    if (!isRecord(patch)) {
      throw new TypeError(`Cannot ${action} as 'patch' is not an object`);
    }
    await this.#send(
      { method: "PATCH", path, action, json: patch, emptyOk: true },
      options,
    );
  }

  /**
   * Deletes a model with `DELETE /v1/models/{id}?hard=true|false`.
   *
   * @param id Model id.
   * @param options Signal, timeout, and `hard` (delete for good; default `false`).
   */
  async deleteModel(
    id: string,
    options: RequestOptions & { hard?: boolean } = {},
  ): Promise<void> {
    const action = "delete the model";
    const path = `/v1/models/${checkId(id, action)}`;
    const { hard = false } = options;
    if (typeof hard !== "boolean") {
      throw new TypeError(`Cannot ${action} as 'hard' must be a boolean`);
    }
    await this.#send({
      method: "DELETE",
      path,
      query: `?hard=${hard}`,
      action,
      emptyOk: true,
    }, options);
  }

  /**
   * Lists a model's stored metrics with `GET /v1/models/{id}/metrics`.
   *
   * @param id Model id.
   * @param options Signal and timeout.
   * @returns The metrics per epoch, as the server sorted them.
   */
  async listMetrics(
    id: string,
    options: RequestOptions = {},
  ): Promise<StoredEpochMetrics[]> {
    const action = "list the metrics";
    const path = `/v1/models/${checkId(id, action)}/metrics`;
    const envelope = await this.#send({ method: "GET", path, action }, options);
    const data = envelope.data;
    if (
      !Array.isArray(data) ||
      !data.every((item) =>
        isRecord(item) && typeof item.epoch === "number" &&
        isRecord(item.metrics)
      )
    ) {
      throw this.#badReply(
        "GET",
        path,
        action,
        "has no list of { epoch, metrics } in 'data'",
      );
    }
    return data as StoredEpochMetrics[];
  }

  /**
   * Sends metrics per epoch with `POST /v1/models/{id}`; each epoch's
   * metrics travel as a JSON string, as the protocol requires. An empty
   * collection sends nothing.
   *
   * @param id Model id.
   * @param metrics Metrics keyed by epoch.
   * @param options Signal and timeout.
   */
  async uploadMetrics(
    id: string,
    metrics: ReadonlyMap<number, EpochMetrics> | Record<string, EpochMetrics>,
    options: RequestOptions = {},
  ): Promise<void> {
    const action = "upload the metrics";
    const path = `/v1/models/${checkId(id, action)}`;
    const entries: Array<[unknown, unknown]> = metrics instanceof Map
      ? [...metrics.entries()]
      : isRecord(metrics)
      ? Object.entries(metrics)
      : (() => {
        throw new TypeError(
          `Cannot ${action} as 'metrics' must be a Map or a record keyed by epoch`,
        );
      })();
    const wire: Record<string, string> = {};
    for (const [key, value] of entries) {
      const epoch = Number(key);
      if (
        !Number.isInteger(epoch) || epoch < 0 || String(epoch) !== String(key)
      ) {
        throw new RangeError(
          `Cannot ${action} as epoch ${
            String(key)
          } is not a non-negative integer`,
        );
      }
      if (!isRecord(value)) {
        throw new TypeError(
          `Cannot ${action} as the metrics of epoch ${epoch} are not an object`,
        );
      }
      wire[String(epoch)] = JSON.stringify(value);
    }
    if (Object.keys(wire).length === 0) return;
    await this.#send({
      method: "POST",
      path,
      action,
      json: { type: "metrics", metrics: wire },
      emptyOk: true,
    }, options);
  }

  /**
   * Uploads weights with `POST /v1/models/{id}/upload` as a streamed
   * `multipart/form-data` body (fields `epoch`, `type`, `isBest` or `map`,
   * the file part `last.pt` or `best.pt`, then its `sha256`), never holding
   * the file in memory.
   *
   * The file's size is taken when the call starts: bytes appended later are
   * not sent, and a file that shrinks fails the upload with a
   * {@linkcode HUBError}. A missing file fails before anything is sent. The
   * `timeout` limits the time without progress, not the whole upload.
   * Progress is reported from body bytes, `loaded === total` exactly once,
   * and never after the returned promise settles; a throwing `onProgress`
   * is reported once through the logger and does not break the upload.
   *
   * @param id Model id.
   * @param options The epoch, the file, the type, and hooks.
   * @returns The size and sha256 the server stored.
   * @throws {HUBRequestError} If the server refused it; the `Checksum mismatch` 400 is retriable.
   */
  async uploadModel(
    id: string,
    options: UploadModelOptions,
  ): Promise<UploadResult> {
    const action = "upload the weights";
    const path = `/v1/models/${checkId(id, action)}/upload`;
    if (!isRecord(options)) {
      throw new TypeError(`Cannot ${action} as 'options' is not an object`);
    }
    const { epoch, file, type, isBest = false, map = 0, onProgress } = options;
    if (!Number.isInteger(epoch) || epoch < 0) {
      throw new RangeError(
        `Cannot ${action} as 'epoch' must be a non-negative integer, got ${epoch}`,
      );
    }
    if (type !== "epoch" && type !== "final") {
      throw new TypeError(
        `Cannot ${action} as 'type' must be "epoch" or "final"`,
      );
    }
    if (typeof isBest !== "boolean") {
      throw new TypeError(`Cannot ${action} as 'isBest' must be a boolean`);
    }
    if (typeof map !== "number" || !Number.isFinite(map)) {
      throw new TypeError(`Cannot ${action} as 'map' must be a finite number`);
    }
    if (onProgress !== undefined && typeof onProgress !== "function") {
      throw new TypeError(`Cannot ${action} as 'onProgress' is not a function`);
    }
    if (options.timeout !== undefined) checkTimeout(options.timeout, action);
    options.signal?.throwIfAborted();
    this.#signal?.throwIfAborted();

    const partName = UPLOAD_FILE_PARTS[type];
    const upload = await createMultipartUpload({
      file,
      partName,
      fields: type === "epoch"
        ? [["epoch", String(epoch)], ["type", type], [
          "isBest",
          isBest ? "True" : "False",
        ]]
        : [["epoch", String(epoch)], ["type", type], ["map", String(map)]],
    });
    const body = upload.body({
      onWarning: (message) => this.#logger.warn(message),
      // An injected fetch may keep chunks (e.g. buffer the body): keep them.
      releaseChunks: this.#nativeFetch,
      onProgress: onProgress === undefined
        ? undefined
        : (progress: UploadProgress) => onProgress(progress),
    });
    try {
      const envelope = await this.#send({
        method: "POST",
        path,
        action,
        upload: {
          body,
          contentType: upload.contentType,
          contentLength: upload.contentLength,
        },
      }, options);
      const data = envelope.data;
      const sent = body.sha256();
      if (
        !isRecord(data) || typeof data.size !== "number" ||
        typeof data.sha256 !== "string"
      ) {
        throw this.#badReply(
          "POST",
          path,
          action,
          "has no 'data.size' and 'data.sha256'",
        );
      }
      if (
        data.size !== upload.fileSize ||
        (sent !== undefined && data.sha256 !== sent)
      ) {
        throw new HUBRequestError(
          `Cannot ${action} as the server stored ${data.size} bytes with sha256 ${data.sha256} but ${upload.fileSize} bytes with sha256 ${sent} were sent: retry the upload`,
          { method: "POST", path, status: 200, retriable: true },
        );
      }
      return { size: data.size, sha256: data.sha256 };
    } finally {
      body.finish();
    }
  }

  /**
   * Tells the server the trainer is alive with
   * `POST /v1/agent/heartbeat/models/{id}`.
   *
   * @param id Model id.
   * @param body The agent id from the previous beat (or `null`), and the agent name (default: the client's).
   * @param options Signal and timeout.
   * @returns The agent id the server assigned (adopt it).
   */
  async heartbeat(
    id: string,
    body: { agentId: string | null; agent?: string },
    options: RequestOptions = {},
  ): Promise<{ agentId: string | null }> {
    const action = "send the heartbeat";
    const path = `/v1/agent/heartbeat/models/${checkId(id, action)}`;
    if (!isRecord(body)) {
      throw new TypeError(`Cannot ${action} as 'body' is not an object`);
    }
    const { agentId = null, agent = this.agent } = body;
    if (agentId !== null && typeof agentId !== "string") {
      throw new TypeError(
        `Cannot ${action} as 'agentId' must be a string or null`,
      );
    }
    const envelope = await this.#send({
      method: "POST",
      path,
      action,
      json: { agent, agentId },
    }, options);
    const data = envelope.data;
    if (!isRecord(data)) {
      throw this.#badReply("POST", path, action, "has no 'data'");
    }
    const returned = data.agentId;
    if (returned === undefined) return { agentId };
    if (returned !== null && typeof returned !== "string") {
      throw this.#badReply(
        "POST",
        path,
        action,
        "has a malformed 'data.agentId'",
      );
    }
    return { agentId: returned };
  }

  /**
   * Asks the server to export a model with `POST /v1/models/{id}/export`.
   *
   * @param id Model id.
   * @param format Export format, e.g. `"onnx"`.
   * @param options Signal and timeout.
   */
  async exportModel(
    id: string,
    format: string,
    options: RequestOptions = {},
  ): Promise<void> {
    const action = "export the model";
    const path = `/v1/models/${checkId(id, action)}/export`;
    if (typeof format !== "string" || format === "") {
      throw new TypeError(
        `Cannot ${action} as 'format' must be a non-empty string`,
      );
    }
    await this.#send(
      { method: "POST", path, action, json: { format }, emptyOk: true },
      options,
    );
  }

  /**
   * The HUB's instance id from its latest reply (`x-hub-instance`): the same
   * HUB keeps it across restarts and addresses. `undefined` until a reply
   * named it.
   */
  get instanceId(): string | undefined {
    return this.#instanceId;
  }

  #send(call: Call, options: RequestOptions): Promise<Envelope> {
    return exchange(this.#context, call, options);
  }

  #badReply(
    method: string,
    path: string,
    action: string,
    what: string,
    status = 200,
  ): HUBRequestError {
    return badReply(this.#context, method, path, action, what, status);
  }
}
