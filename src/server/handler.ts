/**
 * The local HUB as a fetch-style handler: `(request) => Promise<Response>`.
 *
 * Serves the v1 wire protocol of `HUB_PROTOCOL.md` (the one the Python
 * `hub-sdk` and Ultralytics trainers speak) from files under a data
 * directory, with the `{success, data, message}` envelope on every JSON
 * reply.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import { type FileHandle, open, unlink } from "node:fs/promises";
import type {
  ModelDocument,
  ModelStatus,
  StoredEpochMetrics,
} from "../protocol/types.ts";
import { getBoundary, MultipartError, parseMultipart } from "./multipart.ts";
import {
  type IndexEntry,
  PAGE_EPOCHS,
  type PageWeights,
  renderIndexPage,
  renderMessagePage,
  renderModelPage,
  renderUnauthorizedPage,
} from "./page.ts";
import {
  HubStore,
  type ModelRecord,
  type NewModel,
  type StoredConfig,
  type StoredMetrics,
  type WeightsKind,
} from "./store.ts";

/** Options of {@linkcode createHubHandler}. */
export interface HubHandlerOptions {
  /**
   * Directory for models, metrics and weights; created when missing, and
   * reloaded as is by a later server on the same directory.
   */
  dataDir: string;
  /**
   * API keys the server accepts (`x-api-key` or `authorization: Bearer`).
   * When empty or missing, every request is accepted, with or without a key.
   *
   * @default {undefined}
   */
  apiKeys?: readonly string[] | undefined;
  /**
   * Largest accepted upload request body in bytes; larger bodies get 413.
   *
   * @default {2147483648}
   */
  maxUploadBytes?: number | undefined;
  /**
   * Base URL for the absolute weight URLs in model documents
   * (`resume`, `weights`), e.g. when the server sits behind a proxy.
   *
   * @default {the request's origin}
   */
  publicUrl?: string | undefined;
  /**
   * Clock in milliseconds since the epoch, for timestamps.
   *
   * @default {Date.now}
   */
  now?: (() => number) | undefined;
  /**
   * When aborted, uploads still being received are cancelled and answered
   * 503, so that a server can shut down while a client stalls mid-upload.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
  /**
   * Receives unexpected errors (answered with 500). Never given an API key.
   *
   * @default {logs the error with console.error}
   */
  onError?: ((error: unknown) => void) | undefined;
}

/** A fetch-style request handler. */
export type HubHandler = (request: Request) => Promise<Response>;

/**
 * The signal that tells a handler its client went away. Only used on Bun:
 * Deno's `request.signal` also aborts after every successful response (and
 * warns about it), while its request body stream already errors when the
 * client disconnects.
 */
function disconnectSignal(request: Request): AbortSignal | undefined {
  return "Bun" in globalThis ? request.signal : undefined;
}

/** Default {@linkcode HubHandlerOptions.maxUploadBytes}: 2 GiB. */
const DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;
const MAX_JSON_BYTES = 16 * 1024 * 1024;
const FILE_CHUNK_BYTES = 1 << 20;

class HttpError extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.headers = headers;
  }
}

/**
 * The request body could not be read to its end: the client disconnected or
 * cancelled the request mid-body. Answered 400, never reported as a server
 * error.
 */
class BodyAbortedError extends HttpError {
  constructor(message: string) {
    super(400, message);
    this.name = "BodyAbortedError";
  }
}

/** Message of an upload whose body ended early (the connection failed). */
const UPLOAD_ABORTED = "Upload aborted: the request body ended early";
/** Message of a JSON request whose body ended early. */
const REQUEST_ABORTED = "Request aborted: the request body ended early";

/**
 * Names of the errors a runtime raises when a request body cannot be read
 * because the connection went away: Deno's `BadResource` ("Cannot read
 * request body as underlying resource unavailable") and its I/O error
 * classes, Bun's `AbortError` DOMException ("The connection was closed.").
 */
const BODY_READ_ERRORS = new Set([
  "BadResource",
  "Http",
  "Interrupted",
  "ConnectionReset",
  "ConnectionAborted",
  "BrokenPipe",
  "UnexpectedEof",
  "AbortError",
]);

/**
 * Whether an error means the request body could not be read to its end.
 * Only for errors raised by reading a body: a disk error while storing an
 * upload is a server error.
 */
function isBodyReadFailure(error: unknown): boolean {
  if (error instanceof BodyAbortedError) return true;
  if (error instanceof MultipartError) return error.aborted;
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === "string" && BODY_READ_ERRORS.has(name);
}

function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Headers of every HTML page: no scripts, no external resources. */
const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

function html(request: Request, status: number, body: string): Response {
  return new Response(request.method === "HEAD" ? null : body, {
    status,
    headers: PAGE_HEADERS,
  });
}

/** Most models the index page lists (most recently updated first). */
const INDEX_MODELS = 500;

/**
 * Whether a request for `/` asks for HTML: a browser's `Accept` names
 * `text/html` before any JSON type. Clients that send no `Accept`, `*\/*` or
 * `application/json` get the JSON health reply.
 */
