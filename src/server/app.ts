/**
 * The local HUB as a Hono app, and as a fetch-style handler
 * `(request) => Promise<Response>` (the app's `fetch`).
 *
 * Serves the HUB v1 wire protocol the Python `hub-sdk` and Ultralytics
 * trainers speak (its shapes and constants are in `src/protocol/`, shared
 * with the client) from files under a data directory, with the `{success, data, message}` envelope on every
 * JSON reply. Each resource's routes live in `routes/`; this file wires
 * them, answers unknown routes (404) and wrong methods (405 with `Allow`),
 * and turns every thrown error into the envelope. Its options and their
 * check are in `app_options.ts`.
 *
 * @module
 */

import { Hono } from "hono";
import { INSTANCE_HEADER, readInstanceId } from "./instance.ts";
import { except } from "hono/combine";
import { HTTPException } from "hono/http-exception";
import { ApiKeys } from "./auth.ts";
import type { HubContext } from "./context.ts";
import {
  disconnectSignal,
  isBodyReadFailure,
  REQUEST_ABORTED,
} from "./errors.ts";
import { hostGuard, knownHosts, originGuard } from "./guard.ts";
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  requestDeadline,
  requestSignal,
  timedOutReply,
} from "./deadline.ts";
import { DEFAULT_MAX_UPLOAD_BYTES } from "./limits.ts";
import { fail, healthReply } from "./reply.ts";
import { authRoutes } from "./routes/auth.ts";
import { exportRoutes } from "./routes/export.ts";
import { fileRoutes } from "./routes/files.ts";
import { heartbeatRoutes } from "./routes/heartbeat.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { modelRoutes } from "./routes/models.ts";
import { createPlatformRoutes } from "./routes/platform.ts";
import { uploadRoutes } from "./routes/upload.ts";
import { HubStore } from "./store.ts";
import { type HubHandlerOptions, validateHubOptions } from "./app_options.ts";
import {
  type HubStorage,
  ModelLimitError,
  StorageUnavailableError,
} from "./storage/contract.ts";
import { openHubStorage } from "./storage/open.ts";
import { createWebApp } from "./web/app.ts";
import { storeSource } from "./web/source.ts";

export type { HubHandlerOptions } from "./app_options.ts";

/** A fetch-style request handler. */
export type HubHandler = (request: Request) => Promise<Response>;

/** Methods of each route, for the 405 of any other method. */
const ALLOWED: ReadonlyArray<readonly [string, string]> = [
  ["/", "GET, HEAD"],
  ["/models/:id", "GET, HEAD"],
  ["/models/:id/events", "GET, HEAD"],
  ["/models/:id/metrics.csv", "GET, HEAD"],
  ["/models/:id/metrics.json", "GET, HEAD"],
  ["/login", "GET, HEAD, POST"],
  ["/logout", "POST"],
  ["/v1", "GET, HEAD"],
  ["/v1/auth", "POST"],
  ["/v1/models", "POST"],
  ["/v1/models/:id", "GET, HEAD, POST, PATCH, DELETE"],
  ["/v1/models/:id/metrics", "GET, HEAD"],
  ["/v1/models/:id/upload", "POST"],
  ["/v1/models/:id/export", "POST"],
  ["/v1/models/:id/files/:name", "GET, HEAD"],
  ["/v1/agent/heartbeat/models/:id", "POST"],
];

/** The model a successful API write changed, from its path. */
function changedModel(path: string): string | undefined {
  const match = /^\/v1\/(?:models|agent\/heartbeat\/models)\/([^/]+)/.exec(
    path,
  );
  return match?.[1];
}

