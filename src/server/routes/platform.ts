/**
 * The Ultralytics Platform webhook endpoints on the local HUB, so that a
 * Platform-style client (ours, or the Python trainer with
 * `ULTRALYTICS_PLATFORM_URL` pointed here) can report to a self-hosted HUB:
 *
 * - `POST /api/webhooks/training/metrics` takes the events
 *   (`training_started`, `epoch_end`, `checkpoint_saved`,
 *   `training_complete`) and answers `{modelId, modelSlug, runId, cancelled}`;
 * - `POST /api/webhooks/models/upload` answers a signed upload URL;
 * - `PUT /api/platform/uploads/{token}` takes the file: the token expires
 *   (15 minutes by default) and is single-use, the body needs an exact
 *   `Content-Length`, no key is needed (the token is the credential);
 * - `POST /api/platform/models/{id}/stop` stops a run (the next
 *   `epoch_end` reply says `cancelled: true`);
 * - `GET /api/platform/models/{id}/events` lists the events received since
 *   the server started (newest 10,000 of the 256 runs last started or
 *   reported to), to inspect a run;
 * - `GET /{owner}/{project}/{slug}`, the Platform's page of a run (the URL a
 *   Platform session prints), redirects to the model's page `/models/{id}`.
 *
 * Each run is stored as an ordinary model through the HUB's own v1 API (the
 * `hub` handler): `training_started` creates it, `epoch_end` posts the
 * epoch's metrics, the signed `PUT` becomes a weights upload, and the
 * Platform's facts (project, slug, run id, environment, checkpoints,
 * results, whether it was stopped) sit in the document's `platform` field.
 * So the web pages and every storage backend show a Platform run like any
 * other model. The `(project, slug)` index lives in memory: after a restart
 * a run is found by its `modelId`, which clients send once they have it.
 * A `training_started` sent again with the same body before any other event
 * of its run (its reply was lost) answers the run it already started.
 *
 * @module
 */

import { Hono } from "hono";
import { createHash, randomBytes } from "node:crypto";
import { isRecord } from "../../common/json.ts";
import { shareDeadline } from "../deadline.ts";
import {
  jsonSafe,
  normaliseProject,
  slugify,
} from "../../protocol/platform.ts";
import type {
  PlatformEventName,
  PlatformEventReply,
} from "../../protocol/platform.ts";

/** A fetch-style handler: the HUB's v1 API. */
export type HubFetch = (request: Request) => Promise<Response>;

/** Options of {@linkcode platformRoutes}. */
export interface PlatformRoutesOptions {
  /** The HUB's own handler; runs are stored through its v1 API. */
  hub: HubFetch;
  /**
   * A key the HUB accepts, for the signed `PUT` (which carries none);
   * `undefined` for an open HUB.
   *
   * @default {undefined}
   */
  internalKey?: string | undefined;
  /** How long an upload URL stays valid, in milliseconds. @default {900000} */
  uploadTtl?: number | undefined;
  /** Clock in milliseconds since the epoch. @default {Date.now} */
  now?: (() => number) | undefined;
  /** Base URL of the upload URLs; else the request's origin. @default {undefined} */
  publicUrl?: string | undefined;
}

interface RunState {
  id: string;
  project: string;
  name: string;
  slug: string;
  runId: string;
  cancelled: boolean;
  lastEpoch: number;
  events: Array<{ at: number; body: unknown }>;
  platform: Record<string, unknown>;
  write: Promise<unknown>;
}

interface UploadToken {
  modelId: string;
  filename: "last.pt" | "best.pt";
  expires: number;
  state: "ready" | "busy" | "used";
}

const MAX_EVENTS = 10_000;
/** Runs whose state and received events are kept in memory (oldest go first). */
const MAX_RUNS = 256;
const MAX_JSON_BYTES = 8 * 1024 * 1024;
const EVENTS: ReadonlySet<string> = new Set<PlatformEventName>([
  "training_started",
  "epoch_end",
  "checkpoint_saved",
  "training_complete",
]);

function reply(status: number, body: unknown): Response {
  return Response.json(body, { status });
}

function refuse(status: number, message: string): Response {
  return reply(status, { success: false, message });
}