function wantsHtml(request: Request): boolean {
  const accept = request.headers.get("accept")?.toLowerCase() ?? "";
  const htmlAt = accept.indexOf("text/html");
  if (htmlAt === -1) return false;
  const jsonAt = accept.indexOf("application/json");
  return jsonAt === -1 || htmlAt < jsonAt;
}

function ok(data: unknown, message: string, status = 200): Response {
  return json(status, { success: true, data, message });
}

/** `GET /v1`, and `GET /` for clients that do not ask for HTML. */
function healthReply(): Response {
  return ok({ name: "hub-session local HUB", api: "v1" }, "HUB is running");
}

function fail(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return json(status, { success: false, message }, headers);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** Reads a body up to `limit` bytes, counting streamed bytes too. */
async function readBody(request: Request, limit: number): Promise<string> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) {
    throw new HttpError(
      413,
      `Cannot accept the request body as it exceeds ${limit} bytes`,
    );
  }
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch {
        throw new BodyAbortedError(REQUEST_ABORTED);
      }
      const { done, value } = chunk;
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        throw new HttpError(
          413,
          `Cannot accept the request body as it exceeds ${limit} bytes`,
        );
      }
      chunks.push(value);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function readJson(request: Request): Promise<unknown> {
  const text = await readBody(request, MAX_JSON_BYTES);
  if (text.trim() === "") {
    throw new HttpError(400, "Cannot parse the request body as it is empty");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HttpError(
      400,
      `Cannot parse the request body as JSON: ${(error as Error).message}`,
    );
  }
}

async function readJsonObject(
  request: Request,
): Promise<Record<string, unknown>> {
  const body = await readJson(request);
  if (!isObject(body)) {
    throw new HttpError(
      400,
      "Cannot accept the request body as it is not a JSON object",
    );
  }
  return body;
}

/** Parses a JSON metrics string; Python's `NaN`/`Infinity` become `null`. */
function parseMetricsString(epoch: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    const repaired = text.replace(
      /(?<=[:\[,]\s*)-?(?:NaN|Infinity)(?=\s*[,}\]])/g,
      "null",
    );
    try {
      return JSON.parse(repaired);
    } catch (error) {
      throw new HttpError(
        400,
        `Cannot parse the metrics of epoch ${epoch} as JSON: ${
          (error as Error).message
        }`,
      );
    }
  }
}

function parseMetrics(
  body: Record<string, unknown>,
): Map<number, StoredMetrics> {
  if (body.type !== "metrics") {
    throw new HttpError(
      400,
      `Cannot handle the request as its type ${
        JSON.stringify(body.type ?? null)
      } is not "metrics"`,
    );
  }
  const metrics = body.metrics;
  if (!isObject(metrics)) {
    throw new HttpError(
      400,
      'Cannot accept the metrics as "metrics" is not an object of epochs',
    );
  }
  const result = new Map<number, StoredMetrics>();
  for (const [key, raw] of Object.entries(metrics)) {
    if (!/^\d{1,9}$/.test(key)) {
      throw new HttpError(
        400,
        `Cannot accept the metrics as the epoch key ${
          JSON.stringify(key)
        } is not a non-negative integer`,
      );
    }
    const value = typeof raw === "string" ? parseMetricsString(key, raw) : raw;
    if (!isObject(value)) {
      throw new HttpError(
        400,
        `Cannot accept the metrics of epoch ${key} as they are not an object of numbers`,
      );
    }
    const clean: StoredMetrics = {};
    for (const [name, metric] of Object.entries(value)) {
      if (
        metric !== null && (typeof metric !== "number" || !isFinite(metric))
      ) {
        throw new HttpError(
          400,
          `Cannot accept the metric ${
            JSON.stringify(name)
          } of epoch ${key} as it is not a number`,
        );
      }
      clean[name] = metric;
    }
    result.set(Number(key), clean);
  }
  return result;
}

const DEFAULT_CONFIG: StoredConfig = {
  batchSize: -1,
  epochs: 300,
  imageSize: 640,
  patience: 100,
  device: "",
  cache: "ram",
};

function readConfig(
  value: unknown,
  base: StoredConfig,
): StoredConfig {
  if (value === undefined) return { ...base };
  if (!isObject(value)) {
    throw new HttpError(400, 'Cannot accept "config" as it is not an object');
  }
  const config = { ...base };
  for (const key of ["batchSize", "epochs", "imageSize", "patience"] as const) {
    const v = value[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !isFinite(v)) {
      throw new HttpError(
        400,
        `Cannot accept "config.${key}" as it is not a number`,
      );
    }
    config[key] = v;
  }
  for (const key of ["device", "cache"] as const) {
    const v = value[key];
    if (v === undefined || v === null) continue;
    if (
      typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean"
    ) {
      throw new HttpError(
        400,
        `Cannot accept "config.${key}" as it is not a string`,
      );
    }
    config[key] = String(v);
  }
  return config;
}

