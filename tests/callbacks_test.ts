import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hubCallbacks } from "../src/session/callbacks.ts";
import { HUBClient } from "../src/transport/client.ts";
import { TinyTrainer } from "../src/demo/trainer.ts";
import { serveHub } from "../src/server/mod.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import type { SessionOptions } from "../src/session/session.ts";
import type { UploadProgress } from "../src/protocol/types.ts";

type Hub = Awaited<ReturnType<typeof serveHub>>;

let dir: string;
let hub: Hub;
let client: HUBClient;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-callbacks-test-"));
  hub = await serveHub({ port: 0, dataDir: join(dir, "hub") });
  client = new HUBClient({ apiRoot: hub.url });
});

after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

function open(
  name = "tiny.yaml",
  extra: SessionOptions = {},
): Promise<HUBTrainingSession> {
  return HUBTrainingSession.create(name, {
    apiRoot: hub.url,
    webRoot: hub.url,
    settingsFile: false,
    env: () => undefined,
    logger: "quiet",
    journal: false,
    heartbeat: false,
    rateLimits: { metrics: 60_000, ckpt: 0, heartbeat: 60_000 },
    backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
    ...extra,
  });
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

interface Checkpoints {
  last: { sha256: string; epoch: number; isBest?: boolean } | null;
  best: { sha256: string; epoch: number; map?: number } | null;
}

describe("hubCallbacks()", () => {
  test("onPretrainRoutineStart() creates the model from the trainer's args", async () => {
    const session = await open("mlp-2-8-8-2.yaml");
    try {
      const trainer = new TinyTrainer({ epochs: 3, samples: 100, hidden: 8 });
      const hooks = hubCallbacks(session, { logger: "quiet" });
      const id = await hooks.onPretrainRoutineStart(trainer);
      assert.equal(id, session.modelId);
      const doc = await client.getModel(id);
      assert.equal(doc.name, "mlp-2-8-8-2.yaml");
      assert.equal(doc.data, "two-spirals");
      assert.equal(doc.epochs, 3);
      assert.equal(doc.batch_size, trainer.args.batch);
      assert.equal(doc.imgsz, 2);
      assert.equal(session.trainArgs.seed, trainer.args.seed);
      // A second call keeps the model rather than creating another.
      assert.equal(await hooks.onPretrainRoutineStart(trainer), id);
    } finally {
      await session.close({ timeout: 0 });
    }
  });

  test("onTrainEnd() leaves the metrics of every epoch stored, even under a long metrics rate limit", async () => {
    const session = await open();
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const id = await hooks.onPretrainRoutineStart({
      args: { data: "spirals", epochs: 5 },
    });
    hooks.onPretrainRoutineEnd();
    for (let epoch = 0; epoch < 5; epoch++) {
      hooks.onFitEpochEnd(epoch, { "train/loss": 1 / (epoch + 1) });
    }
    const best = join(dir, "every-epoch-best.pt");
    await writeFile(best, "final weights");
    const report = await hooks.onTrainEnd(4, best, 0.25);
    assert.deepEqual(report.pendingEpochs, []);
    assert.equal(report.settled, true);
    assert.equal(report.finalError, undefined);
    const stored = await client.listMetrics(id);
    assert.deepEqual(stored.map((s) => s.epoch), [0, 1, 2, 3, 4]);
    assert.equal(stored[4]!.metrics["train/loss"], 0.2);
    assert.throws(() => hooks.onFitEpochEnd(5, { "train/loss": 0.1 }), {
      message: /session is closed/,
    });
  });

  test("onFitEpochEnd() merges the model info into epoch 0 only", async () => {
    const session = await open();
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const id = await hooks.onPretrainRoutineStart({ args: { data: "d" } });
    const info = { "model/parameters": 1234, "model/GFLOPs": 0.5 };
    hooks.onFitEpochEnd(0, { "train/loss": 0.9 }, info);
    hooks.onFitEpochEnd(1, { "train/loss": 0.8 }, info);
    const report = await session.close();
    assert.deepEqual(report.pendingEpochs, []);
    const stored = await client.listMetrics(id);
    assert.deepEqual(stored[0]!.metrics, {
      "train/loss": 0.9,
      "model/parameters": 1234,
      "model/GFLOPs": 0.5,
    });
    assert.deepEqual(stored[1]!.metrics, { "train/loss": 0.8 });
  });

  test("checkpoints and the final weights are stored with the sha256 of the local files", async () => {
    const session = await open();
    const progress: UploadProgress[] = [];
    const hooks = hubCallbacks(session, {
      logger: "quiet",
      onProgress: (p) => progress.push(p),
    });
    const trainer = new TinyTrainer({ epochs: 2, samples: 100, hidden: 8 });
    const id = await hooks.onPretrainRoutineStart(trainer);
    const last = join(dir, "sha-run", "last.pt");
    const best = join(dir, "sha-run", "best.pt");
    let lastSha = "";
    while (!trainer.done) {
      const { epoch, metrics, isBest } = await trainer.trainEpoch();
      hooks.onFitEpochEnd(epoch, metrics);
      await trainer.save(last);
      if (isBest) await trainer.save(best, { optimizer: false });
      lastSha = await sha256(last);
      const outcome = await hooks.onModelSave(epoch, last, isBest);
      assert.equal(outcome.status, "uploaded");
      assert.equal(outcome.status === "uploaded" && outcome.sha256, lastSha);
    }
    const report = await hooks.onTrainEnd(1, best, trainer.bestFitness);
    const bestSha = await sha256(best);
    assert.equal(report.final?.sha256, bestSha);
    assert.equal(report.final?.path, best);
    const doc = await client.getModel(id);
    const checkpoints = doc.checkpoints as Checkpoints;
    assert.equal(checkpoints.last?.sha256, lastSha);
    assert.equal(checkpoints.last?.epoch, 1);
    assert.equal(checkpoints.best?.sha256, bestSha);
    assert.equal(checkpoints.best?.map, trainer.bestFitness);
    const final = progress.at(-1);
    assert.ok(final !== undefined && final.total !== undefined);
    assert.equal(final.loaded, final.total);
    assert.ok(final.total > report.final!.size);
  });

  test("onModelSave() never throws: a bad epoch fails and a missing file is skipped", async () => {
    const session = await open();
    try {
      const hooks = hubCallbacks(session, { logger: "quiet" });
      await hooks.onPretrainRoutineStart({ args: { data: "d" } });
      const bad = await hooks.onModelSave(-1, join(dir, "nope.pt"), false);
      assert.equal(bad.status, "failed");
      assert.match(
        bad.status === "failed" ? bad.error.message : "",
        /non-negative integer/,
      );
      const missing = await hooks.onModelSave(0, join(dir, "nope.pt"), false);
      assert.deepEqual(missing, {
        status: "skipped",
        epoch: 0,
        reason: "missing-file",
      });
    } finally {
      await session.close({ timeout: 0 });
    }
  });

  test("onTrainEnd() reports a missing final file and still delivers the metrics", async () => {
    const session = await open();
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const id = await hooks.onPretrainRoutineStart({ args: { data: "d" } });
    hooks.onFitEpochEnd(0, { "train/loss": 0.5 });
    const report = await hooks.onTrainEnd(0, join(dir, "gone", "best.pt"));
    assert.equal(report.final, undefined);
    assert.match(report.finalError?.message ?? "", /does not exist/);
    assert.deepEqual(report.pendingEpochs, []);
    assert.deepEqual((await client.listMetrics(id)).map((s) => s.epoch), [0]);
  });

  test("hubCallbacks() validates its options up front", async () => {
    const session = await open();
    try {
      assert.throws(() => hubCallbacks(session, { closeTimeout: -1 }), {
        name: "RangeError",
      });
      assert.throws(
        () =>
          hubCallbacks(session, {
            onProgress: 1 as unknown as () => void,
          }),
        { name: "TypeError" },
      );
      assert.throws(
        () => hubCallbacks({} as unknown as HUBTrainingSession),
        { name: "TypeError" },
      );
    } finally {
      await session.close({ timeout: 0 });
    }
  });
});
