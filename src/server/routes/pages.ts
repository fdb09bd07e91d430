/**
 * HTML pages: `GET /` lists the models for browsers (other clients get the
 * JSON health reply there, as at `GET /v1`) and `GET /models/{id}` shows
 * one. Plain HTML without scripts, sent under a `Content-Security-Policy`
 * that forbids them anyway (Hono's `secureHeaders`).
 *
 * @module
 */

import { Hono } from "hono";
import { secureHeaders } from "hono/secure-headers";
import type { HubContext } from "../context.ts";
import { renderDocument, weightsUrl } from "../document.ts";
import { INDEX_MODELS } from "../limits.ts";
import {
  type IndexEntry,
  PAGE_EPOCHS,
  type PageWeights,
  renderIndexPage,
  renderMessagePage,
  renderModelPage,
  renderUnauthorizedPage,
} from "../page.ts";
import { healthReply, html, wantsHtml } from "../reply.ts";
import type { HubStore } from "../store.ts";

/**
 * Security headers of every page: no scripts, no external resources, no
 * framing, no referrer.
 *
 * @returns The middleware.
 */
export function pageHeaders(): ReturnType<typeof secureHeaders> {
  return secureHeaders({
    contentSecurityPolicy: {
      defaultSrc: ["'none'"],
      styleSrc: ["'unsafe-inline'"],
      baseUri: ["'none'"],
      formAction: ["'none'"],
      frameAncestors: ["'none'"],
    },
    // Plain HTTP on loopback: HSTS would only mislead.
    strictTransportSecurity: false,
    xFrameOptions: "DENY",
  });
}

/**
 * The page routes.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function pageRoutes(hub: HubContext): Hono {
  const app = new Hono();
  app.get(
    "/",
    async (c, next) => {
      if (!wantsHtml(c.req.raw)) return healthReply();
      await next();
    },
    pageHeaders(),
    async (c) => {
      if (!hub.keys.accepts(c.req.raw)) {
        return html(c.req.raw, 401, renderUnauthorizedPage());
      }
      return html(c.req.raw, 200, await indexPage(await hub.store()));
    },
  );
  app.get("/models/:id", pageHeaders(), async (c) => {
    if (!hub.keys.accepts(c.req.raw)) {
      return html(c.req.raw, 401, renderUnauthorizedPage());
    }
    return await modelPage(hub, c.req.raw, c.req.param("id"));
  });
  return app;
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
  hub: HubContext,
  request: Request,
  id: string,
): Promise<Response> {
  const store = await hub.store();
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
  const origin = hub.origin(request);
  const withToken = hub.keys.required;
  const weights: PageWeights[] = [];
  for (const kind of ["last", "best"] as const) {
    const info = record.weights[kind];
    if (info === undefined) continue;
    weights.push({
      name: `${kind}.pt`,
      url: weightsUrl(origin, record, kind, withToken),
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