function readName(
  container: unknown,
  field: string,
  required: boolean,
): string | undefined {
  if (container === undefined || container === null) {
    if (required) {
      throw new HttpError(
        400,
        `Cannot accept the model as "${field}" is missing`,
      );
    }
    return undefined;
  }
  if (!isObject(container)) {
    throw new HttpError(
      400,
      `Cannot accept the model as "${
        field.split(".").slice(0, -1).join(".")
      }" is not an object`,
    );
  }
  const name = container.name;
  if (name === undefined || name === null) {
    if (required) {
      throw new HttpError(
        400,
        `Cannot accept the model as "${field}" is missing`,
      );
    }
    return undefined;
  }
  if (typeof name !== "string") {
    throw new HttpError(
      400,
      `Cannot accept the model as "${field}" is not a string`,
    );
  }
  if (required && name.trim() === "") {
    throw new HttpError(400, `Cannot accept the model as "${field}" is empty`);
  }
  return name;
}

function readLineage(
  lineage: unknown,
): { architecture: string; parent: string | undefined } {
  if (!isObject(lineage)) {
    throw new HttpError(
      400,
      lineage === undefined
        ? 'Cannot accept the model as "lineage.architecture.name" is missing'
        : 'Cannot accept the model as "lineage" is not an object',
    );
  }
  const architecture = readName(
    lineage.architecture,
    "lineage.architecture.name",
    true,
  )!;
  const parent = readName(lineage.parent, "lineage.parent.name", false);
  return {
    architecture,
    parent: parent === undefined || parent === "" ? undefined : parent,
  };
}

function readNewModel(body: Record<string, unknown>): NewModel {
  const config = readConfig(body.config, DEFAULT_CONFIG);
  const dataset = readName(body.dataset, "dataset.name", false) ?? "";
  const { architecture, parent } = readLineage(body.lineage);
  const name = readName(body.meta, "meta.name", false) ?? architecture;
  return { name, dataset, architecture, parent, config };
}

const COMPUTED_FIELDS = new Set([
  "id",
  "cfg",
  "data",
  "weights",
  "resume",
  "has_last_weights",
  "has_best_weights",
  "is_pretrained",
  "is_custom",
  "train_args",
  "batch_size",
  "epochs",
  "imgsz",
  "patience",
  "device",
  "cache",
  "createdAt",
  "updatedAt",
  "heartbeat",
  "checkpoints",
  "exports",
  "name",
]);

function applyPatch(record: ModelRecord, patch: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(patch)) {
    switch (key) {
      case "config":
        record.config = readConfig(value, record.config);
        break;
      case "meta": {
        const name = readName(value, "meta.name", false);
        if (name !== undefined) record.name = name;
        break;
      }
      case "dataset":
        record.dataset = readName(value, "dataset.name", false) ?? "";
        break;
      case "lineage": {
        const lineage = readLineage(value);
        record.architecture = lineage.architecture;
        if (lineage.parent === undefined) delete record.parent;
        else record.parent = lineage.parent;
        break;
      }
      case "status":
        if (value !== "new" && value !== "training" && value !== "trained") {
          throw new HttpError(
            400,
            'Cannot update "status" as it is not "new", "training" or "trained"',
          );
        }
        record.status = value satisfies ModelStatus;
        break;
      default:
        if (COMPUTED_FIELDS.has(key)) {
          throw new HttpError(
            400,
            `Cannot update "${key}" as the server computes it`,
          );
        }
        if (value === null) delete record.extra[key];
        else record.extra[key] = value;
    }
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function renderDocument(
  record: ModelRecord,
  base: string,
  withToken: boolean,
  epochsCompleted: number,
): ModelDocument {
  const fileUrl = (kind: WeightsKind): string =>
    `${base}/v1/models/${record.id}/files/${kind}.pt${
      withToken ? `?token=${record.downloadToken}` : ""
    }`;
  const { last, best } = record.weights;
  const c = record.config;
  const cfg = /\.ya?ml$/.test(record.architecture)
    ? record.architecture
    : `${record.architecture}.yaml`;
  const weights = best !== undefined ? fileUrl("best") : record.parent;
  return {
    ...record.extra,
    id: record.id,
    name: record.name,
    status: record.status,
    createdAt: iso(record.createdAt),
    updatedAt: iso(record.updatedAt),
    meta: { name: record.name },
    data: record.dataset,
    dataset: { name: record.dataset },
    cfg,
    lineage: {
      architecture: { name: record.architecture },
      parent: record.parent === undefined ? {} : { name: record.parent },
    },
    ...(weights === undefined ? {} : { weights }),
    ...(last === undefined ? {} : { resume: fileUrl("last") }),
    has_last_weights: last !== undefined,
    has_best_weights: best !== undefined,
    is_pretrained: record.parent !== undefined,
    is_custom: record.parent === undefined,
    train_args: {
      batch: c.batchSize,
      epochs: c.epochs,
      imgsz: c.imageSize,
      patience: c.patience,
      device: c.device,
      cache: c.cache,
      data: record.dataset,
    },
    batch_size: c.batchSize,
    epochs: c.epochs,
    imgsz: c.imageSize,
    patience: c.patience,
    device: c.device,
    cache: c.cache,
    config: { ...c },
    checkpoints: {
      last: last === undefined
        ? null
        : { ...last, uploadedAt: iso(last.uploadedAt) },
      best: best === undefined
        ? null
        : { ...best, uploadedAt: iso(best.uploadedAt) },
    },
    ...(best?.map === undefined ? {} : { map: best.map }),
    epochs_completed: epochsCompleted,
    heartbeat: record.heartbeat === undefined ? null : {
      agentId: record.heartbeat.agentId,
      agent: record.heartbeat.agent,
      lastSeen: iso(record.heartbeat.lastSeen),
    },
    exports: record.exports.map((e) => ({
      format: e.format,
      requestedAt: iso(e.requestedAt),
    })),
  };
}

function parseBool(value: string, field: string): boolean {
  switch (value.trim().toLowerCase()) {
    case "true":
    case "1":
      return true;
    case "false":
    case "0":
    case "":
      return false;
    default:
      throw new HttpError(
        400,
        `Cannot accept the upload as "${field}" is not True or False`,
      );
  }
}

function createFileStream(
  handle: FileHandle,
  size: number,
): ReadableStream<Uint8Array> {
  let position = 0;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await handle.close().catch(() => {});
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller): Promise<void> {
      try {
        const want = Math.min(FILE_CHUNK_BYTES, size - position);
        if (want <= 0) {
          await close();
          controller.close();
          return;
        }
        const chunk = new Uint8Array(want);
        const { bytesRead } = await handle.read(chunk, 0, want, position);
        if (bytesRead === 0) {
          await close();
          controller.close();
          return;
        }
        position += bytesRead;
        controller.enqueue(
          bytesRead === want ? chunk : chunk.subarray(0, bytesRead),
        );
      } catch (error) {
        await close();
        controller.error(error);
      }
    },
    async cancel(): Promise<void> {
      await close();
    },
  }, { highWaterMark: 0 });
}

