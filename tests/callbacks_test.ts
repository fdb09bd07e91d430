import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hubCallbacks } from "../src/session/callbacks.ts";
import { HUBClient } from "../src/transport/client.ts";
import { TinyTrainer } from "../src/demo/trainer.ts";
import { serveHub } from "../src/server/mod.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import type { SessionOptions } from "../src/session/options.ts";
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
      assertEquals(id, session.modelId);
      const doc = await client.getModel(id);
      assertEquals(doc.name, "mlp-2-8-8-2.yaml");
      assertEquals(doc.data, "two-spirals");
      assertEquals(doc.epochs, 3);
      assertEquals(doc.batch_size, trainer.args.batch);
      assertEquals(doc.imgsz, 2);
      assertEquals(session.trainArgs.seed, trainer.args.seed);
      // A second call keeps the model rather than creating another.
      assertEquals(await hooks.onPretrainRoutineStart(trainer), id);
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
    assertEquals(report.pendingEpochs, []);
    assertEquals(report.settled, true);
    assertEquals(report.finalError, undefined);
    const stored = await client.listMetrics(id);
    assertEquals(stored.map((s) => s.epoch), [0, 1, 2, 3, 4]);
    assertEquals(stored[4]!.metrics["train/loss"], 0.2);
    const error = assertThrows(
      () => hooks.onFitEpochEnd(5, { "train/loss": 0.1 }),
      Error,
    );
    assertMatch(error.message, /session is closed/);
  });

  test("onFitEpochEnd() merges the model info into epoch 0 only", async () => {
    const session = await open();
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const id = await hooks.onPretrainRoutineStart({ args: { data: "d" } });
    const info = { "model/parameters": 1234, "model/GFLOPs": 0.5 };
    hooks.onFitEpochEnd(0, { "train/loss": 0.9 }, info);
    hooks.onFitEpochEnd(1, { "train/loss": 0.8 }, info);
    const report = await session.close();
    assertEquals(report.pendingEpochs, []);
    const stored = await client.listMetrics(id);
    assertEquals(stored[0]!.metrics, {
      "train/loss": 0.9,
      "model/parameters": 1234,
      "model/GFLOPs": 0.5,
    });
    assertEquals(stored[1]!.metrics, { "train/loss": 0.8 });
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
      assertEquals(outcome.status, "uploaded");
      assertEquals(outcome.status === "uploaded" && outcome.sha256, lastSha);
    }
    const report = await hooks.onTrainEnd(1, best, trainer.bestFitness);
    const bestSha = await sha256(best);
    assertEquals(report.final?.sha256, bestSha);
    assertEquals(report.final?.path, best);
    const doc = await client.getModel(id);
    const checkpoints = doc.checkpoints as Checkpoints;
    assertEquals(checkpoints.last?.sha256, lastSha);
    assertEquals(checkpoints.last?.epoch, 1);
    assertEquals(checkpoints.best?.sha256, bestSha);
    assertEquals(checkpoints.best?.map, trainer.bestFitness);
    const final = progress.at(-1);
    assert(final !== undefined && final.total !== undefined);
    assertEquals(final.loaded, final.total);
    assert(final.total > report.final!.size);
  });

  test("onModelSave() never throws: a bad epoch fails and a missing file is skipped", async () => {
    const session = await open();
    try {
      const hooks = hubCallbacks(session, { logger: "quiet" });
      await hooks.onPretrainRoutineStart({ args: { data: "d" } });
      const bad = await hooks.onModelSave(-1, join(dir, "nope.pt"), false);
      assertEquals(bad.status, "failed");
      assertMatch(
        bad.status === "failed" ? bad.error.message : "",
        /non-negative integer/,
      );
      const missing = await hooks.onModelSave(0, join(dir, "nope.pt"), false);
      assertEquals(missing, {
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
    assertEquals(report.final, undefined);
    assertMatch(report.finalError?.message ?? "", /does not exist/);
    assertEquals(report.pendingEpochs, []);
    assertEquals((await client.listMetrics(id)).map((s) => s.epoch), [0]);
  });

  test("hubCallbacks() validates its options up front", async () => {
    const session = await open();
    try {
      const range = assertThrows(
        () => hubCallbacks(session, { closeTimeout: -1 }),
        Error,
      );
      assertEquals(range.name, "RangeError");
      const notAFunction = assertThrows(
        () =>
          hubCallbacks(session, {
            onProgress: 1 as unknown as () => void,
          }),
        Error,
      );
      assertEquals(notAFunction.name, "TypeError");
      const notASession = assertThrows(
        () => hubCallbacks({} as unknown as HUBTrainingSession),
        Error,
      );
      assertEquals(notASession.name, "TypeError");
    } finally {
      await session.close({ timeout: 0 });
    }
  });
});
