/**
 * A real, dependency-free tiny training in pure TypeScript for the demo: a
 * small multilayer perceptron learns to separate two interleaved spirals
 * generated from a seed. Each epoch reports YOLO-style metric names, and
 * checkpoints are the real weights in a small binary format (`HUBTINY1`).
 *
 * The dataset is in `spirals.ts`, the option and result types in
 * `trainer_options.ts`. The network, the optimiser and the checkpoint
 * encoding stay together here (~850 lines): all three walk the same flat
 * weight layout, and splitting them would export that layout.
 *
 * @module
 */

import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { derive, gaussian, INPUTS, mulberry32, twoSpirals } from "./spirals.ts";
import type {
  EpochResult,
  LoadOptions,
  ModelInfo,
  SaveOptions,
  TinyTrainerArgs,
  TinyTrainerOptions,
} from "./trainer_options.ts";

export const CHECKPOINT_MAGIC: string = "HUBTINY1";

const DATASET = "two-spirals";
const VAL_FRACTION = 0.2;
const LRF = 0.1;
const BETA1 = 0.9;
const BETA2 = 0.999;
const EPS = 1e-8;
const CLASSES = 2;
const YIELD_MS = 8;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Tensor {
  name: string;
  shape: number[];
}

interface CheckpointHeader {
  format: string;
  version: number;
  architecture: { sizes: number[]; activation: string };
  tensors: Tensor[];
  optimizer: {
    name: string;
    step: number;
    beta1: number;
    beta2: number;
    eps: number;
    moments: boolean;
  };
  dataset: { name: string; seed: number; samples: number; valFraction: number };
  epoch: number;
  epochs: number;
  bestFitness: number | null;
  bestEpoch: number;
  learningRate: number;
  lrf: number;
  batchSize: number;
  shuffleState: number;
}