interface Route {
  name:
    | "root"
    | "health"
    | "page"
    | "auth"
    | "models"
    | "model"
    | "metrics"
    | "upload"
    | "export"
    | "file"
    | "heartbeat";
  methods: readonly string[];
  id?: string;
  file?: string;
}

function matchRoute(pathname: string): Route | undefined {
  const parts = pathname.split("/").filter((p) => p !== "");
  const [v1, a, b, c, d, e] = parts;
  if (parts.length === 0) return { name: "root", methods: ["GET", "HEAD"] };
  if (v1 === "models" && parts.length === 2 && a !== undefined) {
    return { name: "page", id: a, methods: ["GET", "HEAD"] };
  }
  if (v1 !== "v1") return undefined;
  if (parts.length === 1) return { name: "health", methods: ["GET", "HEAD"] };
  if (a === "auth" && parts.length === 2) {
    return { name: "auth", methods: ["POST"] };
  }
  if (a === "models") {
    if (parts.length === 2) return { name: "models", methods: ["POST"] };
    if (b === undefined) return undefined;
    if (parts.length === 3) {
      return {
        name: "model",
        id: b,
        methods: ["GET", "POST", "PATCH", "DELETE"],
      };
    }
    if (parts.length === 4 && c === "metrics") {
      return { name: "metrics", id: b, methods: ["GET"] };
    }
    if (parts.length === 4 && c === "upload") {
      return { name: "upload", id: b, methods: ["POST"] };
    }
    if (parts.length === 4 && c === "export") {
      return { name: "export", id: b, methods: ["POST"] };
    }
    if (parts.length === 5 && c === "files" && d !== undefined) {
      return { name: "file", id: b, file: d, methods: ["GET", "HEAD"] };
    }
    return undefined;
  }
  if (
    a === "agent" && b === "heartbeat" && c === "models" && d !== undefined &&
    parts.length === 5 && e === undefined
  ) {
    return { name: "heartbeat", id: d, methods: ["POST"] };
  }
  return undefined;
}