/**
 * Creates the local HUB as a Hono app.
 *
 * Routes (all replies JSON `{success, data, message}` except weight files
 * and pages): `GET /v1` (health), `POST /v1/auth`, `POST /v1/models`,
 * `GET|POST|PATCH|DELETE /v1/models/{id}`, `GET /v1/models/{id}/metrics`,
 * `POST /v1/models/{id}/upload`, `POST /v1/models/{id}/export`,
 * `GET /v1/models/{id}/files/{last.pt|best.pt}` and
 * `POST /v1/agent/heartbeat/models/{id}`, plus the Ultralytics Platform
 * webhook endpoints under `/api/` (see `routes/platform.ts`). Unknown routes and models answer
 * 404, wrong methods 405 with `Allow`, bad payloads 400, missing or wrong
 * keys 401 (when `apiKeys` is set) and oversized bodies 413. A request whose
 * body ends early (the client disconnected mid-upload) answers 400
 * `Upload aborted...` / `Request aborted...` and is not reported to
 * `onError`.
 *
 * The web app (`web/app.ts`): `GET /models/{id}` shows a model (the page a
 * session links as `<web root>/models/<id>`: charts of every metric over all
 * epochs, facts, weights, live updates over server-sent events) and `GET /`
 * lists the models when the client asks for `text/html`; other clients get
 * the JSON health reply there, as at `GET /v1`. With `apiKeys` set, a
 * browser logs in on an HTML login page (or once with `?api_key=` in a page
 * URL) and keeps a signed session cookie; API clients keep sending
 * `x-api-key` or `authorization: Bearer`. The health reply needs no key and
 * carries no data.
 *
 * The data directory is opened on the first request that needs it.
 *
 * @param options Data directory, keys, upload limit, public URL and clock.
 * @returns The app; `app.fetch` is the handler.
 *
 * @example Ask the app for its health reply
 * ```ts
 * import { createHubApp } from "./app.ts";
 *
 * const app = createHubApp({ dataDir: "/tmp/hub-never-opened" });
 * const response = await app.fetch(new Request("http://127.0.0.1/v1"));
 * console.assert((await response.json()).success === true);
 * ```
 */
export function createHubApp(options: HubHandlerOptions): Hono {
  return createHubAppOn(options, undefined);
}

/**
 * {@linkcode createHubApp} on a storage pair opened by the caller (who
 * closes it), instead of the one `options` name. Internal: `serveHub` opens
 * remote backends before it listens.
 *
 * @param options As for {@linkcode createHubApp}.
 * @param given The opened storage, or `undefined` to open `options`' own.
 * @param lifecycle Filled with `settled`: waits for the work the app
 * started after its replies (collecting replaced weights), so that the
 * caller closes the storage only after it.
 * @returns The app.
 */
