/**
 * The HUB web app as a Hono sub-app: the list page `/`, the model page
 * `/models/<id>` (with `?part=live`), its event stream
 * `/models/<id>/events`, CSV/JSON downloads of its metrics, the login and
 * logout routes of a keyed server, and the style sheet and script.
 *
 * On a keyed server a page needs a browser session (see `session.ts`) or a
 * key in `x-api-key` / `authorization: Bearer`; a browser without either
 * gets the login page. A page URL with `?api_key=<key>` (the URL a Python
 * session prints) logs in once and redirects to the same URL without the
 * key. Forms are CSRF-safe: `POST /login` and `POST /logout` accept only
 * same-origin submissions (Hono's `csrf` middleware), and the cookie is
 * `SameSite=Strict`.
 *
 * Over 500 lines on purpose: the routes are closures over one set of shared
 * state (the record cache, the live-part cache, the session check and the
 * stalled-run clock) that `createWebApp` builds; the pages, chart, layout,
 * session and downloads they render live in their own files.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { compress } from "hono/compress";
import { csrf } from "hono/csrf";
import { wantsHtml } from "../reply.ts";
import type { ModelStore } from "../storage/contract.ts";
import type { ModelRecord } from "../storage/records.ts";
import { CLIENT_JS } from "./client.ts";
import { DISPLAY_EPOCH_OFFSET, metricsDownload } from "./downloads.ts";
import { markup } from "./html.ts";
import {
  PAGE_HEADERS,
  renderDocument,
  SCRIPT_PATH,
  STYLE_PATH,
} from "./layout.ts";
import { type ListEntry, renderListPage } from "./list_page.ts";
import { LiveHub } from "./live.ts";
import {
  bestEpoch,
  isStalled,
  type ModelView,
  renderModelLive,
  renderModelPage,
  type WeightsView,
} from "./model_page.ts";
import { renderLoginPage, safeNext, SessionKeeper } from "./session.ts";
import { STYLE_CSS } from "./style.ts";

/** The read side of the model store the web app needs. */
export type WebSource = Pick<
  ModelStore,
  "listIds" | "get" | "listMetrics" | "epochCount"
>;

/** Options of {@linkcode createWebApp}. */
export interface WebAppOptions {
  /**
   * The store, opened on first use, for one request (whose time limit its
   * calls may carry).
   */
  source: (request?: Request | undefined) => Promise<WebSource>;
  /** Accepted API keys; none means open pages. @default {[]} */
  apiKeys?: readonly string[] | undefined;
  /** Fans model changes out to open pages. @default {a new LiveHub} */
  live?: LiveHub | undefined;
  /** Clock, ms since the epoch. @default {Date.now} */
  now?: (() => number) | undefined;
  /**
   * A training model without a heartbeat or any change for longer than
   * this is flagged stalled: three missed beats of the session's default
   * 5-minute heartbeat.
   *
   * @default {900000}
   */
  stalledAfterMs?: number | undefined;
  /** Models per list page. @default {50} */
  pageSize?: number | undefined;
  /** Ends open event streams, e.g. when the server shuts down. @default {undefined} */
  signal?: AbortSignal | undefined;
  /**
   * Stops an Ultralytics Platform run (its next `epoch_end` reply says
   * `cancelled: true`); with it, the page of a running Platform run shows a
   * Stop button. @default {undefined}
   */
  stopRun?: ((id: string) => Promise<boolean>) | undefined;
}

/** What the model page shows of an Ultralytics Platform run. */
function platformRun(
  record: ModelRecord,
  stoppable: boolean,
): ModelView["run"] {
  const platform = record.extra.platform;
  if (typeof platform !== "object" || platform === null) return undefined;
  const p = platform as Record<string, unknown>;
  return {
    project: String(p.project ?? ""),
    slug: String(p.slug ?? ""),
    stopped: p.cancelled === true,
    finished: p.completedAt !== undefined,
    stoppable,
  };
}

/** The web app and what the rest of the server needs from it. */
export interface WebApp {
  /** The routes, to mount at `/`. */
  app: Hono;
  /** Tell open pages about a change with `live.notify(id)`. */
  live: LiveHub;
  /**
   * Whether a request is authorized for pages and downloads: open server,
   * a key header, or a browser session.
   */
  authorizes(c: Context): Promise<boolean>;
}

/** How long the list page trusts a model document it read. */
const RECORD_CACHE_MS = 5_000;

/** Most rendered live parts kept for the pages of models in training. */
const LIVE_PART_CACHE = 64;

