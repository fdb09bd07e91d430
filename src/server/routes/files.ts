/**
 * `GET|HEAD /v1/models/{id}/files/{last.pt|best.pt}`: downloads weights,
 * with an API key, with the model's download token in the URL (so that
 * the `resume`/`weights` URLs of a document work as they are) or from a
 * browser logged in to the web app.
 *
 * @module
 */

import { type FileHandle, open } from "node:fs/promises";
import { Hono } from "hono";
import { UNAUTHENTICATED } from "../auth.ts";
import type { HubContext } from "../context.ts";
import { hubError } from "../errors.ts";
import { fail } from "../reply.ts";

/** Bytes read from disk per chunk of a download. */
const FILE_CHUNK_BYTES = 1 << 20;

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
    const store = await hub.store();
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
    let handle: FileHandle;
    try {
      handle = await open(store.weightsPath(id, kind), "r");
    } catch {
      throw hubError(
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
    if (c.req.method === "HEAD") {
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
  });
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