class Refusal extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/**
 * The Platform endpoints as a Hono app, to mount at the HUB's root.
 *
 * @param options The HUB handler to store runs through, and limits.
 * @returns The app.
 *
 * @example Answer a Platform event with a HUB behind it
 * ```ts
 * import { platformRoutes } from "./platform.ts";
 * import { createHubHandler } from "../mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const app = platformRoutes({ hub: createHubHandler({ dataDir }) });
 * const response = await app.fetch(
 *   new Request("http://127.0.0.1/api/webhooks/training/metrics", {
 *     method: "POST",
 *     body: JSON.stringify({
 *       event: "training_started",
 *       project: "ada/signs",
 *       name: "run",
 *       data: { trainArgs: { data: "coco8.yaml" }, epochs: 1, device: "cpu", environment: {} },
 *     }),
 *   }),
 * );
 * const { modelId } = await response.json();
 * console.assert(typeof modelId === "string");
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 */
export function platformRoutes(options: PlatformRoutesOptions): Hono {
  return createPlatformRoutes(options).app;
}

/** The Platform endpoints and the "Stop" of a run, for the web app's button. */
export interface PlatformRoutes {
  /** The endpoints as a Hono app, to mount at the HUB's root. */
  app: Hono;
  /**
   * Stops a run: the next `epoch_end` reply says `cancelled: true`.
   *
   * @param id Model id of the run.
   * @returns `false` when the model is not a Platform run.
   */
  stop(id: string): Promise<boolean>;
}

