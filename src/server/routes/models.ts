/**
 * Model documents: `POST /v1/models` creates one,
 * `GET|PATCH|DELETE /v1/models/{id}` read, change and delete it.
 *
 * @module
 */

import { Hono } from "hono";
import { requireKey } from "../auth.ts";
import { jsonBody, readJsonObject } from "../body.ts";
import {
  findModel,
  type HubContext,
  modelNotFound,
  readModelJson,
} from "../context.ts";
import { renderDocument } from "../document.ts";
import { hubError } from "../errors.ts";
import { applyPatch, parseBool, readNewModel } from "../model_input.ts";
import { ok } from "../reply.ts";

/**
 * The model document routes.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function modelRoutes(hub: HubContext): Hono {
  const withToken = hub.keys.required;
  const app = new Hono();
  app.post("/v1/models", requireKey(hub.keys), jsonBody(hub), async (c) => {
    const body = await readJsonObject(c.req.raw);
    const store = await hub.store(c.req.raw);
    const record = await store.create(readNewModel(body), hub.now());
    return ok({ id: record.id }, "Model created");
  });
  app.get(
    "/v1/models/:id",
    requireKey(hub.keys, hub.browserSession),
    async (c) => {
      const id = c.req.param("id");
      const store = await hub.store(c.req.raw);
      const record = await findModel(store, id);
      return ok(
        renderDocument(
          record,
          hub.origin(c.req.raw),
          withToken,
          await store.epochCount(id),
        ),
        "Model found",
      );
    },
  );
  app.patch(
    "/v1/models/:id",
    requireKey(hub.keys),
    jsonBody(hub),
    async (c) => {
      const { id, store, body } = await readModelJson(hub, c);
      const updated = await store.update(
        id,
        (r) => applyPatch(r, body),
        hub.now(),
      );
      if (updated === undefined) throw modelNotFound(id);
      return ok(
        renderDocument(
          updated.record,
          hub.origin(c.req.raw),
          withToken,
          await store.epochCount(id),
        ),
        "Model updated",
      );
    },
  );
  app.delete("/v1/models/:id", requireKey(hub.keys), async (c) => {
    const id = c.req.param("id");
    const hardText = c.req.query("hard");
    let hard = false;
    if (hardText !== undefined) {
      try {
        hard = parseBool(hardText, "hard");
      } catch {
        throw hubError(
          400,
          `Cannot delete the model as "hard" is ${
            JSON.stringify(hardText)
          }, not true or false`,
        );
      }
    }
    const store = await hub.store(c.req.raw);
    if (!await store.delete(id, hard, hub.now())) throw modelNotFound(id);
    return ok(
      { id, hard },
      hard ? "Model deleted permanently" : "Model deleted",
    );
  });
  return app;
}
