/**
 * `POST /v1/models/{id}/export`: records an export request (the local HUB
 * does not convert models).
 *
 * @module
 */

import { Hono } from "hono";
import { requireKey } from "../auth.ts";
import { jsonBody } from "../body.ts";
import { type HubContext, modelNotFound, readModelJson } from "../context.ts";
import { hubError } from "../errors.ts";
import { MAX_EXPORT_REQUESTS } from "../limits.ts";
import { ok } from "../reply.ts";

/**
 * The export route.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function exportRoutes(hub: HubContext): Hono {
  return new Hono().post(
    "/v1/models/:id/export",
    requireKey(hub.keys),
    jsonBody(hub),
    async (c) => {
      const { id, store, body } = await readModelJson(hub, c);
      const format = body.format;
      if (
        typeof format !== "string" || format.trim() === "" ||
        format.length > 64
      ) {
        throw hubError(
          400,
          'Cannot export the model as "format" is not a string of 1 to 64 characters',
        );
      }
      const requestedAt = hub.now();
      const updated = await store.update(id, (r) => {
        r.exports.push({ format, requestedAt });
        // A document stays bounded: only the latest requests are kept.
        r.exports.splice(
          0,
          Math.max(0, r.exports.length - MAX_EXPORT_REQUESTS),
        );
      }, requestedAt);
      if (updated === undefined) throw modelNotFound(id);
      return ok(
        { format, status: "queued" },
        "Export request recorded (the local HUB does not convert models)",
      );
    },
  );
}