/**
 * The Platform endpoints (see {@linkcode platformRoutes}) with a `stop()`
 * for callers that already checked who asks, such as the model page's Stop
 * button.
 *
 * @param options The HUB handler to store runs through, and limits.
 * @returns The app and `stop()`.
 *
 * @example Stop a run that does not exist
 * ```ts
 * import { createPlatformRoutes } from "./platform.ts";
 * import { createHubHandler } from "../mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const routes = createPlatformRoutes({ hub: createHubHandler({ dataDir }) });
 * console.assert(await routes.stop("a".repeat(20)) === false);
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 */
export function createPlatformRoutes(
  options: PlatformRoutesOptions,
): PlatformRoutes {
  const {
    hub,
    internalKey,
    uploadTtl = 900_000,
    now = Date.now,
    publicUrl,
  } = options;
  if (typeof hub !== "function") {
    throw new TypeError(
      "Cannot create the Platform routes as 'hub' is not a handler",
    );
  }
  if (!(uploadTtl > 0)) {
    throw new RangeError(
      `Cannot create the Platform routes with an upload TTL of ${uploadTtl}: pass milliseconds > 0`,
    );
  }
  const runs = new Map<string, RunState>();
  const remember = (run: RunState): void => {
    runs.set(run.id, run);
    // A forgotten run is read back from its document at its next event.
    for (const old of runs.keys()) {
      if (runs.size <= MAX_RUNS) break;
      runs.delete(old);
    }
  };
  const bySlug = new Map<string, string>();
  const tokens = new Map<string, UploadToken>();
  // A training_started sent again (its reply was lost) must not start a
  // second run: the same body, before any other event of the run, within
  // the upload TTL, answers the run it started.
  const starts = new Map<string, { digest: string; id: string; at: number }>();

  const call = async (
    method: string,
    path: string,
    auth: string | undefined,
    json?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }> => {
    const headers: Record<string, string> = { accept: "application/json" };
    if (auth !== undefined) headers.authorization = auth;
    if (json !== undefined) headers["content-type"] = "application/json";
    const response = await hub(
      new Request(`http://127.0.0.1${path}`, {
        method,
        headers,
        ...(json === undefined ? {} : { body: JSON.stringify(json) }),
      }),
    );
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = {};
    }
    return { status: response.status, body: isRecord(body) ? body : {} };
  };
  const expect = async (
    method: string,
    path: string,
    auth: string | undefined,
    json?: unknown,
  ): Promise<Record<string, unknown>> => {
    const { status, body } = await call(method, path, auth, json);
    if (status < 200 || status >= 300) {
      throw new Refusal(
        status,
        typeof body.message === "string"
          ? body.message
          : `The HUB answered ${status}`,
      );
    }
    return isRecord(body.data) ? body.data : {};
  };

  const persist = (run: RunState, auth: string | undefined): Promise<void> => {
    const next = run.write.then(() =>
      expect("PATCH", `/v1/models/${run.id}`, auth, {
        platform: {
          ...run.platform,
          project: run.project,
          name: run.name,
          slug: run.slug,
          runId: run.runId,
          cancelled: run.cancelled,
        },
      })
    );
    run.write = next.catch(() => {});
    return next.then(() => {});
  };

  const load = async (
    id: string,
    auth: string | undefined,
  ): Promise<RunState> => {
    const known = runs.get(id);
    if (known !== undefined) return known;
    const doc = await expect(
      "GET",
      `/v1/models/${encodeURIComponent(id)}`,
      auth,
    );
    const platform = isRecord(doc.platform) ? doc.platform : undefined;
    if (platform === undefined) {
      throw new Refusal(
        404,
        `Cannot find a Platform run for model "${id}": start it with training_started`,
      );
    }
    const run: RunState = {
      id,
      project: String(platform.project ?? ""),
      name: String(platform.name ?? ""),
      slug: String(platform.slug ?? ""),
      runId: String(platform.runId ?? randomBytes(8).toString("hex")),
      cancelled: platform.cancelled === true,
      lastEpoch: 0,
      events: [],
      platform: { ...platform },
      write: Promise.resolve(),
    };
    remember(run);
    bySlug.set(`${run.project}\n${run.slug}`, id);
    return run;
  };

  const locate = (
    body: Record<string, unknown>,
    auth: string | undefined,
  ): Promise<RunState> => {
    if (typeof body.modelId === "string" && body.modelId !== "") {
      return load(body.modelId, auth);
    }
    const { project, name } = targetOf(body);
    const id = bySlug.get(`${project}\n${name}`);
    if (id === undefined) {
      throw new Refusal(
        404,
        `Cannot find the run "${name}" in project "${project}": send training_started first`,
      );
    }
    return load(id, auth);
  };

  const start = async (
    body: Record<string, unknown>,
    data: Record<string, unknown>,
    auth: string | undefined,
  ): Promise<RunState> => {
    if (typeof body.modelId === "string" && body.modelId !== "") {
      return await load(body.modelId, auth);
    }
    const { project, name } = targetOf(body);
    const digest = createHash("sha256").update(JSON.stringify(body)).digest(
      "hex",
    );
    const previous = starts.get(`${project}\n${name}`);
    const again = previous === undefined ? undefined : runs.get(previous.id);
    if (
      previous !== undefined && again !== undefined &&
      previous.digest === digest && now() - previous.at < uploadTtl &&
      again.events.every((e) =>
        (e.body as { event?: unknown }).event === "training_started"
      )
    ) {
      return again;
    }
    let slug = name;
    for (let n = 2; bySlug.has(`${project}\n${slug}`); n++) {
      slug = `${name}-${n}`.slice(0, 128);
    }
    const args = isRecord(data.trainArgs) ? data.trainArgs : {};
    const num = (value: unknown, fallback: number): number => {
      const n = Number(value);
      return value !== undefined && value !== "" && Number.isFinite(n)
        ? n
        : fallback;
    };
    const model = typeof args.model === "string" ? args.model : "";
    const created = await expect("POST", "/v1/models", auth, {
      config: {
        batchSize: num(args.batch, -1),
        epochs: num(data.epochs ?? args.epochs, 300),
        imageSize: num(args.imgsz, 640),
        patience: num(args.patience, 100),
        device: String(data.device ?? args.device ?? ""),
        cache: String(args.cache ?? "ram"),
      },
      dataset: { name: typeof args.data === "string" ? args.data : "" },
      lineage: {
        architecture: {
          name: model.replace(/^.*\//, "").replace(/\.(pt|ya?ml)$/, "") ||
            slug,
        },
        parent: model.endsWith(".pt") ? { name: model } : {},
      },
      meta: { name: `${project}/${slug}` },
    });
    const id = String(created.id);
    const run: RunState = {
      id,
      project,
      name,
      slug,
      runId: randomBytes(8).toString("hex"),
      cancelled: false,
      lastEpoch: 0,
      events: [],
      platform: {
        trainArgs: args,
        epochs: data.epochs,
        device: data.device,
        environment: data.environment,
        startedAt: new Date(now()).toISOString(),
        checkpoints: [],
      },
      write: Promise.resolve(),
    };
    remember(run);
    bySlug.set(`${project}\n${slug}`, id);
    starts.set(`${project}\n${name}`, { digest, id, at: now() });
    await persist(run, auth);
    return run;
  };

  const stop = async (
    run: RunState,
    auth: string | undefined,
  ): Promise<void> => {
    if (run.cancelled) return;
    run.cancelled = true;
    run.platform.stoppedAt = new Date(now()).toISOString();
    await persist(run, auth);
  };
  const internalAuth = internalKey === undefined
    ? undefined
    : `Bearer ${internalKey}`;

  const app = new Hono();

  app.onError((error) => {
    if (error instanceof Refusal) return refuse(error.status, error.message);
    console.error("HUB: unexpected error in the Platform routes", error);
    return refuse(500, "Unhandled server error in the Platform routes");
  });

  app.post("/api/webhooks/training/metrics", async (c) => {
    const auth = c.req.header("authorization");
    const body = await readJson(c.req.raw);
    const event = body.event;
    if (typeof event !== "string" || !EVENTS.has(event)) {
      throw new Refusal(
        400,
        `Cannot handle the event ${
          JSON.stringify(event)
        }: send training_started, epoch_end, checkpoint_saved or training_complete`,
      );
    }
    const data = isRecord(body.data) ? body.data : {};
    const run = event === "training_started"
      ? await start(body, data, auth)
      : await locate(body, auth);
    run.events.push({ at: now(), body: jsonSafe(body) });
    if (run.events.length > MAX_EVENTS) run.events.shift();
    if (event === "epoch_end") {
      const epoch = data.epoch;
      if (!Number.isInteger(epoch) || (epoch as number) < 0) {
        throw new Refusal(
          400,
          "Cannot store epoch_end as data.epoch is not a non-negative integer",
        );
      }
      const stored: Record<string, unknown> = isRecord(data.metrics)
        ? { ...data.metrics }
        : {};
      if (data.fitness !== undefined) stored.fitness = data.fitness;
      if (isRecord(data.modelInfo)) {
        stored["model/parameters"] = data.modelInfo.parameters;
        stored["model/GFLOPs"] = data.modelInfo.gflops;
        stored["model/speed_PyTorch(ms)"] = data.modelInfo.speedMs;
      }
      if (isRecord(data.system)) {
        for (const [key, value] of Object.entries(data.system)) {
          stored[`system/${key}`] = value;
        }
      }
      await expect("POST", `/v1/models/${run.id}`, auth, {
        type: "metrics",
        metrics: { [String(epoch)]: JSON.stringify(stored) },
      });
      run.lastEpoch = Math.max(run.lastEpoch, epoch as number);
    } else if (event === "checkpoint_saved") {
      const list = Array.isArray(run.platform.checkpoints)
        ? run.platform.checkpoints
        : [];
      run.platform.checkpoints = [...list, {
        modelPath: data.modelPath,
        uploadPath: data.uploadPath,
        runId: data.runId,
        at: new Date(now()).toISOString(),
      }].slice(-100);
      await persist(run, auth);
    } else if (event === "training_complete") {
      run.platform.results = data.results;
      if (data.classNames !== undefined) {
        run.platform.classNames = data.classNames;
      }
      run.platform.completedAt = new Date(now()).toISOString();
      await persist(run, auth);
    }
    const answer: PlatformEventReply = {
      modelId: run.id,
      modelSlug: run.slug,
      runId: run.runId,
      cancelled: run.cancelled,
    };
    return reply(200, answer);
  });

  app.post("/api/webhooks/models/upload", async (c) => {
    const auth = c.req.header("authorization");
    const body = await readJson(c.req.raw);
    const filename = body.filename;
    if (filename !== "last.pt" && filename !== "best.pt") {
      throw new Refusal(
        400,
        'Cannot issue an upload URL as "filename" is not "last.pt" or "best.pt"',
      );
    }
    const run = await locate(body, auth);
    // The caller's key must still be good for this model.
    await expect("GET", `/v1/models/${run.id}`, auth);
    sweep(tokens, now());
    const token = randomBytes(24).toString("base64url");
    tokens.set(token, {
      modelId: run.id,
      filename,
      expires: now() + uploadTtl,
      state: "ready",
    });
    const base = (publicUrl ?? new URL(c.req.url).origin).replace(/\/+$/, "");
    const gcsPath = `models/${run.id}/${filename}`;
    return reply(200, {
      uploadUrl: `${base}/api/platform/uploads/${token}`,
      gcsPath,
      uploadPath: `${run.project}/${run.slug}/${filename}`,
    });
  });

  app.put("/api/platform/uploads/:token", async (c) => {
    const token = tokens.get(c.req.param("token"));
    if (token === undefined || token.state === "used") {
      throw new Refusal(
        403,
        "Cannot accept the upload as the signed URL is unknown or was already used: ask for a new upload URL",
      );
    }
    if (token.expires <= now()) {
      tokens.delete(c.req.param("token"));
      throw new Refusal(
        403,
        "Cannot accept the upload as the signed URL expired: ask for a new upload URL",
      );
    }
    if (token.state === "busy") {
      throw new Refusal(
        409,
        "Cannot accept the upload as another upload to this URL is in progress",
      );
    }
    const declared = c.req.header("content-length");
    if (declared === undefined || !/^\d+$/.test(declared)) {
      throw new Refusal(
        411,
        "Cannot accept the upload without an exact Content-Length: send the file's size",
      );
    }
    const length = Number(declared);
    const raw = c.req.raw.body;
    token.state = "busy";
    try {
      const run = runs.get(token.modelId);
      const epoch = run?.lastEpoch ?? 0;
      // The upload request made through the app runs on this request's
      // clock: its body arriving stops it, its commit counts.
      const forward: HubFetch = (inner) => {
        shareDeadline(c.req.raw, inner);
        return hub(inner);
      };
      const result = await forwardUpload(
        forward,
        token,
        raw,
        length,
        epoch,
        internalKey,
      );
      token.state = "used";
      return new Response(JSON.stringify(result), {
        status: 200,
        headers: {
          "content-type": "application/json",
          "x-checksum-sha256": result.sha256,
        },
      });
    } finally {
      if (token.state === "busy") token.state = "ready";
    }
  });

  app.post("/api/platform/models/:id/stop", async (c) => {
    const auth = authOf(c.req.header.bind(c.req));
    const run = await load(c.req.param("id"), auth);
    // The key must be good for this model even when the run is cached.
    await expect("GET", `/v1/models/${run.id}`, auth);
    await stop(run, auth);
    return reply(200, { success: true, data: { id: run.id, cancelled: true } });
  });

  // The Platform's page of a run is <platform>/<owner>/<project>/<slug>,
  // the URL a Platform session prints: here it leads to the model's page.
  // Only runs started (or loaded) since this process began are known by
  // slug; any other path goes on to the routes after this one.
  app.get("/:owner/:project/:slug", (c, next) => {
    const { owner, project, slug } = c.req.param();
    const id = bySlug.get(`${owner}/${project}\n${slug}`);
    if (id === undefined) return next();
    return c.redirect(`/models/${encodeURIComponent(id)}`, 302);
  });

  app.get("/api/platform/models/:id/events", async (c) => {
    const auth = authOf(c.req.header.bind(c.req));
    const run = await load(c.req.param("id"), auth);
    await expect("GET", `/v1/models/${run.id}`, auth);
    return reply(200, { success: true, data: { events: run.events } });
  });

  return {
    app,
    async stop(id: string): Promise<boolean> {
      let run: RunState;
      try {
        run = await load(id, internalAuth);
      } catch (error) {
        if (error instanceof Refusal && error.status === 404) return false;
        throw error;
      }
      await stop(run, internalAuth);
      return true;
    },
  };
}

