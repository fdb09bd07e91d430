import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertStrictEquals,
  assertThrows,
} from "@std/assert";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHECKPOINT_MAGIC, TinyTrainer } from "../src/demo/trainer.ts";
import type { EpochResult } from "../src/demo/trainer_options.ts";

/** Trains until done and returns every epoch's result. */
async function trainAll(trainer: TinyTrainer): Promise<EpochResult[]> {
  const results: EpochResult[] = [];
  while (!trainer.done) results.push(await trainer.trainEpoch());
  return results;
}

/** Metrics without the measured speed, which is wall-clock dependent. */
function withoutSpeed(metrics: Record<string, number>): Record<string, number> {
  const { "model/speed_PyTorch(ms)": _speed, ...rest } = metrics;
  return rest;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "trainer-test-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Points on a grid over the data's range, flat `[x, y, …]`. */
function grid(): number[] {
  const points: number[] = [];
  for (let i = -6; i <= 6; i++) {
    for (let j = -6; j <= 6; j++) points.push(i, j * 0.9);
  }
  return points;
}

describe("TinyTrainer", () => {
  test("training with the defaults lowers the loss and beats chance", async () => {
    const trainer = new TinyTrainer();
    const results = await trainAll(trainer);
    assertEquals(results.length, 20);
    const first = results[0]!.metrics;
    const last = results[19]!.metrics;
    assert(
      last["train/loss"]! < 0.7 * first["train/loss"]!,
      `train/loss fell from ${first["train/loss"]} to ${last["train/loss"]}`,
    );
    assert(last["val/loss"]! < 0.7 * first["val/loss"]!);
    assert(last["metrics/accuracy"]! > 0.8, "accuracy is above chance");
    assert(last["metrics/precision"]! > 0.5);
    assert(last["metrics/recall"]! > 0.5);
    assertEquals(
      trainer.bestFitness,
      Math.max(...results.map((r) => r.fitness)),
    );
    assertEquals(results.map((r) => r.epoch), [...Array(20).keys()]);
  });

  test("fitness is the validation accuracy and isBest marks each improvement", async () => {
    const results = await trainAll(
      new TinyTrainer({ epochs: 8, samples: 600 }),
    );
    let best = -Infinity;
    for (const result of results) {
      assertEquals(result.fitness, result.metrics["metrics/accuracy"]);
      assertEquals(result.isBest, result.fitness > best);
      best = Math.max(best, result.fitness);
    }
    assertEquals(results[0]!.isBest, true);
  });

  test("the same seed gives identical metrics and another seed does not", async () => {
    const options = { epochs: 4, samples: 500 };
    const a = await trainAll(new TinyTrainer({ ...options, seed: 5 }));
    const b = await trainAll(new TinyTrainer({ ...options, seed: 5 }));
    const c = await trainAll(new TinyTrainer({ ...options, seed: 6 }));
    assertEquals(
      a.map((r) => withoutSpeed(r.metrics)),
      b.map((r) => withoutSpeed(r.metrics)),
    );
    assertNotEquals(
      a.map((r) => withoutSpeed(r.metrics)),
      c.map((r) => withoutSpeed(r.metrics)),
    );
  });

  test("epoch 0 reports the model's size and speed, later epochs do not", async () => {
    const trainer = new TinyTrainer({ epochs: 2, samples: 200, hidden: 16 });
    const [first, second] = await trainAll(trainer);
    const parameters = 2 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2;
    assertEquals(first!.metrics["model/parameters"], parameters);
    assertEquals(
      first!.metrics["model/GFLOPs"],
      2 * (2 * 16 + 16 * 16 + 16 * 2) / 1e9,
    );
    const speed = first!.metrics["model/speed_PyTorch(ms)"]!;
    assert(Number.isFinite(speed) && speed >= 0);
    for (
      const name of [
        "train/loss",
        "val/loss",
        "metrics/accuracy",
        "metrics/precision",
        "metrics/recall",
      ]
    ) {
      assertEquals(typeof first!.metrics[name], "number", name);
      assertEquals(typeof second!.metrics[name], "number", name);
    }
    assertEquals(second!.metrics["model/parameters"], undefined);
    assertEquals(trainer.info().parameters, parameters);
  });

  test("args describe the training in HUB terms", () => {
    const trainer = new TinyTrainer({ epochs: 3, batchSize: 16, samples: 100 });
    assertEquals(trainer.args.epochs, 3);
    assertEquals(trainer.args.batch, 16);
    assertEquals(trainer.args.data, "two-spirals");
    assertEquals(trainer.args.model, "mlp-2-32-32-2");
    assert(Object.isFrozen(trainer.args));
  });

  test("a saved checkpoint starts with the magic and loads back with identical predictions", async () => {
    await withTempDir(async (dir) => {
      const trainer = new TinyTrainer({ epochs: 5, samples: 400, seed: 9 });
      for (let i = 0; i < 3; i++) await trainer.trainEpoch();
      const path = join(dir, "weights", "last.pt");
      await trainer.save(path);

      const bytes = await readFile(path);
      assertEquals(bytes.subarray(0, 8).toString("latin1"), CHECKPOINT_MAGIC);
      const headerLength = bytes.readUInt32LE(8);
      const header = JSON.parse(
        bytes.subarray(12, 12 + headerLength).toString("utf8"),
      );
      const parameters = trainer.info().parameters;
      assertEquals(header.epoch, 3);
      assertEquals(header.dataset.seed, 9);
      assertEquals(header.optimizer.step, 3 * Math.ceil(320 / 32));
      assertEquals(header.bestFitness, trainer.bestFitness);
      assertEquals(bytes.length, 12 + headerLength + 3 * parameters * 4);
      assertEquals(await readdir(join(dir, "weights")), ["last.pt"]);

      const loaded = await TinyTrainer.load(path);
      assertEquals(loaded.epoch, 3);
      assertEquals(loaded.bestFitness, trainer.bestFitness);
      assertEquals(loaded.args, trainer.args);
      assertEquals(loaded.predict(grid()), trainer.predict(grid()));
    });
  });

  test("training resumed from a checkpoint continues exactly like uninterrupted training", async () => {
    await withTempDir(async (dir) => {
      const options = { epochs: 4, samples: 300, seed: 3 };
      const straight = await trainAll(new TinyTrainer(options));

      const first = new TinyTrainer(options);
      await first.trainEpoch();
      await first.trainEpoch();
      await first.save(join(dir, "last.pt"));
      const resumed = await TinyTrainer.load(join(dir, "last.pt"));
      const rest = await trainAll(resumed);

      assertEquals(rest.map((r) => r.epoch), [2, 3]);
      assertEquals(
        rest.map((r) => r.metrics),
        straight.slice(2).map((r) => r.metrics),
      );
      assertEquals(
        rest.map((r) => r.isBest),
        straight.slice(2).map((r) => r.isBest),
      );
    });
  });

  test("a checkpoint without optimizer state holds only the weights", async () => {
    await withTempDir(async (dir) => {
      const trainer = new TinyTrainer({ epochs: 1, samples: 200 });
      await trainer.trainEpoch();
      const path = join(dir, "best.pt");
      await trainer.save(path, { optimizer: false });
      await trainer.save(path, { optimizer: false }); // overwrites in place
      const bytes = await readFile(path);
      const headerLength = bytes.readUInt32LE(8);
      assertEquals(
        bytes.length,
        12 + headerLength + trainer.info().parameters * 4,
      );
      const loaded = await TinyTrainer.load(path);
      assertEquals(loaded.predict(grid()), trainer.predict(grid()));
      assertEquals(await readdir(dir), ["best.pt"]);
    });
  });

  test("load() rejects files that are not checkpoints", async () => {
    await withTempDir(async (dir) => {
      const notCheckpoint = join(dir, "other.pt");
      await writeFile(notCheckpoint, "PK\u0003\u0004 a zip, not ours");
      assertMatch(
        (await assertRejects(() => TinyTrainer.load(notCheckpoint), Error))
          .message,
        /does not start with "HUBTINY1"/,
      );

      const good = new TinyTrainer({ samples: 100 }).serialize();
      const truncated = join(dir, "truncated.pt");
      await writeFile(truncated, good.subarray(0, good.length - 4));
      assertMatch(
        (await assertRejects(() => TinyTrainer.load(truncated), Error)).message,
        /size is \d+ bytes, expected \d+/,
      );
      assertMatch(
        assertThrows(() => TinyTrainer.deserialize(good.subarray(0, 20)), Error)
          .message,
        /header is truncated/,
      );
    });
  });

  test("trainEpoch() rejects with the signal's reason when aborted before it starts", async () => {
    const controller = new AbortController();
    const trainer = new TinyTrainer({
      epochs: 2,
      samples: 100,
      signal: controller.signal,
    });
    const reason = new Error("Stopped by the user");
    controller.abort(reason);
    assertStrictEquals(await assertRejects(() => trainer.trainEpoch()), reason);
    assertEquals(trainer.epoch, 0);
  });

  test("trainEpoch() stops between mini-batches when aborted during an epoch", async () => {
    const controller = new AbortController();
    // An epoch of 80 000 points takes far longer than the 8 ms after which
    // the trainer yields, so the abort lands while the epoch is running.
    const trainer = new TinyTrainer({
      epochs: 1,
      samples: 100_000,
      batchSize: 8,
      signal: controller.signal,
    });
    const reason = new Error("Stopped by the user");
    const timer = setTimeout(() => controller.abort(reason), 0);
    try {
      assertStrictEquals(
        await assertRejects(() => trainer.trainEpoch()),
        reason,
      );
    } finally {
      clearTimeout(timer);
    }
    assertEquals(trainer.epoch, 0, "the aborted epoch does not count");
    assertEquals(trainer.done, false);
  });

  test("trainEpoch() refuses to train past the last epoch or twice at once", async () => {
    const trainer = new TinyTrainer({ epochs: 1, samples: 100 });
    const running = trainer.trainEpoch();
    assertMatch(
      (await assertRejects(() => trainer.trainEpoch(), Error)).message,
      /another epoch is still running/,
    );
    await running;
    await assertRejects(() => trainer.trainEpoch(), RangeError);
  });

  test("the constructor validates options up front", () => {
    assertThrows(() => new TinyTrainer({ epochs: 0 }), RangeError);
    assertThrows(() => new TinyTrainer({ epochs: 1.5 }), RangeError);
    assertThrows(
      () => new TinyTrainer({ epochs: "3" as unknown as number }),
      TypeError,
    );
    assertThrows(() => new TinyTrainer({ learningRate: -1 }), RangeError);
    assertThrows(() => new TinyTrainer({ samples: 5 }), RangeError);
    assertThrows(
      () => new TinyTrainer({ signal: {} as AbortSignal }),
      TypeError,
    );
  });

  test("predict() returns two probabilities per point that sum to 1", () => {
    const probs = new TinyTrainer({ samples: 100 }).predict([0, 0, 1, -1]);
    assertEquals(probs.length, 4);
    assert(Math.abs(probs[0]! + probs[1]! - 1) < 1e-6);
    assertThrows(
      () => new TinyTrainer({ samples: 100 }).predict([1]),
      RangeError,
    );
  });
});
