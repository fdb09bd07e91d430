/**
 * `POST /v1/models/{id}/upload`: a checkpoint (`type=epoch`, file part
 * `last.pt`) or the final weights (`type=final`, file part `best.pt`),
 * streamed into a blob writer of the weights store while its sha256 is
 * computed, checked against the optional `sha256` field, published under its
 * content address, and committed by the model document naming it
 * (`HubStore.commitWeights`).
 *
 * @module
 */

import { Hono } from "hono";
import {
  CHECKSUM_FIELD,
  CHECKSUM_MISMATCH,
  UPLOAD_FILE_PARTS,
} from "../../protocol/upload.ts";
import { requireKey } from "../auth.ts";
import { streamedBody, uploadLimit } from "../body.ts";
import { findModel, type HubContext, modelNotFound } from "../context.ts";
import {
  BodyAbortedError,
  disconnectSignal,
  hubError,
  isBodyReadFailure,
  UPLOAD_ABORTED,
} from "../errors.ts";
import { parseBool } from "../model_input.ts";
import { getBoundary, MultipartError, parseMultipart } from "../multipart.ts";
import { pauseDeadline } from "../deadline.ts";
import { ok } from "../reply.ts";
import { BlobChecksumError } from "../storage/contract.ts";
import type { HubStore, WeightsKind } from "../store.ts";

/**
 * The upload route.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function uploadRoutes(hub: HubContext): Hono {
  const app = new Hono();
  const check = async (
    c: { req: { param(name: "id"): string; raw: Request } },
    next: () => Promise<void>,
  ): Promise<void> => {
    await findModel(await hub.store(c.req.raw), c.req.param("id"));
    await next();
  };
  app.post(
    "/v1/models/:id/upload",
    requireKey(hub.keys),
    check,
    uploadLimit(hub.maxUploadBytes),
    async (c) =>
      await receive(
        hub,
        c.req.raw,
        streamedBody(c),
        await hub.store(c.req.raw),
        c.req.param("id"),
      ),
  );
  return app;
}

function uploadSignal(
  hub: HubContext,
  request: Request,
): AbortSignal | undefined {
  const signals = [disconnectSignal(request), hub.signal].filter(
    (s): s is AbortSignal => s !== undefined,
  );
  return signals.length <= 1 ? signals[0] : AbortSignal.any(signals);
}

async function receive(
  hub: HubContext,
  request: Request,
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | null,
  store: HubStore,
  id: string,
): Promise<Response> {
  const boundary = getBoundary(request.headers.get("content-type"));
  if (boundary === undefined) {
    throw hubError(
      400,
      "Cannot accept the upload as it is not multipart/form-data with a boundary",
    );
  }
  if (body === null) {
    throw hubError(400, "Cannot accept the upload as it has no body");
  }
  let parsed;
  // The time the body takes to arrive is the idle timeout's to bound; the
  // commit after it is the request's time limit's.
  const resume = pauseDeadline(request);
  try {
    parsed = await parseMultipart(body, {
      boundary,
      // The writer stops when the request's time runs out during the
      // commit (its clock waits while the body arrives).
      createSink: () =>
        store.createWeightsWriter(id, {
          maxBytes: hub.maxUploadBytes,
        }),
      maxBytes: hub.maxUploadBytes,
      signal: uploadSignal(hub, request),
    });
  } catch (error) {
    if (hub.signal?.aborted) {
      throw hubError(
        503,
        "Cannot finish the upload as the server is shutting down",
      );
    }
    if (disconnectSignal(request)?.aborted || isBodyReadFailure(error)) {
      // The client went away mid-body: not a server error. The temporary
      // writer is already aborted.
      throw new BodyAbortedError(UPLOAD_ABORTED);
    }
    if (error instanceof MultipartError) {
      throw hubError(error.status, error.message);
    }
    throw error;
  } finally {
    resume();
  }
  const { fields, file } = parsed;
  const now = hub.now;
  let committed = false;
  try {
    const type = fields.get("type");
    if (type !== "epoch" && type !== "final") {
      throw hubError(
        400,
        `Cannot accept the upload as "type" is ${
          JSON.stringify(type ?? null)
        }, not "epoch" or "final"`,
      );
    }
    const epochText = fields.get("epoch");
    if (epochText === undefined || !/^\s*\d{1,9}\s*$/.test(epochText)) {
      throw hubError(
        400,
        `Cannot accept the upload as "epoch" is ${
          JSON.stringify(epochText ?? null)
        }, not a non-negative integer`,
      );
    }
    const epoch = Number(epochText);
    const expected = UPLOAD_FILE_PARTS[type];
    if (file === undefined) {
      throw hubError(
        400,
        `Cannot accept the upload as it has no file part "${expected}"`,
      );
    }
    if (file.field !== expected) {
      throw hubError(
        400,
        `Cannot accept the upload as a "${type}" upload needs the file part "${expected}", not "${file.field}"`,
      );
    }
    const checksum = fields.get(CHECKSUM_FIELD);
    let want: string | undefined;
    if (checksum !== undefined) {
      want = checksum.trim().toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(want)) {
        throw hubError(
          400,
          `Cannot accept the upload as "${CHECKSUM_FIELD}" is not 64 hexadecimal digits`,
        );
      }
    }
    let info;
    if (type === "epoch") {
      const isBest = parseBool(fields.get("isBest") ?? "", "isBest");
      info = { epoch, uploadedAt: now(), isBest };
    } else {
      const mapText = fields.get("map");
      const map = mapText === undefined || mapText.trim() === ""
        ? undefined
        : Number(mapText);
      if (map !== undefined && !isFinite(map)) {
        throw hubError(
          400,
          `Cannot accept the upload as "map" is ${
            JSON.stringify(mapText)
          }, not a number`,
        );
      }
      info = {
        epoch,
        uploadedAt: now(),
        ...(map === undefined ? {} : { map }),
      };
    }
    const kind: WeightsKind = type === "final" ? "best" : "last";
    // The writer is finished (checked, durable, published) or aborted
    // inside, and the document then names it: the commit point.
    committed = true;
    let record;
    try {
      record = await store.commitWeights(
        id,
        kind,
        file.writer,
        want,
        info,
        now(),
      );
    } catch (error) {
      if (error instanceof BlobChecksumError) {
        throw hubError(
          400,
          `${CHECKSUM_MISMATCH}: the file part's sha256 is ${error.actual}, the client sent ${error.expected}`,
        );
      }
      throw error;
    }
    const stored = record?.weights[kind];
    if (record === undefined || stored === undefined) {
      throw modelNotFound(id);
    }
    return ok(
      { sha256: stored.sha256, size: stored.size, epoch, type },
      type === "final"
        ? "Model optimized weights uploaded"
        : "Model checkpoint weights uploaded",
    );
  } finally {
    if (!committed && file !== undefined) await file.writer.abort();
  }
}
