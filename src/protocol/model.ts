/**
 * The model-creation payload of `POST /v1/models`: its training
 * configuration defaults, which the client sends when the trainer gives no
 * value and the server stores when the client sends none.
 *
 * @module
 */

import type { CreateModelPayload } from "./types.ts";

/** The training configuration of a model-creation payload. */
export type ModelConfig = CreateModelPayload["config"];

/**
 * Defaults of the training configuration: batch size `-1` (the trainer
 * chooses), 300 epochs, 640 px images, patience 100, any device, RAM cache.
 *
 * @example Read a default
 * ```ts
 * import { DEFAULT_MODEL_CONFIG } from "./model.ts";
 *
 * console.assert(DEFAULT_MODEL_CONFIG.imageSize === 640);
 * ```
 */
export const DEFAULT_MODEL_CONFIG: Readonly<ModelConfig> = Object.freeze({
  batchSize: -1,
  epochs: 300,
  imageSize: 640,
  patience: 100,
  device: "",
  cache: "ram",
});