function checkInteger(
  name: string,
  value: unknown,
  min: number,
  max: number,
): number {
  if (typeof value !== "number") {
    throw new TypeError(
      `Cannot create the trainer as "${name}" is not a number: ${typeof value}`,
    );
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot create the trainer as "${name}" is not an integer in [${min}, ${max}]: ${value}`,
    );
  }
  return value;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Trains a small MLP (2 → hidden → hidden → 2, tanh, softmax cross-entropy,
 * Adam with linear learning-rate decay) on a seeded two-spirals dataset.
 *
 * @example Train two epochs and read the metrics
 * ```ts
 * import { TinyTrainer } from "./trainer.ts";
 *
 * const trainer = new TinyTrainer({ epochs: 2, samples: 200 });
 * const first = await trainer.trainEpoch();
 * console.log(first.metrics["train/loss"], first.metrics["model/parameters"]);
 * const second = await trainer.trainEpoch();
 * console.log(second.epoch, second.fitness, trainer.done); // 1 … true
 * ```
 */
export class TinyTrainer {
  #sizes: number[];
  #offsets: { w: number; b: number }[] = [];
  #params: Float32Array;
  #m: Float32Array;
  #v: Float32Array;
  #grads: Float64Array;
  #step: number;
  #epoch: number;
  #epochs: number;
  #seed: number;
  #learningRate: number;
  #batchSize: number;
  #samples: number;
  #bestFitness: number;
  #bestEpoch: number;
  #shuffle: { s: number };
  #signal: AbortSignal | undefined;
  #trainX: Float32Array;
  #trainY: Uint8Array;
  #valX: Float32Array;
  #valY: Uint8Array;
  #order: Uint32Array;
  #speedMs: number | undefined;
  #busy = false;
  #args: TinyTrainerArgs;

  /**
   * Generates the dataset and initialises the weights; validates the options
   * first.
   *
   * @param options Training options.
   *
   * @example Create a trainer with the defaults
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ samples: 100 });
   * console.log(trainer.args.epochs, trainer.info().parameters); // 20 1218
   * ```
   */
  constructor(options: TinyTrainerOptions = {}) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        "Cannot create the trainer as options is not an object",
      );
    }
    const {
      epochs = 20,
      seed = 42,
      hidden = 32,
      learningRate = 0.01,
      batchSize = 32,
      samples = 3000,
      signal,
    } = options;
    checkInteger("epochs", epochs, 1, 1_000_000);
    checkInteger("seed", seed, 0, 0xffffffff);
    checkInteger("hidden", hidden, 1, 4096);
    checkInteger("batchSize", batchSize, 1, 1_000_000);
    checkInteger("samples", samples, 10, 10_000_000);
    if (typeof learningRate !== "number" || Number.isNaN(learningRate)) {
      throw new TypeError(
        `Cannot create the trainer as "learningRate" is not a number: ${
          String(learningRate)
        }`,
      );
    }
    if (!(learningRate > 0 && learningRate <= 10)) {
      throw new RangeError(
        `Cannot create the trainer as "learningRate" is out of range (0, 10]: ${learningRate}`,
      );
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        'Cannot create the trainer as "signal" is not an AbortSignal',
      );
    }
    this.#signal = signal;
    this.#sizes = [INPUTS, hidden, hidden, CLASSES];
    let offset = 0;
    for (let l = 0; l + 1 < this.#sizes.length; l++) {
      const fanIn = this.#sizes[l]!, fanOut = this.#sizes[l + 1]!;
      this.#offsets.push({ w: offset, b: offset + fanIn * fanOut });
      offset += fanIn * fanOut + fanOut;
    }
    this.#params = new Float32Array(offset);
    this.#m = new Float32Array(offset);
    this.#v = new Float32Array(offset);
    this.#grads = new Float64Array(offset);
    this.#epochs = epochs;
    this.#seed = seed;
    this.#learningRate = learningRate;
    this.#batchSize = batchSize;
    this.#samples = samples;
    this.#step = 0;
    this.#epoch = 0;
    this.#bestFitness = -Infinity;
    this.#bestEpoch = -1;
    this.#shuffle = { s: derive(seed, 3) };
    this.#initWeights();

    const { x, y } = twoSpirals(samples, seed);
    const nVal = Math.max(1, Math.round(samples * VAL_FRACTION));
    const nTrain = samples - nVal;
    this.#trainX = x.subarray(0, nTrain * INPUTS);
    this.#trainY = y.subarray(0, nTrain);
    this.#valX = x.subarray(nTrain * INPUTS);
    this.#valY = y.subarray(nTrain);
    this.#order = new Uint32Array(nTrain);
    this.#args = Object.freeze({
      epochs,
      batch: batchSize,
      imgsz: INPUTS,
      patience: epochs,
      device: "cpu",
      cache: "ram",
      data: DATASET,
      model: `mlp-${this.#sizes.join("-")}`,
      lr0: learningRate,
      lrf: LRF,
      seed,
      samples,
    });
  }

  /**
   * The training arguments in HUB terms (`epochs`, `batch`, `imgsz`, …).
   *
   * @example Read the arguments
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const { epochs, batch, data } = new TinyTrainer({ samples: 100 }).args;
   * console.log(epochs, batch, data); // 20 32 "two-spirals"
   * ```
   */
  get args(): TinyTrainerArgs {
    return this.#args;
  }

  /**
   * Number of epochs trained so far (the next epoch's zero-based number).
   *
   * @example Count epochs
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ epochs: 1, samples: 100 });
   * await trainer.trainEpoch();
   * console.log(trainer.epoch); // 1
   * ```
   */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * Whether all epochs are trained.
   *
   * @example Train until done
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ epochs: 2, samples: 100 });
   * while (!trainer.done) await trainer.trainEpoch();
   * ```
   */
  get done(): boolean {
    return this.#epoch >= this.#epochs;
  }

  /**
   * The best fitness (validation accuracy) so far; `0` before the first epoch.
   *
   * @example Read the best fitness
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ epochs: 1, samples: 100 });
   * await trainer.trainEpoch();
   * console.log(trainer.bestFitness > 0); // true
   * ```
   */
  get bestFitness(): number {
    return Math.max(0, this.#bestFitness);
  }

  /**
   * Parameter count, forward FLOPs per sample (in 1e9) and the measured
   * inference time per sample (measured on the validation set on first use).
   *
   * @returns The model's size and speed.
   *
   * @example Print the model's size
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const { parameters, gflops, speedMs } = new TinyTrainer({ samples: 100 }).info();
   * console.log(parameters, gflops, speedMs);
   * ```
   */
  info(): ModelInfo {
    let flops = 0;
    for (let l = 0; l + 1 < this.#sizes.length; l++) {
      flops += 2 * this.#sizes[l]! * this.#sizes[l + 1]!;
    }
    if (this.#speedMs === undefined) this.#evaluate();
    return {
      parameters: this.#params.length,
      gflops: flops / 1e9,
      speedMs: this.#speedMs ?? 0,
    };
  }

  /**
   * Trains one epoch of mini-batches, then evaluates on the validation set.
   * Yields to the event loop every few milliseconds, so timers (heartbeats,
   * uploads) keep running, and checks the signal between mini-batches.
   *
   * @returns The epoch's number, metrics, fitness and whether it is the best.
   * @throws {RangeError} When all epochs are already trained.
   * @throws {Error} When another epoch is still running.
   *
   * @example Train one epoch
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ epochs: 1, samples: 200 });
   * const { epoch, metrics, isBest } = await trainer.trainEpoch();
   * console.log(epoch, metrics["val/loss"], isBest); // 0 … true
   * ```
   */
  async trainEpoch(): Promise<EpochResult> {
    this.#signal?.throwIfAborted();
    if (this.#busy) {
      throw new Error(
        `Cannot train epoch ${this.#epoch} as another epoch is still running`,
      );
    }
    if (this.done) {
      throw new RangeError(
        `Cannot train epoch ${this.#epoch} as all ${this.#epochs} epochs are done`,
      );
    }
    this.#busy = true;
    try {
      return await this.#trainEpoch();
    } finally {
      this.#busy = false;
    }
  }

  async #trainEpoch(): Promise<EpochResult> {
    const epoch = this.#epoch;
    const lr = this.#learningRate *
      ((1 - epoch / this.#epochs) * (1 - LRF) + LRF);
    const rand = mulberry32(this.#shuffle);
    // Shuffle from the identity, so the order depends only on the saved
    // generator state and a resumed training continues exactly.
    const order = this.#order;
    for (let i = 0; i < order.length; i++) order[i] = i;
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    const scratch = this.#scratch();
    let lossSum = 0;
    let lastYield = performance.now();
    for (let start = 0; start < order.length; start += this.#batchSize) {
      this.#signal?.throwIfAborted();
      const end = Math.min(order.length, start + this.#batchSize);
      this.#grads.fill(0);
      for (let k = start; k < end; k++) {
        const i = order[k]!;
        lossSum += this.#forward(
          this.#trainX,
          i,
          this.#trainY[i]!,
          scratch,
          true,
        );
      }
      this.#adam(lr, end - start);
      if (performance.now() - lastYield > YIELD_MS) {
        await yieldToEventLoop();
        lastYield = performance.now();
      }
    }
    this.#signal?.throwIfAborted();
    const val = this.#evaluate();
    const fitness = val.accuracy;
    const isBest = fitness > this.#bestFitness;
    if (isBest) {
      this.#bestFitness = fitness;
      this.#bestEpoch = epoch;
    }
    const metrics: Record<string, number> = {
      "train/loss": lossSum / order.length,
      "val/loss": val.loss,
      "metrics/accuracy": val.accuracy,
      "metrics/precision": val.precision,
      "metrics/recall": val.recall,
      "lr/pg0": lr,
    };
    if (epoch === 0) {
      const info = this.info();
      metrics["model/parameters"] = info.parameters;
      metrics["model/GFLOPs"] = info.gflops;
      metrics["model/speed_PyTorch(ms)"] = info.speedMs;
    }
    this.#epoch = epoch + 1;
    return { epoch, metrics, isBest, fitness };
  }

  /**
   * Class probabilities for points given as flat `[x0, y0, x1, y1, …]`.
   *
   * @param points Flat 2-D coordinates; its length must be even.
   * @returns `[p0(class 0), p0(class 1), p1(class 0), …]`.
   *
   * @example Classify two points
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ samples: 100 });
   * const probs = trainer.predict([0.1, 0.2, -0.5, 0.5]);
   * console.log(probs.length); // 4
   * ```
   */
  predict(points: ArrayLike<number>): Float32Array {
    if (points.length % INPUTS !== 0) {
      throw new RangeError(
        `Cannot predict as the number of coordinates is not even: ${points.length}`,
      );
    }
    const x = Float32Array.from(points);
    const n = x.length / INPUTS;
    const out = new Float32Array(n * CLASSES);
    const scratch = this.#scratch();
    for (let i = 0; i < n; i++) {
      this.#forward(x, i, 0, scratch, false);
      out[i * 2] = scratch.probs[0]!;
      out[i * 2 + 1] = scratch.probs[1]!;
    }
    return out;
  }

  /**
   * Encodes the trainer as a checkpoint: `HUBTINY1`, a little-endian uint32
   * header length, a JSON header (tensor shapes, epoch, best fitness,
   * optimizer step, dataset seed, …), then the float32 tensors little-endian.
   *
   * @param options What to include.
   * @returns The checkpoint's bytes.
   *
   * @example Encode and decode a trainer
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const trainer = new TinyTrainer({ samples: 100 });
   * const copy = TinyTrainer.deserialize(trainer.serialize());
   * console.log(copy.epoch); // 0
   * ```
   */
  serialize(options: SaveOptions = {}): Uint8Array {
    const { optimizer = true } = options;
    const tensors: Tensor[] = [];
    for (let l = 0; l + 1 < this.#sizes.length; l++) {
      const fanIn = this.#sizes[l]!, fanOut = this.#sizes[l + 1]!;
      tensors.push({ name: `fc${l + 1}.weight`, shape: [fanOut, fanIn] });
      tensors.push({ name: `fc${l + 1}.bias`, shape: [fanOut] });
    }
    const arrays = [this.#params];
    if (optimizer) {
      tensors.push({ name: "optimizer.exp_avg", shape: [this.#params.length] });
      tensors.push({
        name: "optimizer.exp_avg_sq",
        shape: [this.#params.length],
      });
      arrays.push(this.#m, this.#v);
    }
    const header: CheckpointHeader = {
      format: CHECKPOINT_MAGIC,
      version: 1,
      architecture: { sizes: [...this.#sizes], activation: "tanh" },
      tensors,
      optimizer: {
        name: "Adam",
        step: this.#step,
        beta1: BETA1,
        beta2: BETA2,
        eps: EPS,
        moments: optimizer,
      },
      dataset: {
        name: DATASET,
        seed: this.#seed,
        samples: this.#samples,
        valFraction: VAL_FRACTION,
      },
      epoch: this.#epoch,
      epochs: this.#epochs,
      bestFitness: Number.isFinite(this.#bestFitness)
        ? this.#bestFitness
        : null,
      bestEpoch: this.#bestEpoch,
      learningRate: this.#learningRate,
      lrf: LRF,
      batchSize: this.#batchSize,
      shuffleState: this.#shuffle.s,
    };
    const json = encoder.encode(JSON.stringify(header));
    const floats = arrays.reduce((n, a) => n + a.length, 0);
    const bytes = new Uint8Array(12 + json.length + floats * 4);
    bytes.set(encoder.encode(CHECKPOINT_MAGIC), 0);
    const view = new DataView(bytes.buffer);
    view.setUint32(8, json.length, true);
    bytes.set(json, 12);
    let pos = 12 + json.length;
    for (const array of arrays) {
      for (let i = 0; i < array.length; i++, pos += 4) {
        view.setFloat32(pos, array[i]!, true);
      }
    }
    return bytes;
  }

  /**
   * Decodes a checkpoint made by {@linkcode TinyTrainer.serialize}; the
   * dataset is regenerated from its seed.
   *
   * @param bytes The checkpoint's bytes.
   * @param options Options for the restored trainer.
   * @returns A trainer that predicts exactly as the saved one.
   * @throws {Error} When the bytes are not a valid checkpoint.
   *
   * @example Restore a trainer from bytes
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   *
   * const bytes = new TinyTrainer({ samples: 100, seed: 7 }).serialize();
   * console.log(TinyTrainer.deserialize(bytes).args.seed); // 7
   * ```
   */
  static deserialize(
    bytes: Uint8Array,
    options: LoadOptions = {},
  ): TinyTrainer {
    const fail = (reason: string, cause?: unknown): never => {
      throw new Error(`Cannot read the checkpoint as ${reason}`, { cause });
    };
    if (!(bytes instanceof Uint8Array)) {
      throw new TypeError(
        "Cannot read the checkpoint as it is not a Uint8Array",
      );
    }
    if (
      bytes.length < 12 ||
      decoder.decode(bytes.subarray(0, 8)) !== CHECKPOINT_MAGIC
    ) {
      fail(`it does not start with "${CHECKPOINT_MAGIC}"`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const headerLength = view.getUint32(8, true);
    if (12 + headerLength > bytes.length) {
      fail(
        `its header is truncated: ${headerLength} bytes announced, ${
          bytes.length - 12
        } present`,
      );
    }
    let header: CheckpointHeader;
    try {
      header = JSON.parse(
        decoder.decode(bytes.subarray(12, 12 + headerLength)),
      );
    } catch (error) {
      return fail("its header is not valid JSON", error);
    }
    if (header?.version !== 1 || !Array.isArray(header.tensors)) {
      fail(`its header version is unsupported: ${String(header?.version)}`);
    }
    const sizes = header.architecture?.sizes;
    if (
      !Array.isArray(sizes) || sizes.length !== 4 || sizes[0] !== INPUTS ||
      sizes[3] !== CLASSES || sizes[1] !== sizes[2]
    ) {
      fail(`its architecture is unsupported: ${JSON.stringify(sizes)}`);
    }
    const trainer = new TinyTrainer({
      epochs: header.epochs,
      seed: header.dataset.seed,
      hidden: sizes[1],
      learningRate: header.learningRate,
      batchSize: header.batchSize,
      samples: header.dataset.samples,
      signal: options.signal,
    });
    const floats = header.tensors.reduce(
      (n, t) => n + t.shape.reduce((a, b) => a * b, 1),
      0,
    );
    const params = trainer.#params.length;
    const expected = header.optimizer.moments ? params * 3 : params;
    if (floats !== expected) {
      fail(`its tensors hold ${floats} values, expected ${expected}`);
    }
    if (bytes.length !== 12 + headerLength + floats * 4) {
      fail(
        `its size is ${bytes.length} bytes, expected ${
          12 + headerLength + floats * 4
        }`,
      );
    }
    let pos = 12 + headerLength;
    const targets = header.optimizer.moments
      ? [trainer.#params, trainer.#m, trainer.#v]
      : [trainer.#params];
    for (const target of targets) {
      for (let i = 0; i < target.length; i++, pos += 4) {
        target[i] = view.getFloat32(pos, true);
      }
    }
    trainer.#step = header.optimizer.step;
    trainer.#epoch = header.epoch;
    trainer.#bestFitness = header.bestFitness ?? -Infinity;
    trainer.#bestEpoch = header.bestEpoch;
    trainer.#shuffle.s = header.shuffleState >>> 0;
    return trainer;
  }

  /**
   * Writes a checkpoint atomically: to a temporary file beside `path`, then
   * renamed over it. Creates the directory when missing.
   *
   * @param path Where to write, e.g. `weights/last.pt`.
   * @param options What to include.
   *
   * @example Save a checkpoint
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   * import { mkdtemp, rm } from "node:fs/promises";
   * import { join } from "node:path";
   * import { tmpdir } from "node:os";
   *
   * const dir = await mkdtemp(join(tmpdir(), "tiny-"));
   * await new TinyTrainer({ samples: 100 }).save(join(dir, "last.pt"));
   * await rm(dir, { recursive: true });
   * ```
   */
  async save(path: string, options: SaveOptions = {}): Promise<void> {
    if (typeof path !== "string" || path === "") {
      throw new TypeError("Cannot save the checkpoint as the path is empty");
    }
    const bytes = this.serialize(options);
    const dir = dirname(path);
    await mkdir(dir, { recursive: true });
    const temp = join(
      dir,
      `.${basename(path)}.${crypto.randomUUID()}.tmp`,
    );
    try {
      await writeFile(temp, bytes);
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => {});
      throw error;
    }
  }

  /**
   * Reads a checkpoint written by {@linkcode TinyTrainer.save}.
   *
   * @param path The checkpoint file.
   * @param options Options for the restored trainer.
   * @returns A trainer that predicts exactly as the saved one.
   *
   * @example Save and load a checkpoint
   * ```ts
   * import { TinyTrainer } from "./trainer.ts";
   * import { mkdtemp, rm } from "node:fs/promises";
   * import { join } from "node:path";
   * import { tmpdir } from "node:os";
   *
   * const dir = await mkdtemp(join(tmpdir(), "tiny-"));
   * await new TinyTrainer({ samples: 100 }).save(join(dir, "last.pt"));
   * const trainer = await TinyTrainer.load(join(dir, "last.pt"));
   * console.log(trainer.epoch); // 0
   * await rm(dir, { recursive: true });
   * ```
   */
  static async load(
    path: string,
    options: LoadOptions = {},
  ): Promise<TinyTrainer> {
    const bytes = await readFile(path);
    return TinyTrainer.deserialize(
      new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      options,
    );
  }

  #initWeights(): void {
    const rand = mulberry32({ s: derive(this.#seed, 2) });
    for (let l = 0; l + 1 < this.#sizes.length; l++) {
      const fanIn = this.#sizes[l]!, fanOut = this.#sizes[l + 1]!;
      const { w } = this.#offsets[l]!;
      // Xavier/Glorot normal, suited to tanh; biases start at zero.
      const std = Math.sqrt(2 / (fanIn + fanOut));
      for (let i = 0; i < fanIn * fanOut; i++) {
        this.#params[w + i] = gaussian(rand) * std;
      }
    }
  }

  #scratch(): {
    acts: Float64Array[];
    deltas: Float64Array[];
    probs: Float64Array;
  } {
    return {
      acts: this.#sizes.map((n) => new Float64Array(n)),
      deltas: this.#sizes.map((n) => new Float64Array(n)),
      probs: new Float64Array(CLASSES),
    };
  }

  /** Forward pass of sample `i`; with `backward`, accumulates gradients. */
  #forward(
    x: Float32Array,
    i: number,
    label: number,
    s: { acts: Float64Array[]; deltas: Float64Array[]; probs: Float64Array },
    backward: boolean,
  ): number {
    const p = this.#params;
    const sizes = this.#sizes;
    const layers = sizes.length - 1;
    const a0 = s.acts[0]!;
    a0[0] = x[i * INPUTS]!;
    a0[1] = x[i * INPUTS + 1]!;
    for (let l = 0; l < layers; l++) {
      const input = s.acts[l]!, output = s.acts[l + 1]!;
      const fanIn = sizes[l]!, fanOut = sizes[l + 1]!;
      const { w, b } = this.#offsets[l]!;
      const last = l === layers - 1;
      for (let o = 0; o < fanOut; o++) {
        let z = p[b + o]!;
        const row = w + o * fanIn;
        for (let k = 0; k < fanIn; k++) z += p[row + k]! * input[k]!;
        output[o] = last ? z : Math.tanh(z);
      }
    }
    const logits = s.acts[layers]!;
    let max = -Infinity;
    for (let c = 0; c < CLASSES; c++) max = Math.max(max, logits[c]!);
    let sum = 0;
    for (let c = 0; c < CLASSES; c++) {
      const e = Math.exp(logits[c]! - max);
      s.probs[c] = e;
      sum += e;
    }
    for (let c = 0; c < CLASSES; c++) s.probs[c] = s.probs[c]! / sum;
    const loss = -Math.log(Math.max(s.probs[label]!, 1e-12));
    if (!backward) return loss;

    const g = this.#grads;
    const top = s.deltas[layers]!;
    for (let c = 0; c < CLASSES; c++) {
      top[c] = s.probs[c]! - (c === label ? 1 : 0);
    }
    for (let l = layers - 1; l >= 0; l--) {
      const input = s.acts[l]!, delta = s.deltas[l + 1]!;
      const below = s.deltas[l]!;
      const fanIn = sizes[l]!, fanOut = sizes[l + 1]!;
      const { w, b } = this.#offsets[l]!;
      if (l > 0) below.fill(0);
      for (let o = 0; o < fanOut; o++) {
        const d = delta[o]!;
        g[b + o] = g[b + o]! + d;
        const row = w + o * fanIn;
        for (let k = 0; k < fanIn; k++) {
          g[row + k] = g[row + k]! + d * input[k]!;
          if (l > 0) below[k] = below[k]! + d * p[row + k]!;
        }
      }
      if (l > 0) {
        // tanh'(z) = 1 - tanh(z)^2, with input = tanh(z).
        for (let k = 0; k < fanIn; k++) {
          below[k] = below[k]! * (1 - input[k]! * input[k]!);
        }
      }
    }
    return loss;
  }

  #adam(lr: number, batch: number): void {
    this.#step++;
    const t = this.#step;
    const c1 = 1 - Math.pow(BETA1, t);
    const c2 = 1 - Math.pow(BETA2, t);
    const p = this.#params, m = this.#m, v = this.#v, g = this.#grads;
    for (let i = 0; i < p.length; i++) {
      const grad = g[i]! / batch;
      const mi = BETA1 * m[i]! + (1 - BETA1) * grad;
      const vi = BETA2 * v[i]! + (1 - BETA2) * grad * grad;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i]! - lr * (mi / c1) / (Math.sqrt(vi / c2) + EPS);
    }
  }

  #evaluate(): {
    loss: number;
    accuracy: number;
    precision: number;
    recall: number;
  } {
    const x = this.#valX, y = this.#valY;
    const n = y.length;
    const scratch = this.#scratch();
    let loss = 0, correct = 0, tp = 0, fp = 0, fn = 0;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const label = y[i]!;
      loss += this.#forward(x, i, label, scratch, false);
      const predicted = scratch.probs[1]! > scratch.probs[0]! ? 1 : 0;
      if (predicted === label) correct++;
      if (predicted === 1 && label === 1) tp++;
      if (predicted === 1 && label === 0) fp++;
      if (predicted === 0 && label === 1) fn++;
    }
    this.#speedMs = (performance.now() - started) / n;
    return {
      loss: loss / n,
      accuracy: correct / n,
      precision: tp + fp === 0 ? 0 : tp / (tp + fp),
      recall: tp + fn === 0 ? 0 : tp / (tp + fn),
    };
  }
}