/** The caller's key as an `authorization` value (Bearer, or `x-api-key`). */
function authOf(
  header: (name: string) => string | undefined,
): string | undefined {
  const key = header("x-api-key");
  return header("authorization") ??
    (key === undefined ? undefined : `Bearer ${key}`);
}

function targetOf(
  body: Record<string, unknown>,
): { project: string; name: string } {
  const project = typeof body.project === "string"
    ? normaliseProject(body.project.trim())
    : "";
  const name = typeof body.name === "string" ? slugify(body.name) : "";
  if (!/^[^/\s]+\/[a-z0-9-]+$/.test(project) || name === "") {
    throw new Refusal(
      400,
      'Cannot find the run as "project" is not "<owner>/<project>" or "name" is empty: send them, or "modelId"',
    );
  }
  return { project, name };
}

function sweep(tokens: Map<string, UploadToken>, at: number): void {
  for (const [key, token] of tokens) {
    if (token.expires <= at || token.state === "used") tokens.delete(key);
  }
}

async function readJson(request: Request): Promise<Record<string, unknown>> {
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > MAX_JSON_BYTES) {
    throw new Refusal(413, "Cannot read the event as it is too large");
  }
  let text: string;
  try {
    text = await request.text();
  } catch {
    throw new Refusal(400, "Request aborted: the request body ended early");
  }
  if (text.length > MAX_JSON_BYTES) {
    throw new Refusal(413, "Cannot read the event as it is too large");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Refusal(400, "Cannot read the request as it is not valid JSON");
  }
  if (!isRecord(body)) {
    throw new Refusal(
      400,
      "Cannot read the request as it is not a JSON object",
    );
  }
  return body;
}