function validateOptions(options: HubHandlerOptions): void {
  if (!isObject(options)) {
    throw new TypeError(
      "Cannot create the HUB handler as options is not an object",
    );
  }
  if (typeof options.dataDir !== "string" || options.dataDir === "") {
    throw new TypeError(
      "Cannot create the HUB handler as dataDir is not a non-empty string",
    );
  }
  if (options.apiKeys !== undefined) {
    if (
      !Array.isArray(options.apiKeys) ||
      !options.apiKeys.every((k) => typeof k === "string" && k !== "")
    ) {
      throw new TypeError(
        "Cannot create the HUB handler as apiKeys is not a list of non-empty strings",
      );
    }
  }
  const max = options.maxUploadBytes;
  if (max !== undefined && (!Number.isSafeInteger(max) || max < 0)) {
    throw new RangeError(
      `Cannot create the HUB handler as maxUploadBytes is not a non-negative integer: ${max}`,
    );
  }
  if (options.publicUrl !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.publicUrl);
    } catch {
      url = undefined;
    }
    if (url === undefined || !/^https?:$/.test(url.protocol)) {
      throw new TypeError(
        `Cannot create the HUB handler as publicUrl is not an http(s) URL: ${options.publicUrl}`,
      );
    }
  }
  if (options.now !== undefined && typeof options.now !== "function") {
    throw new TypeError(
      "Cannot create the HUB handler as now is not a function",
    );
  }
  if (
    options.signal !== undefined && !(options.signal instanceof AbortSignal)
  ) {
    throw new TypeError(
      "Cannot create the HUB handler as signal is not an AbortSignal",
    );
  }
  if (options.onError !== undefined && typeof options.onError !== "function") {
    throw new TypeError(
      "Cannot create the HUB handler as onError is not a function",
    );
  }
}

