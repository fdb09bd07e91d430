/**
 * Metrics: `POST /v1/models/{id}` with `{type: "metrics", ...}` stores
 * epochs, `GET /v1/models/{id}/metrics` lists them.
 *
 * @module
 */

import { Hono } from "hono";
import type { StoredEpochMetrics } from "../../protocol/types.ts";
import { requireKey } from "../auth.ts";
import { jsonBody } from "../body.ts";
import { type HubContext, modelNotFound, readModelJson } from "../context.ts";
import { parseMetrics } from "../model_input.ts";
import { ok } from "../reply.ts";

/**
 * The metrics routes.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function metricsRoutes(hub: HubContext): Hono {
  const app = new Hono();
  app.post("/v1/models/:id", requireKey(hub.keys), jsonBody(hub), async (c) => {
    const { id, store, body } = await readModelJson(hub, c);
    const metrics = parseMetrics(body);
    const epochs = [...metrics.keys()].sort((a, b) => a - b);
    const updated = await store.appendMetrics(id, metrics, hub.now());
    if (updated === undefined) throw modelNotFound(id);
    return ok({ epochs }, "Model metrics uploaded");
  });
  app.get(
    "/v1/models/:id/metrics",
    requireKey(hub.keys, hub.browserSession),
    async (c) => {
      const id = c.req.param("id");
      const list = await (await hub.store(c.req.raw)).listMetrics(id);
      if (list === undefined) throw modelNotFound(id);
      return ok(list as StoredEpochMetrics[], "Model metrics found");
    },
  );
  return app;
}
