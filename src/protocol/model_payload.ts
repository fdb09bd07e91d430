/**
 * The model-creation payload of the v1 protocol and its defaults: one home
 * for the client (which builds it) and the server (which reads it).
 *
 * @module
 */

import { basename } from "node:path";
import { DEFAULT_MODEL_CONFIG } from "./model.ts";
import type { CreateModelPayload, TrainArgs } from "./types.ts";

/**
 * Builds the exact create-model payload of the v1 protocol from a file name
 * and the trainer's arguments.
 *
 * @param filename Local `.pt` or `.yaml` file name.
 * @param args The trainer's arguments.
 * @returns The payload.
 *
 * @example Payload for a pretrained model
 * ```ts
 * import { createModelPayload } from "./model_payload.ts";
 *
 * const payload = createModelPayload("yolov8n.pt", { data: "coco8.yaml" });
 * console.assert(payload.lineage.parent.name === "yolov8n.pt");
 * console.assert(payload.config.imageSize === 640);
 * ```
 */
export function createModelPayload(
  filename: string,
  args: TrainArgs,
): CreateModelPayload {
  const num = (value: unknown, fallback: number): number =>
    typeof value === "number" && Number.isFinite(value) ? value : fallback;
  const d = DEFAULT_MODEL_CONFIG;
  const name = basename(filename);
  const payload: CreateModelPayload = {
    config: {
      batchSize: num(args.batch, d.batchSize),
      epochs: num(args.epochs, d.epochs),
      imageSize: num(args.imgsz, d.imageSize),
      patience: num(args.patience, d.patience),
      device: String(args.device ?? d.device),
      cache: String(args.cache ?? d.cache),
    },
    dataset: { name: typeof args.data === "string" ? args.data : undefined },
    lineage: {
      architecture: { name: name.replace(/\.pt$/, "").replace(/\.yaml$/, "") },
      parent: {},
    },
    meta: { name },
  };
  if (name.endsWith(".pt")) payload.lineage.parent.name = name;
  return payload;
}