/**
 * Creates the local HUB as a fetch-style handler.
 *
 * Routes (all replies JSON `{success, data, message}` except weight files):
 * `POST /v1/auth`, `POST /v1/models`, `GET|POST|PATCH|DELETE /v1/models/{id}`,
 * `GET /v1/models/{id}/metrics`, `POST /v1/models/{id}/upload`,
 * `POST /v1/models/{id}/export`, `GET /v1/models/{id}/files/{last.pt|best.pt}`
 * and `POST /v1/agent/heartbeat/models/{id}`. Unknown routes and models
 * answer 404, wrong methods 405, bad payloads 400, missing or wrong keys 401
 * (when `apiKeys` is set) and oversized uploads 413. A request whose body
 * ends early (the client disconnected mid-upload) answers 400
 * `Upload aborted...` / `Request aborted...` and is not reported to
 * `onError`.
 *
 * HTML pages (no scripts): `GET /models/{id}` shows a model (the page a
 * session links as `<web root>/models/<id>`: status, dataset, architecture,
 * epochs, the last 50 epochs' metrics, links to the JSON document and the
 * weights) and `GET /` lists the models when the client asks for
 * `text/html`; other clients get the JSON health reply there, as at
 * `GET /v1`. With `apiKeys` set, pages need a key like the API
 * (`x-api-key` or `authorization: Bearer`; never in the URL) and answer 401
 * with a page that shows no model data otherwise; the health reply needs no
 * key and carries no data.
 *
 * The data directory is opened on the first request.
 *
 * @param options Data directory, keys, upload limit, public URL and clock.
 * @returns The handler.
 *
 * @example Create a model through the handler, without a network server
 * ```ts
 * import { createHubHandler } from "./mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const handle = createHubHandler({ dataDir });
 * const response = await handle(
 *   new Request("http://127.0.0.1/v1/models", {
 *     method: "POST",
 *     body: JSON.stringify({
 *       config: { epochs: 10 },
 *       dataset: { name: "coco8.yaml" },
 *       lineage: { architecture: { name: "yolov8n" }, parent: {} },
 *       meta: { name: "yolov8n.yaml" },
 *     }),
 *   }),
 * );
 * const { data } = await response.json();
 * console.assert(response.status === 200 && data.id.length === 20);
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 */
export function createHubHandler(options: HubHandlerOptions): HubHandler {
  validateOptions(options);
  const {
    dataDir,
    apiKeys = [],
    maxUploadBytes = DEFAULT_MAX_UPLOAD_BYTES,
    publicUrl,
    now = Date.now,
    signal,
    onError = (error: unknown): void => {
      console.error("HUB: unexpected server error", error);
    },
  } = options;
  const keyDigests = apiKeys.map(digest);
  const uploadSignal = (request: Request): AbortSignal | undefined => {
    const signals = [disconnectSignal(request), signal].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    return signals.length <= 1 ? signals[0] : AbortSignal.any(signals);
  };
  const base = publicUrl?.replace(/\/+$/, "");
  let storePromise: Promise<HubStore> | undefined;
  const getStore = (): Promise<HubStore> => {
    storePromise ??= HubStore.open(dataDir);
    storePromise.catch(() => {
      storePromise = undefined;
    });
    return storePromise;
  };

  function presentedKey(request: Request): string | undefined {
    const key = request.headers.get("x-api-key");
    if (key !== null && key !== "") return key;
    const auth = request.headers.get("authorization");
    const match = auth === null ? null : /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return match?.[1];
  }

  function keyIsValid(key: string | undefined): boolean {
    if (key === undefined) return false;
    const candidate = digest(key);
    let valid = false;
    for (const known of keyDigests) {
      // No short-circuit: every configured key is compared.
      valid = timingSafeEqual(candidate, known) || valid;
    }
    return valid;
  }

  function tokenIsValid(token: string | null, expected: string): boolean {
    if (token === null) return false;
    return timingSafeEqual(digest(token), digest(expected));
  }

  async function requireModel(
    store: HubStore,
    id: string,
  ): Promise<ModelRecord> {
    const record = await store.get(id);
    if (record === undefined) {
      throw new HttpError(404, `Cannot find the model "${id}"`);
    }
    return record;
  }

  async function handleUpload(
    request: Request,
    store: HubStore,
    id: string,
  ): Promise<Response> {
    await requireModel(store, id);
    const declared = request.headers.get("content-length");
    if (declared !== null && Number(declared) > maxUploadBytes) {
      request.body?.cancel().catch(() => {});
      return fail(
        413,
        `Cannot accept the upload as its ${declared} bytes exceed the limit of ${maxUploadBytes} bytes`,
      );
    }
    const boundary = getBoundary(request.headers.get("content-type"));
    if (boundary === undefined) {
      throw new HttpError(
        400,
        "Cannot accept the upload as it is not multipart/form-data with a boundary",
      );
    }
    if (request.body === null) {
      throw new HttpError(400, "Cannot accept the upload as it has no body");
    }
    let parsed;
    try {
      parsed = await parseMultipart(request.body, {
        boundary,
        tempDir: store.tempDir,
        maxBytes: maxUploadBytes,
        signal: uploadSignal(request),
      });
    } catch (error) {
      if (signal?.aborted) {
        throw new HttpError(
          503,
          "Cannot finish the upload as the server is shutting down",
        );
      }
      if (
        disconnectSignal(request)?.aborted || isBodyReadFailure(error)
      ) {
        // The client went away mid-body: not a server error. The temporary
        // file is already deleted.
        throw new BodyAbortedError(UPLOAD_ABORTED);
      }
      if (error instanceof MultipartError) {
        throw new HttpError(error.status, error.message);
      }
      throw error;
    }
    const { fields, file } = parsed;
    let committed = false;
    try {
      const type = fields.get("type");
      if (type !== "epoch" && type !== "final") {
        throw new HttpError(
          400,
          `Cannot accept the upload as "type" is ${
            JSON.stringify(type ?? null)
          }, not "epoch" or "final"`,
        );
      }
      const epochText = fields.get("epoch");
      if (epochText === undefined || !/^\s*\d{1,9}\s*$/.test(epochText)) {
        throw new HttpError(
          400,
          `Cannot accept the upload as "epoch" is ${
            JSON.stringify(epochText ?? null)
          }, not a non-negative integer`,
        );
      }
      const epoch = Number(epochText);
      const expected = type === "final" ? "best.pt" : "last.pt";
      if (file === undefined) {
        throw new HttpError(
          400,
          `Cannot accept the upload as it has no file part "${expected}"`,
        );
      }
      if (file.field !== expected) {
        throw new HttpError(
          400,
          `Cannot accept the upload as a "${type}" upload needs the file part "${expected}", not "${file.field}"`,
        );
      }
      const checksum = fields.get("sha256");
      if (checksum !== undefined) {
        const want = checksum.trim().toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(want)) {
          throw new HttpError(
            400,
            'Cannot accept the upload as "sha256" is not 64 hexadecimal digits',
          );
        }
        if (want !== file.sha256) {
          throw new HttpError(
            400,
            `Checksum mismatch: the file part's sha256 is ${file.sha256}, the client sent ${want}`,
          );
        }
      }
      let info;
      if (type === "epoch") {
        const isBest = parseBool(fields.get("isBest") ?? "", "isBest");
        info = {
          epoch,
          size: file.size,
          sha256: file.sha256,
          uploadedAt: now(),
          isBest,
        };
      } else {
        const mapText = fields.get("map");
        const map = mapText === undefined || mapText.trim() === ""
          ? undefined
          : Number(mapText);
        if (map !== undefined && !isFinite(map)) {
          throw new HttpError(
            400,
            `Cannot accept the upload as "map" is ${
              JSON.stringify(mapText)
            }, not a number`,
          );
        }
        info = {
          epoch,
          size: file.size,
          sha256: file.sha256,
          uploadedAt: now(),
          ...(map === undefined ? {} : { map }),
        };
      }
      const kind: WeightsKind = type === "final" ? "best" : "last";
      const record = await store.commitWeights(
        id,
        kind,
        file.path,
        info,
        now(),
      );
      committed = true;
      if (record === undefined) {
        throw new HttpError(404, `Cannot find the model "${id}"`);
      }
      return ok(
        { sha256: file.sha256, size: file.size, epoch, type },
        type === "final"
          ? "Model optimized weights uploaded"
          : "Model checkpoint weights uploaded",
      );
    } finally {
      if (!committed && file !== undefined) {
        await unlink(file.path).catch(() => {});
      }
    }
  }

  async function handleFile(
    request: Request,
    store: HubStore,
    id: string,
    name: string,
    authorized: boolean,
  ): Promise<Response> {
    const record = await store.get(id);
    if (
      !authorized &&
      !(record !== undefined &&
        tokenIsValid(
          new URL(request.url).searchParams.get("token"),
          record.downloadToken,
        ))
    ) {
      return fail(
        401,
        "Cannot authenticate the request: missing or invalid API key",
      );
    }
    if (record === undefined) {
      throw new HttpError(404, `Cannot find the model "${id}"`);
    }
    const kind = name === "last.pt"
      ? "last"
      : name === "best.pt"
      ? "best"
      : undefined;
    const info = kind === undefined ? undefined : record.weights[kind];
    if (kind === undefined || info === undefined) {
      throw new HttpError(
        404,
        `Cannot find the file "${name}" of the model "${id}"`,
      );
    }
    let handle: FileHandle;
    try {
      handle = await open(store.weightsPath(id, kind), "r");
    } catch {
      throw new HttpError(
        404,
        `Cannot find the file "${name}" of the model "${id}"`,
      );
    }
    const { size } = await handle.stat();
    const headers = {
      "content-type": "application/octet-stream",
      "content-length": String(size),
      "content-disposition": `attachment; filename="${name}"`,
      "etag": `"${info.sha256}"`,
      "x-checksum-sha256": info.sha256,
    };
    if (request.method === "HEAD") {
      await handle.close();
      return new Response(null, { status: 200, headers });
    }
    const bunFile = (globalThis as { Bun?: { file?: (path: string) => Blob } })
      .Bun?.file;
    if (typeof bunFile === "function") {
      // Bun replaces Content-Length of a stream body with chunked encoding;
      // its lazy file blob keeps the length (and is sent with sendfile).
      await handle.close();
      return new Response(bunFile(store.weightsPath(id, kind)), {
        status: 200,
        headers,
      });
    }
    return new Response(createFileStream(handle, size), {
      status: 200,
      headers,
    });
  }

  async function indexPage(store: HubStore): Promise<string> {
    const entries: IndexEntry[] = [];
    for (const modelId of await store.ids()) {
      const record = await store.get(modelId);
      if (record === undefined) continue;
      entries.push({
        id: record.id,
        name: record.name,
        status: record.status,
        dataset: record.dataset,
        updatedAt: record.updatedAt,
      });
    }
    entries.sort((a, b) => b.updatedAt - a.updatedAt);
    return renderIndexPage(
      entries.slice(0, INDEX_MODELS),
      Math.max(0, entries.length - INDEX_MODELS),
    );
  }

  async function modelPage(
    request: Request,
    store: HubStore,
    id: string,
    origin: string,
    withToken: boolean,
  ): Promise<Response> {
    const record = await store.get(id);
    const metrics = await store.listMetrics(id);
    if (record === undefined || metrics === undefined) {
      return html(
        request,
        404,
        renderMessagePage(
          "Model not found",
          `Cannot find the model "${id}" on this HUB`,
        ),
      );
    }
    const weights: PageWeights[] = [];
    for (const kind of ["last", "best"] as const) {
      const info = record.weights[kind];
      if (info === undefined) continue;
      weights.push({
        name: `${kind}.pt`,
        url: `${origin}/v1/models/${record.id}/files/${kind}.pt${
          withToken ? `?token=${record.downloadToken}` : ""
        }`,
        epoch: info.epoch,
        size: info.size,
        sha256: info.sha256,
      });
    }
    const doc = renderDocument(record, origin, withToken, metrics.length);
    return html(
      request,
      200,
      renderModelPage({
        id: record.id,
        name: record.name,
        status: record.status,
        dataset: record.dataset,
        architecture: doc.cfg ?? record.architecture,
        parent: record.parent,
        epochs: record.config.epochs,
        epochsCompleted: metrics.length,
        updatedAt: record.updatedAt,
        metrics: metrics.slice(-PAGE_EPOCHS),
        documentUrl: `${origin}/v1/models/${record.id}`,
        weights,
        heartbeat: record.heartbeat === undefined ? undefined : {
          agent: record.heartbeat.agent,
          lastSeen: record.heartbeat.lastSeen,
        },
      }),
    );
  }

  async function route(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const matched = matchRoute(url.pathname);
    if (matched === undefined) {
      return fail(
        404,
        `Cannot find the route ${request.method} ${url.pathname}`,
      );
    }
    if (!matched.methods.includes(request.method)) {
      return fail(
        405,
        `Cannot ${request.method} ${url.pathname}: allowed ${
          matched.methods.join(", ")
        }`,
        { allow: matched.methods.join(", ") },
      );
    }
    const health = matched.name === "health" ||
      (matched.name === "root" && !wantsHtml(request));
    if (health) return healthReply();
    const authorized = keyDigests.length === 0 ||
      keyIsValid(presentedKey(request));
    if (!authorized && (matched.name === "root" || matched.name === "page")) {
      return html(request, 401, renderUnauthorizedPage());
    }
    if (!authorized && matched.name !== "file") {
      return fail(
        401,
        "Cannot authenticate the request: missing or invalid API key",
      );
    }
    const store = await getStore();
    const origin = base ?? url.origin;
    const id = matched.id ?? "";
    const withToken = keyDigests.length > 0;
    switch (matched.name) {
      case "auth":
        return ok({ uid: "local" }, "Authenticated");
      case "models": {
        const body = await readJsonObject(request);
        const record = await store.create(readNewModel(body), now());
        return ok({ id: record.id }, "Model created");
      }
      case "model": {
        if (request.method === "GET") {
          const record = await requireModel(store, id);
          return ok(
            renderDocument(
              record,
              origin,
              withToken,
              await store.epochCount(id),
            ),
            "Model found",
          );
        }
        if (request.method === "DELETE") {
          const hardText = url.searchParams.get("hard");
          let hard = false;
          if (hardText !== null) {
            try {
              hard = parseBool(hardText, "hard");
            } catch {
              throw new HttpError(
                400,
                `Cannot delete the model as "hard" is ${
                  JSON.stringify(hardText)
                }, not true or false`,
              );
            }
          }
          if (!await store.delete(id, hard, now())) {
            throw new HttpError(404, `Cannot find the model "${id}"`);
          }
          return ok(
            { id, hard },
            hard ? "Model deleted permanently" : "Model deleted",
          );
        }
        await requireModel(store, id);
        const body = await readJsonObject(request);
        if (request.method === "PATCH") {
          const updated = await store.update(
            id,
            (r) => applyPatch(r, body),
            now(),
          );
          if (updated === undefined) {
            throw new HttpError(404, `Cannot find the model "${id}"`);
          }
          return ok(
            renderDocument(
              updated.record,
              origin,
              withToken,
              await store.epochCount(id),
            ),
            "Model updated",
          );
        }
        const metrics = parseMetrics(body);
        const epochs = [...metrics.keys()].sort((a, b) => a - b);
        const updated = await store.appendMetrics(id, metrics, now());
        if (updated === undefined) {
          throw new HttpError(404, `Cannot find the model "${id}"`);
        }
        return ok({ epochs }, "Model metrics uploaded");
      }
      case "metrics": {
        const list = await store.listMetrics(id);
        if (list === undefined) {
          throw new HttpError(404, `Cannot find the model "${id}"`);
        }
        return ok(list as StoredEpochMetrics[], "Model metrics found");
      }
      case "upload":
        return await handleUpload(request, store, id);
      case "export": {
        await requireModel(store, id);
        const body = await readJsonObject(request);
        const format = body.format;
        if (typeof format !== "string" || format.trim() === "") {
          throw new HttpError(
            400,
            'Cannot export the model as "format" is not a non-empty string',
          );
        }
        const requestedAt = now();
        const updated = await store.update(id, (r) => {
          r.exports.push({ format, requestedAt });
        }, requestedAt);
        if (updated === undefined) {
          throw new HttpError(404, `Cannot find the model "${id}"`);
        }
        return ok(
          { format, status: "queued" },
          "Export request recorded (the local HUB does not convert models)",
        );
      }
      case "heartbeat": {
        await requireModel(store, id);
        const body = await readJsonObject(request);
        const { agent, agentId } = body;
        if (
          agent !== undefined && agent !== null && typeof agent !== "string"
        ) {
          throw new HttpError(
            400,
            'Cannot accept the heartbeat as "agent" is not a string',
          );
        }
        if (
          agentId !== undefined && agentId !== null &&
          (typeof agentId !== "string" || agentId.length > 128)
        ) {
          throw new HttpError(
            400,
            'Cannot accept the heartbeat as "agentId" is not a string or null',
          );
        }
        const beat = now();
        const updated = await store.update(id, (r) => {
          const assigned = typeof agentId === "string" && agentId !== ""
            ? agentId
            : crypto.randomUUID();
          r.heartbeat = {
            agentId: assigned,
            agent: typeof agent === "string" ? agent : "unknown",
            lastSeen: beat,
          };
          if (r.status === "new") r.status = "training";
          return assigned;
        }, beat);
        if (updated === undefined) {
          throw new HttpError(404, `Cannot find the model "${id}"`);
        }
        return ok({ agentId: updated.result }, "Heartbeat received");
      }
      case "health":
        return healthReply();
      case "root":
        return html(request, 200, await indexPage(store));
      case "page":
        return await modelPage(request, store, id, origin, withToken);
      case "file":
        return await handleFile(
          request,
          store,
          id,
          matched.file ?? "",
          authorized,
        );
    }
  }

  return async (request: Request): Promise<Response> => {
    try {
      return await route(request);
    } catch (error) {
      if (error instanceof HttpError) {
        return fail(error.status, error.message, error.headers);
      }
      if (isBodyReadFailure(error)) {
        // A body read that failed outside the readers above: still the
        // client's doing.
        return fail(400, REQUEST_ABORTED);
      }
      if (disconnectSignal(request)?.aborted) {
        // The client went away; nobody reads this reply.
        return fail(
          499,
          "Cannot finish the request as the client disconnected",
        );
      }
      onError(error);
      return fail(500, "Unhandled server error");
    }
  };
}
