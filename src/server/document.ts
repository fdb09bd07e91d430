/**
 * The model document of `GET /v1/models/{id}`: a stored record rendered with
 * every field the protocol and the Python clients read.
 *
 * @module
 */

import type { ModelDocument } from "../protocol/types.ts";
import type { ModelRecord, WeightsKind } from "./store.ts";

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The URL of a model's weights file.
 *
 * @param base Origin (or public URL) of the server, without trailing slash.
 * @param record The model.
 * @param kind `last` or `best`.
 * @param withToken Append the model's download token (servers with keys).
 * @returns The absolute URL.
 */
export function weightsUrl(
  base: string,
  record: ModelRecord,
  kind: WeightsKind,
  withToken: boolean,
): string {
  return `${base}/v1/models/${record.id}/files/${kind}.pt${
    withToken ? `?token=${record.downloadToken}` : ""
  }`;
}

/**
 * Renders a record as the protocol's model document.
 *
 * @param record The model.
 * @param base Origin (or public URL) for the weights URLs.
 * @param withToken Put the download token into the weights URLs.
 * @param epochsCompleted Number of epochs with stored metrics.
 * @returns The document.
 */
export function renderDocument(
  record: ModelRecord,
  base: string,
  withToken: boolean,
  epochsCompleted: number,
): ModelDocument {
  const fileUrl = (kind: WeightsKind): string =>
    weightsUrl(base, record, kind, withToken);
  const { last, best } = record.weights;
  const c = record.config;
  const cfg = /\.ya?ml$/.test(record.architecture)
    ? record.architecture
    : `${record.architecture}.yaml`;
  const weights = best !== undefined ? fileUrl("best") : record.parent;
  return {
    ...record.extra,
    id: record.id,
    name: record.name,
    status: record.status,
    createdAt: iso(record.createdAt),
    updatedAt: iso(record.updatedAt),
    meta: { name: record.name },
    data: record.dataset,
    dataset: { name: record.dataset },
    cfg,
    lineage: {
      architecture: { name: record.architecture },
      parent: record.parent === undefined ? {} : { name: record.parent },
    },
    ...(weights === undefined ? {} : { weights }),
    ...(last === undefined ? {} : { resume: fileUrl("last") }),
    has_last_weights: last !== undefined,
    has_best_weights: best !== undefined,
    is_pretrained: record.parent !== undefined,
    is_custom: record.parent === undefined,
    train_args: {
      batch: c.batchSize,
      epochs: c.epochs,
      imgsz: c.imageSize,
      patience: c.patience,
      device: c.device,
      cache: c.cache,
      data: record.dataset,
    },
    batch_size: c.batchSize,
    epochs: c.epochs,
    imgsz: c.imageSize,
    patience: c.patience,
    device: c.device,
    cache: c.cache,
    config: { ...c },
    checkpoints: {
      last: last === undefined
        ? null
        : { ...last, uploadedAt: iso(last.uploadedAt) },
      best: best === undefined
        ? null
        : { ...best, uploadedAt: iso(best.uploadedAt) },
    },
    ...(best?.map === undefined ? {} : { map: best.map }),
    epochs_completed: epochsCompleted,
    heartbeat: record.heartbeat === undefined ? null : {
      agentId: record.heartbeat.agentId,
      agent: record.heartbeat.agent,
      lastSeen: iso(record.heartbeat.lastSeen),
    },
    exports: record.exports.map((e) => ({
      format: e.format,
      requestedAt: iso(e.requestedAt),
    })),
  };
}
