/**
 * `GET|HEAD /v1/models/{id}/files/{last.pt|best.pt}`: downloads weights,
 * with an API key, with the model's download token in the URL (so that
 * the `resume`/`weights` URLs of a document work as they are) or from a
 * browser logged in to the web app.
 *
 * @module
 */

import { Hono } from "hono";
import { UNAUTHENTICATED } from "../auth.ts";
import type { HubContext } from "../context.ts";
import { requestSignal } from "../deadline.ts";
import { hubError } from "../errors.ts";
import { fail } from "../reply.ts";

/**
 * The download route.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function fileRoutes(hub: HubContext): Hono {
  return new Hono().get("/v1/models/:id/files/:name", async (c) => {
    const id = c.req.param("id");
    const name = c.req.param("name");
    const store = await hub.store(c.req.raw);
    const record = await store.get(id);
    if (
      !hub.keys.accepts(c.req.raw) &&
      !(record !== undefined &&
        hub.keys.tokenMatches(c.req.query("token"), record.downloadToken)) &&
      !(await hub.browserSession?.(c) ?? false)
    ) {
      return fail(401, UNAUTHENTICATED);
    }
    if (record === undefined) {
      throw hubError(404, `Cannot find the model "${id}"`);
    }
    const kind = name === "last.pt"
      ? "last"
      : name === "best.pt"
      ? "best"
      : undefined;
    const info = kind === undefined ? undefined : record.weights[kind];
    if (kind === undefined || info === undefined) {
      throw hubError(
        404,
        `Cannot find the file "${name}" of the model "${id}"`,
      );
    }
    const read = await store.readWeights(info);
    if (read === undefined) {
      throw hubError(
        404,
        `Cannot find the file "${name}" of the model "${id}"`,
      );
    }
    const late = requestSignal(c.req.raw);
    if (late?.aborted) {
      // Answered 503 already: nobody reads this body.
      await read.body.cancel();
      throw late.reason;
    }
    const headers = {
      "content-type": "application/octet-stream",
      "content-length": String(read.size),
      "content-disposition": `attachment; filename="${name}"`,
      "etag": `"${info.sha256}"`,
      "x-checksum-sha256": info.sha256,
    };
    if (c.req.method === "HEAD") {
      await read.body.cancel();
      return new Response(null, { status: 200, headers });
    }
    const bunFile = (globalThis as { Bun?: { file?: (path: string) => Blob } })
      .Bun?.file;
    if (typeof bunFile === "function" && read.localPath !== undefined) {
      // Bun replaces Content-Length of a stream body with chunked encoding;
      // its lazy file blob keeps the length (and is sent with sendfile). The
      // blob's file is immutable (content-addressed), so the path is safe.
      await read.body.cancel();
      return new Response(bunFile(read.localPath), { status: 200, headers });
    }
    return new Response(read.body, { status: 200, headers });
  });
}