/**
 * Passes a raw upload body to the HUB's v1 upload endpoint as a multipart
 * body, counting the bytes against the declared length.
 */
async function forwardUpload(
  hub: HubFetch,
  token: UploadToken,
  raw: ReadableStream<Uint8Array> | null,
  length: number,
  epoch: number,
  internalKey: string | undefined,
): Promise<{ size: number; sha256: string }> {
  const boundary = `----platform${randomBytes(12).toString("hex")}`;
  const type = token.filename === "best.pt" ? "final" : "epoch";
  const fields: Array<[string, string]> = type === "final"
    ? [["epoch", String(epoch)], ["type", "final"], ["map", "0"]]
    : [["epoch", String(epoch)], ["type", "epoch"], ["isBest", "False"]];
  const encoder = new TextEncoder();
  let head = "";
  for (const [name, value] of fields) {
    head +=
      `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  }
  head +=
    `--${boundary}\r\nContent-Disposition: form-data; name="${token.filename}"; filename="${token.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`;
  const tail = `\r\n--${boundary}--\r\n`;
  let received = 0;
  const reader = raw?.getReader();
  let stage: "head" | "body" | "tail" | "done" = "head";
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (stage === "head") {
        controller.enqueue(encoder.encode(head));
        stage = "body";
        return;
      }
      if (stage === "body") {
        const next = reader === undefined
          ? { done: true as const, value: undefined }
          : await reader.read();
        if (next.done) {
          if (received !== length) {
            controller.error(
              new Refusal(
                400,
                `Cannot accept the upload as the body has ${received} bytes but Content-Length said ${length}`,
              ),
            );
            return;
          }
          stage = "tail";
        } else {
          received += next.value.byteLength;
          if (received > length) {
            await reader?.cancel().catch(() => {});
            controller.error(
              new Refusal(
                400,
                `Cannot accept the upload as the body is longer than its Content-Length of ${length}`,
              ),
            );
            return;
          }
          controller.enqueue(next.value);
          return;
        }
      }
      if (stage === "tail") {
        controller.enqueue(encoder.encode(tail));
        stage = "done";
        controller.close();
      }
    },
    async cancel(reason) {
      await reader?.cancel(reason).catch(() => {});
    },
  });
  const headers: Record<string, string> = {
    accept: "application/json",
    "content-type": `multipart/form-data; boundary=${boundary}`,
    "content-length": String(
      encoder.encode(head).byteLength + length +
        encoder.encode(tail).byteLength,
    ),
  };
  if (internalKey !== undefined) headers["x-api-key"] = internalKey;
  const init: RequestInit & { duplex: "half" } = {
    method: "POST",
    headers,
    body,
    duplex: "half",
  };
  let response: Response;
  try {
    response = await hub(
      new Request(
        `http://127.0.0.1/v1/models/${token.modelId}/upload`,
        init,
      ),
    );
  } catch (error) {
    if (error instanceof Refusal) throw error;
    throw new Refusal(400, "Upload aborted: the request body ended early");
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = {};
  }
  const data = isRecord(parsed) && isRecord(parsed.data) ? parsed.data : {};
  if (!response.ok) {
    const message = isRecord(parsed) && typeof parsed.message === "string"
      ? parsed.message
      : `The HUB answered ${response.status}`;
    throw new Refusal(response.status, message);
  }
  if (received !== length || data.size !== length) {
    throw new Refusal(
      400,
      `Cannot accept the upload as ${received} bytes arrived but Content-Length said ${length}`,
    );
  }
  return { size: Number(data.size), sha256: String(data.sha256) };
}