export function createHubAppOn(
  options: HubHandlerOptions,
  given: HubStorage | undefined,
  lifecycle: { settled?: () => Promise<void> } = {},
): Hono {
  validateHubOptions(options, given);
  const {
    dataDir,
    database,
    weights,
    apiKeys = [],
    maxUploadBytes = DEFAULT_MAX_UPLOAD_BYTES,
    publicUrl,
    allowedHosts = [],
    requestTimeout = DEFAULT_REQUEST_TIMEOUT_MS,
    now = Date.now,
    signal,
    onError = (error: unknown): void => {
      console.error("HUB: unexpected server error", error);
    },
  } = options;
  const base = publicUrl?.replace(/\/+$/, "");
  // One line per outage burst, not one per refused request.
  let lastUnavailableLog = -Infinity;
  const onUnavailable = (error: StorageUnavailableError): void => {
    const at = performance.now();
    if (at - lastUnavailableLog < 10_000) return;
    lastUnavailableLog = at;
    console.warn(`HUB: ${error.message}; answering 503 until it is back`);
  };
  let storePromise: Promise<HubStore> | undefined;
  const openStore = async (): Promise<HubStore> => {
    const owned = given === undefined
      ? await openHubStorage({ dataDir, database, weights })
      : undefined;
    const storage = given ?? owned!;
    try {
      const store = await HubStore.open(storage, { signal });
      // Pages served by this process hear of changes made through others.
      await storage.models.watch?.((change) => web.live.notify(change.id));
      return store;
    } catch (error) {
      // The next request opens the storage again: close this one.
      await owned?.models.close().catch(() => {});
      await owned?.weights.close().catch(() => {});
      throw error;
    }
  };
  lifecycle.settled = async () => {
    const store = await storePromise?.catch(() => undefined);
    await store?.settled();
  };
  const hub: HubContext = {
    store: async (request) => {
      if (storePromise === undefined) {
        storePromise = openStore();
        storePromise.catch(() => {
          storePromise = undefined;
        });
      }
      const store = await storePromise;
      return request === undefined
        ? store
        : store.withSignal(requestSignal(request));
    },
    now,
    keys: new ApiKeys(apiKeys),
    maxUploadBytes,
    signal,
    origin: (request) => base ?? new URL(request.url).origin,
    browserSession: (c) => web.authorizes(c),
  };
  const platform = createPlatformRoutes({
    hub: async (request) => {
      internal.add(request);
      return await app.fetch(request);
    },
    internalKey: apiKeys[0],
    now,
    publicUrl: base,
  });
  const web = createWebApp({
    source: async (request) => storeSource(await hub.store(request)),
    apiKeys,
    now,
    signal,
    // The model page's Stop button of a Platform run.
    stopRun: (id) => platform.stop(id),
  });

  const app = new Hono({ strict: false });
  // First, so that everything after it runs within the request's time.
  app.use(requestDeadline(requestTimeout));
  // Requests the Platform endpoints make through the app were checked as
  // they came in.
  const internal = new WeakSet<Request>();
  if (!hub.keys.required) {
    const known = knownHosts(allowedHosts, base);
    app.use(
      except(
        (c) => internal.has(c.req.raw),
        hostGuard(known),
        originGuard(known),
      ),
    );
  }
  // Every API reply names this HUB, whatever address it is reached on (a
  // HUB without a data directory has no place to keep its id: no header).
  let instance: Promise<string | undefined> | undefined;
  app.use("/v1/*", async (c, next) => {
    if (dataDir === undefined) return await next();
    instance ??= readInstanceId(dataDir).catch(() => {
      instance = undefined; // a data directory not writable yet: no header
      return undefined;
    });
    const id = await instance;
    await next();
    if (id === undefined) return;
    try {
      c.res.headers.set(INSTANCE_HEADER, id);
    } catch {
      // a reply with immutable headers goes without
    }
  });
  // Open model pages hear about every change the API stores.
  app.use("/v1/*", async (c, next) => {
    await next();
    if (c.req.method === "GET" || c.req.method === "HEAD") return;
    if (c.res.status >= 400) return;
    const id = changedModel(c.req.path);
    if (id !== undefined) web.live.notify(id);
  });
  app.get("/v1", () => healthReply());
  app.route("/", authRoutes(hub));
  app.route("/", modelRoutes(hub));
  app.route("/", metricsRoutes(hub));
  app.route("/", uploadRoutes(hub));
  app.route("/", exportRoutes(hub));
  app.route("/", heartbeatRoutes(hub));
  app.route("/", fileRoutes(hub));
  app.route("/", web.app);
  app.get("/", () => healthReply());
  // The Platform endpoints store runs through the routes above.
  app.route("/", platform.app);
  for (const [path, allow] of ALLOWED) {
    app.all(path, (c) =>
      fail(
        405,
        `Cannot ${c.req.method} ${c.req.path}: allowed ${allow}`,
        { allow },
      ));
  }
  app.notFound((c) =>
    fail(404, `Cannot find the route ${c.req.method} ${c.req.path}`)
  );
  app.onError((error, c) => {
    // The request's time ran out and it was answered 503: what its work
    // throws now (the abort's reason, a cancelled query) is expected.
    const late = timedOutReply(c.req.raw);
    if (late !== undefined) return late;
    if (error instanceof HTTPException) {
      return error.res === undefined
        ? fail(error.status, error.message)
        : error.getResponse();
    }
    if (error instanceof StorageUnavailableError) {
      // The database restarts or the object store cannot be reached: the
      // client retries after the pause; the cause is for the operator.
      onUnavailable(error);
      return fail(
        503,
        "The HUB's storage is unavailable right now: retry later",
        {
          "retry-after": String(error.retryAfterSeconds),
        },
      );
    }
    if (error instanceof ModelLimitError) return fail(413, error.message);
    if (isBodyReadFailure(error)) {
      // A body read that failed outside the readers: still the client's
      // doing.
      return fail(400, REQUEST_ABORTED);
    }
    if (disconnectSignal(c.req.raw)?.aborted) {
      // The client went away; nobody reads this reply.
      return fail(499, "Cannot finish the request as the client disconnected");
    }
    onError(error);
    return fail(500, "Unhandled server error");
  });
  return app;
}

/**
 * Creates the local HUB as a fetch-style handler: the `fetch` of
 * {@linkcode createHubApp}'s app (see there for the routes).
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
 *     headers: { "content-type": "application/json" },
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
  const app = createHubApp(options);
  return async (request: Request): Promise<Response> =>
    await app.fetch(request);
}