/** Default {@linkcode WebAppOptions.stalledAfterMs}: 15 minutes. */
export const DEFAULT_STALLED_AFTER_MS = 15 * 60 * 1000;

function page(c: Context, body: string, status = 200): Response {
  return new Response(c.req.method === "HEAD" ? null : body, {
    status,
    headers: PAGE_HEADERS,
  });
}

async function* allIds(store: WebSource): AsyncGenerator<string> {
  let cursor: string | undefined;
  do {
    const page = await store.listIds({ limit: 1000, cursor });
    yield* page.items;
    cursor = page.next;
  } while (cursor !== undefined);
}

/**
 * Creates the web app.
 *
 * @param options Store, keys, live hub, clock, thresholds and signal.
 * @returns The routes and their live hub.
 *
 * @example Serve the list page of an empty store
 * ```ts
 * import { createWebApp } from "./app.ts";
 *
 * const web = createWebApp({
 *   source: () => Promise.resolve({
 *     listIds: () => Promise.resolve({ items: [], next: undefined }),
 *     get: () => Promise.resolve(undefined),
 *     listMetrics: () => Promise.resolve(undefined),
 *     epochCount: () => Promise.resolve(0),
 *   }),
 * });
 * const response = await web.app.request("/", { headers: { accept: "text/html" } });
 * console.assert((await response.text()).includes("No models yet"));
 * ```
 */
