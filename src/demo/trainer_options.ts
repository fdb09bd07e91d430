/**
 * The options, arguments and results of the demo's `TinyTrainer`.
 *
 * @module
 */

/**
 * Options for `TinyTrainer`.
 *
 * @example Train briefly with a fixed seed
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { TinyTrainerOptions } from "./trainer_options.ts";
 *
 * const options: TinyTrainerOptions = { epochs: 1, seed: 1, samples: 100 };
 * await new TinyTrainer(options).trainEpoch();
 * ```
 */
export interface TinyTrainerOptions {
  /**
   * Number of epochs to train.
   *
   * @default {20}
   */
  epochs?: number | undefined;
  /**
   * Seed of the dataset, the weight initialisation and the shuffling; the
   * same seed gives the same metrics on the same runtime.
   *
   * @default {42}
   */
  seed?: number | undefined;
  /**
   * Width of each of the two hidden layers.
   *
   * @default {32}
   */
  hidden?: number | undefined;
  /**
   * Initial Adam learning rate; it decays linearly to a tenth of this value
   * over the epochs.
   *
   * @default {0.01}
   */
  learningRate?: number | undefined;
  /**
   * Mini-batch size.
   *
   * @default {32}
   */
  batchSize?: number | undefined;
  /**
   * Number of generated points; 80 % train, 20 % validation.
   *
   * @default {3000}
   */
  samples?: number | undefined;
  /**
   * Aborts training: checked between mini-batches, `TinyTrainer.trainEpoch`
   * then rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/**
 * The training arguments of a `TinyTrainer`, in HUB terms.
 *
 * @example Build a HUB model config from the arguments
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { TinyTrainerArgs } from "./trainer_options.ts";
 *
 * const args: TinyTrainerArgs = new TinyTrainer({ samples: 100 }).args;
 * const config = { epochs: args.epochs, batchSize: args.batch, imageSize: args.imgsz };
 * console.log(config);
 * ```
 */
export interface TinyTrainerArgs {
  /** Number of epochs. */
  readonly epochs: number;
  /** Mini-batch size. */
  readonly batch: number;
  /** Input size: features per sample (the points are 2-D). */
  readonly imgsz: number;
  /** Epochs without improvement before stopping early (no early stop). */
  readonly patience: number;
  /** Device the training runs on. */
  readonly device: string;
  /** Dataset cache mode (generated in memory). */
  readonly cache: string;
  /** Dataset name. */
  readonly data: string;
  /** Architecture name, e.g. `mlp-2-32-32-2`. */
  readonly model: string;
  /** Initial learning rate. */
  readonly lr0: number;
  /** Final learning rate as a fraction of `lr0`. */
  readonly lrf: number;
  /** Seed of the dataset, initialisation and shuffling. */
  readonly seed: number;
  /** Number of generated points. */
  readonly samples: number;
}

/**
 * What `TinyTrainer.trainEpoch` returns for one epoch.
 *
 * @example Read an epoch's result
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { EpochResult } from "./trainer_options.ts";
 *
 * const result: EpochResult = await new TinyTrainer({ epochs: 1, samples: 100 })
 *   .trainEpoch();
 * console.log(result.epoch, result.metrics["train/loss"], result.isBest);
 * ```
 */
export interface EpochResult {
  /** Zero-based number of the epoch just trained. */
  epoch: number;
  /**
   * YOLO-style metrics: `train/loss`, `val/loss`, `metrics/accuracy`,
   * `metrics/precision`, `metrics/recall`, `lr/pg0`; at epoch 0 also
   * `model/parameters`, `model/GFLOPs` and `model/speed_PyTorch(ms)`.
   */
  metrics: Record<string, number>;
  /** Whether this epoch's fitness is the best so far. */
  isBest: boolean;
  /** Fitness of this epoch: the validation accuracy. */
  fitness: number;
}

/**
 * Size and speed of a `TinyTrainer`'s model.
 *
 * @example Read the model's size
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { ModelInfo } from "./trainer_options.ts";
 *
 * const info: ModelInfo = new TinyTrainer({ samples: 100, hidden: 8 }).info();
 * console.log(info.parameters); // 122
 * ```
 */
export interface ModelInfo {
  /** Number of trainable parameters. */
  parameters: number;
  /** Floating-point operations of one forward pass of one sample, in 1e9. */
  gflops: number;
  /** Measured inference time per sample in milliseconds. */
  speedMs: number;
}

/**
 * Options for `TinyTrainer.save` and `TinyTrainer.serialize`.
 *
 * @example Encode only the weights, as for a final best.pt
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { SaveOptions } from "./trainer_options.ts";
 *
 * const options: SaveOptions = { optimizer: false };
 * const bytes = new TinyTrainer({ samples: 100 }).serialize(options);
 * console.log(bytes.length);
 * ```
 */
export interface SaveOptions {
  /**
   * Whether the Adam moments are stored too, so that resumed training
   * continues exactly; without them the file holds only the weights (as a
   * final `best.pt` would).
   *
   * @default {true}
   */
  optimizer?: boolean | undefined;
}

/**
 * Options for `TinyTrainer.load` and `TinyTrainer.deserialize`.
 *
 * @example Restore a trainer that a signal can stop
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import type { LoadOptions } from "./trainer_options.ts";
 *
 * const options: LoadOptions = { signal: AbortSignal.timeout(60_000) };
 * const bytes = new TinyTrainer({ samples: 100 }).serialize();
 * const trainer = TinyTrainer.deserialize(bytes, options);
 * console.log(trainer.epoch); // 0
 * ```
 */
export interface LoadOptions {
  /**
   * Signal for the restored trainer (see `signal`).
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/**
 * The magic bytes every checkpoint starts with.
 *
 * @example Recognise a checkpoint
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 * import { CHECKPOINT_MAGIC } from "./trainer.ts";
 *
 * const bytes = new TinyTrainer({ samples: 100 }).serialize();
 * const magic = new TextDecoder().decode(bytes.subarray(0, 8));
 * console.log(magic === CHECKPOINT_MAGIC); // true
 * ```
 */