export function createWebApp(options: WebAppOptions): WebApp {
  const {
    source,
    apiKeys = [],
    live = new LiveHub(),
    now = Date.now,
    stalledAfterMs = DEFAULT_STALLED_AFTER_MS,
    pageSize = 50,
    signal,
    stopRun,
  } = options;
  if (!(Number.isFinite(stalledAfterMs) && stalledAfterMs > 0)) {
    throw new RangeError(
      `Cannot create the web app as stalledAfterMs is not a positive number: ${stalledAfterMs}`,
    );
  }
  if (!(Number.isSafeInteger(pageSize) && pageSize > 0)) {
    throw new RangeError(
      `Cannot create the web app as pageSize is not a positive integer: ${pageSize}`,
    );
  }
  const sessions = new SessionKeeper(apiKeys, now);
  /**
   * Model documents as the list page last read them: dropped on every
   * change this server stores, and re-read after RECORD_CACHE_MS anyway
   * (another server on a shared backend may have changed them).
   */
  const recordCache = new Map<
    string,
    { record: ModelRecord; readAt: number }
  >();
  live.onEveryChange((id) => recordCache.delete(id));
  async function cachedRecord(
    store: WebSource,
    id: string,
  ): Promise<ModelRecord | undefined> {
    const hit = recordCache.get(id);
    const clock = performance.now();
    if (hit !== undefined && clock - hit.readAt < RECORD_CACHE_MS) {
      return hit.record;
    }
    const record = await store.get(id);
    if (record === undefined) recordCache.delete(id);
    else recordCache.set(id, { record, readAt: clock });
    return record;
  }
  /** The rendered live part of each model, by version (shared by pages). */
  const liveParts = new Map<
    string,
    { version: string; html: Promise<string | undefined> }
  >();
  const summaries = new Map<
    string,
    { updatedAt: number; epochs: number; bestMap: number | undefined }
  >();

  async function authorizes(c: Context): Promise<boolean> {
    if (!sessions.keyed) return true;
    if (sessions.checkHeaders(c.req.raw)) return true;
    return await sessions.hasSession(c);
  }

  /**
   * Guards a page: lets an authorized request through, turns `?api_key=`
   * into a session and a redirect, else answers the login page.
   */
  async function guard(c: Context): Promise<Response | undefined> {
    const url = new URL(c.req.url);
    const presented = url.searchParams.get("api_key");
    if (presented !== null && sessions.keyed) {
      url.searchParams.delete("api_key");
      const target = `${url.pathname}${url.search}`;
      if (!sessions.checkKey(presented)) {
        return page(
          c,
          renderLoginPage(target, "That API key is not accepted by this HUB.")
            .value,
          401,
        );
      }
      await sessions.startSession(c);
      c.header("cache-control", "no-store");
      c.header("referrer-policy", "no-referrer");
      return c.redirect(target, 303);
    }
    if (presented !== null) {
      // An open server: drop the key from the URL all the same.
      url.searchParams.delete("api_key");
      c.header("referrer-policy", "no-referrer");
      return c.redirect(`${url.pathname}${url.search}`, 303);
    }
    if (await authorizes(c)) return undefined;
    return page(
      c,
      renderLoginPage(`${url.pathname}${url.search}`).value,
      401,
    );
  }

  async function modelView(
    request: Request | undefined,
    id: string,
  ): Promise<ModelView | undefined> {
    const store = await source(request);
    const record = await store.get(id);
    if (record === undefined) return undefined;
    // Pages count epochs from 1, as the trainer's console does; the API
    // keys them from 0 (see DISPLAY_EPOCH_OFFSET).
    const metrics = (await store.listMetrics(id) ?? []).map((entry) => ({
      epoch: entry.epoch + DISPLAY_EPOCH_OFFSET,
      metrics: entry.metrics,
    }));
    const weights: WeightsView[] = [];
    for (const kind of ["last", "best"] as const) {
      const info = record.weights[kind];
      if (info === undefined) continue;
      weights.push({
        kind,
        epoch: info.epoch + DISPLAY_EPOCH_OFFSET,
        size: info.size,
        sha256: info.sha256,
        url: `/v1/models/${encodeURIComponent(record.id)}/files/${kind}.pt`,
        map: info.map,
      });
    }
    const architecture = /\.ya?ml$/.test(record.architecture)
      ? record.architecture
      : `${record.architecture}.yaml`;
    return {
      id: record.id,
      name: record.name,
      status: record.status,
      dataset: record.dataset,
      architecture,
      parent: record.parent,
      epochs: record.config.epochs,
      createdAt: record.createdAt,
      updatedAt: record.updatedAt,
      heartbeat: record.heartbeat === undefined ? undefined : {
        agent: record.heartbeat.agent,
        lastSeen: record.heartbeat.lastSeen,
      },
      metrics,
      weights,
      now: now(),
      stalledAfterMs,
      run: platformRun(record, stopRun !== undefined),
    };
  }

  async function summary(
    store: WebSource,
    record: ModelRecord,
  ): Promise<{ epochs: number; bestMap: number | undefined }> {
    const cached = summaries.get(record.id);
    if (cached !== undefined && cached.updatedAt === record.updatedAt) {
      return cached;
    }
    const metrics = await store.listMetrics(record.id) ?? [];
    const best = bestEpoch(metrics, undefined);
    const result = {
      updatedAt: record.updatedAt,
      epochs: metrics.length,
      bestMap: best?.value ?? record.weights.best?.map,
    };
    summaries.set(record.id, result);
    return result;
  }

  function notFound(c: Context, id: string): Response {
    return page(
      c,
      renderDocument({
        title: "Model not found · Local HUB",
        body: markup`<h1>Model not found</h1>
<p>Cannot find the model <code>${id}</code> on this HUB.</p>
<p><a href="/">All models</a></p>`,
      }).value,
      404,
    );
  }

  const app = new Hono();
  // Pages and assets compress well (a 300-epoch page to about a fifth);
  // the event stream and weights are never compressed.
  const compressed = compress({
    contentTypeFilter: /^text\/(?:html|css|javascript)/,
  });
  app.use("/", compressed);
  app.use("/models/:id", compressed);
  app.use("/web/*", compressed);

  app.get(STYLE_PATH, () =>
    new Response(STYLE_CSS, {
      headers: {
        "content-type": "text/css; charset=utf-8",
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
      },
    }));
  app.get(SCRIPT_PATH, () =>
    new Response(CLIENT_JS, {
      headers: {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
      },
    }));

  app.get("/login", async (c) => {
    const next = safeNext(c.req.query("next"));
    if (await authorizes(c)) return c.redirect(next, 303);
    return page(c, renderLoginPage(next).value);
  });
  app.post("/login", csrf(), async (c) => {
    const form = await c.req.parseBody();
    const next = safeNext(typeof form.next === "string" ? form.next : "/");
    const key = typeof form.key === "string" ? form.key : "";
    if (!sessions.keyed) return c.redirect(next, 303);
    if (!sessions.checkKey(key)) {
      return page(
        c,
        renderLoginPage(next, "That API key is not accepted by this HUB.")
          .value,
        401,
      );
    }
    await sessions.startSession(c);
    return c.redirect(next, 303);
  });
  app.post("/logout", csrf(), async (c) => {
    await sessions.endSession(c);
    return c.redirect(sessions.keyed ? "/login" : "/", 303);
  });

  app.get("/", async (c, next) => {
    if (!wantsHtml(c.req.raw)) return await next();
    const denied = await guard(c);
    if (denied !== undefined) return denied;
    const store = await source(c.req.raw);
    const query = (c.req.query("q") ?? "").trim().slice(0, 200);
    const needle = query.toLowerCase();
    const records: ModelRecord[] = [];
    const seen = new Set<string>();
    for await (const id of allIds(store)) {
      seen.add(id);
      const record = await cachedRecord(store, id);
      if (record === undefined) continue;
      if (needle !== "" && !record.name.toLowerCase().includes(needle)) {
        continue;
      }
      records.push(record);
    }
    for (const id of [...recordCache.keys()]) {
      if (!seen.has(id)) recordCache.delete(id);
    }
    records.sort((a, b) =>
      b.updatedAt - a.updatedAt || b.createdAt - a.createdAt
    );
    const pages = Math.max(1, Math.ceil(records.length / pageSize));
    const requested = Number.parseInt(c.req.query("page") ?? "1", 10);
    const current = Number.isFinite(requested)
      ? Math.min(Math.max(requested, 1), pages)
      : 1;
    const clock = now();
    const entries: ListEntry[] = [];
    for (
      const record of records.slice(
        (current - 1) * pageSize,
        current * pageSize,
      )
    ) {
      const { epochs, bestMap } = await summary(store, record);
      entries.push({
        id: record.id,
        name: record.name,
        status: record.status,
        epochsCompleted: epochs,
        epochs: record.config.epochs,
        bestMap,
        updatedAt: record.updatedAt,
        stalled: isStalled({
          status: record.status,
          heartbeat: record.heartbeat,
          updatedAt: record.updatedAt,
          now: clock,
          stalledAfterMs,
        }),
      });
    }
    return page(
      c,
      renderListPage({
        entries,
        query,
        page: current,
        pages,
        total: records.length,
        now: clock,
        stalledAfterMs,
      }, { logout: sessions.keyed && !sessions.checkHeaders(c.req.raw) }).value,
    );
  });

  app.get("/models/:id", async (c) => {
    const denied = await guard(c);
    if (denied !== undefined) return denied;
    const id = c.req.param("id");
    if (c.req.query("part") === "live") {
      // Every open page of a model asks for this after each update: render
      // it once per change, not once per page.
      const store = await source(c.req.raw);
      const record = await store.get(id);
      if (record === undefined) return notFound(c, id);
      const version = `${record.updatedAt}|${await store.epochCount(id)}`;
      let cached = liveParts.get(id);
      if (cached?.version !== version) {
        // Shared by every page waiting for it: not tied to this request's
        // time limit (each request still has its own).
        const html = modelView(undefined, id).then((view) =>
          view === undefined ? undefined : renderModelLive(view).value
        );
        cached = { version, html };
        liveParts.delete(id);
        liveParts.set(id, cached);
        if (liveParts.size > LIVE_PART_CACHE) {
          liveParts.delete(liveParts.keys().next().value!);
        }
        html.catch(() => liveParts.delete(id));
      }
      const part = await cached.html;
      if (part === undefined) return notFound(c, id);
      return page(c, part);
    }
    const view = await modelView(c.req.raw, id);
    if (view === undefined) return notFound(c, id);
    return page(
      c,
      renderModelPage(view, {
        logout: sessions.keyed && !sessions.checkHeaders(c.req.raw),
      }).value,
    );
  });

  // The Stop button of a Platform run: a same-origin form (csrf), checked
  // like the page itself.
  app.post("/models/:id/stop", csrf(), async (c) => {
    const denied = await guard(c);
    if (denied !== undefined) return denied;
    const id = c.req.param("id");
    if (stopRun === undefined || !await stopRun(id)) return notFound(c, id);
    live.notify(id);
    return c.redirect(`/models/${encodeURIComponent(id)}`, 303);
  });

  app.get("/models/:id/events", async (c) => {
    if (!await authorizes(c)) {
      return c.json({
        success: false,
        message: "Cannot open the event stream: log in first",
      }, 401);
    }
    const id = c.req.param("id");
    const stream = async () => {
      const store = await source(c.req.raw);
      const record = await store.get(id);
      if (record === undefined) return undefined;
      return {
        status: record.status,
        epochs: await store.epochCount(id),
        updatedAt: record.updatedAt,
      };
    };
    return live.stream(id, stream, signal);
  });

  app.get("/models/:id/metrics.:format{csv|json}", async (c) => {
    if (!await authorizes(c)) {
      return c.json({
        success: false,
        message: "Cannot download the metrics: log in first",
      }, 401);
    }
    const id = c.req.param("id");
    const store = await source(c.req.raw);
    const record = await store.get(id);
    const metrics = record === undefined
      ? undefined
      : await store.listMetrics(id);
    if (metrics === undefined) return notFound(c, id);
    return metricsDownload(
      id,
      metrics,
      c.req.param("format") as "csv" | "json",
    );
  });

  return { app, live, authorizes };
}
