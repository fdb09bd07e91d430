import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HUBTrainingSession } from "../src/session/session.ts";
import { hubCallbacks } from "../src/session/callbacks.ts";
import { syncJournal } from "../src/session/sync.ts";
import { HUBConfigError, HUBRequestError } from "../src/common/errors.ts";
import { sha256File } from "../src/common/hash.ts";
import { startPlatformHub, TEST_PLATFORM_KEY } from "./support/platform_hub.ts";
import type { PlatformHub } from "./support/platform_hub.ts";
import { captureLogger, quietLogger, waitUntil } from "./support/common.ts";
import type { SessionOptions } from "../src/session/options.ts";

let hub: PlatformHub;
let dir: string;

before(async () => {
  hub = await startPlatformHub();
  dir = await mkdtemp(join(tmpdir(), "platform-session-"));
});

after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

function options(extra: Partial<SessionOptions> = {}): SessionOptions {
  return {
    platformUrl: hub.url,
    apiKey: TEST_PLATFORM_KEY,
    settingsFile: false,
    env: () => undefined,
    logger: quietLogger,
    journal: false,
    rateLimits: { metrics: 0, ckpt: 0 },
    backoff: { minTimeout: 10, maxTimeout: 200 },
    ...extra,
  };
}

function metricsOf(epoch: number): Record<string, number> {
  return {
    "train/box_loss": 1 / (epoch + 1),
    "metrics/mAP50(B)": Math.min(1, 0.03 * (epoch + 1)),
    "metrics/mAP50-95(B)": Math.min(1, 0.02 * (epoch + 1)),
  };
}

async function storedEpochs(id: string): Promise<number[]> {
  const list = await hub.get(`/v1/models/${id}/metrics`) as unknown as Array<
    { epoch: number }
  >;
  return list.map((e) => e.epoch).sort((a, b) => a - b);
}

async function storedSha(id: string): Promise<string> {
  const response = await fetch(`${hub.url}/v1/models/${id}/files/best.pt`, {
    headers: { authorization: `Bearer ${TEST_PLATFORM_KEY}` },
  });
  const file = join(dir, `downloaded-${id}.pt`);
  await writeFile(file, new Uint8Array(await response.arrayBuffer()));
  return await sha256File(file);
}

describe("HUBTrainingSession on ul://", () => {
  test("a 30-epoch run delivers every event and the final weights with an equal sha256", async () => {
    const run = join(dir, "thirty");
    await rm(run, { recursive: true, force: true });
    await writeFile(join(dir, "thirty-best.pt"), randomBytes(2_000_000));
    const session = await HUBTrainingSession.create(
      "ul://ada/Road Signs/Thirty Epochs",
      options(),
    );
    assertEquals(session.modelId, undefined);
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const trainer = { args: { data: "coco8.yaml", epochs: 30 }, stop: false };
    const id = await hooks.onPretrainRoutineStart(trainer);
    hooks.onPretrainRoutineEnd();
    assertEquals(session.modelUrl, `${hub.url}/ada/road-signs/thirty-epochs`);
    const last = join(dir, "thirty-last.pt");
    const checkpoints = [];
    for (let epoch = 0; epoch < 30; epoch++) {
      hooks.onFitEpochEnd(
        epoch,
        metricsOf(epoch),
        epoch === 0 ? { "model/parameters": 1000, "model/GFLOPs": 0.5 } : {},
      );
      if (epoch % 10 === 9) {
        await writeFile(last, `checkpoint ${epoch}`);
        checkpoints.push(await hooks.onModelSave(epoch, last, true));
      }
    }
    const report = await hooks.onTrainEnd(
      29,
      join(dir, "thirty-best.pt"),
      0.5,
    );
    assertEquals(report.pendingEpochs, []);
    assertEquals(report.failedUploads, []);
    assertEquals(checkpoints.map((c) => c.status), [
      "uploaded",
      "uploaded",
      "uploaded",
    ]);
    assertEquals(trainer.stop, false);
    const sha = await sha256File(join(dir, "thirty-best.pt"));
    assertEquals(report.final?.sha256, sha);
    assertEquals(await storedSha(id), sha);
    assertEquals(
      await storedEpochs(id),
      Array.from({ length: 30 }, (_, i) => i),
    );
    const events = await hub.events(id);
    const names = events.map((e) => e.event);
    assertEquals(names[0], "training_started");
    assertEquals(names.at(-1), "training_complete");
    assertEquals(names.filter((n) => n === "checkpoint_saved").length, 3);
    const epochs = events.filter((e) => e.event === "epoch_end").map((e) =>
      (e.data as { epoch: number }).epoch
    );
    assertEquals(
      [...new Set(epochs)].sort((a, b) => a - b),
      Array.from({ length: 30 }, (_, i) => i),
    );
    const complete = events.at(-1)!.data as {
      results: { modelSize: number; bestEpoch: number };
    };
    assertEquals(complete.results.modelSize, 2_000_000);
    assertEquals(complete.results.bestEpoch, 29);
  });

  test("training_complete carries the class names the final upload was given, and none when it was not", async () => {
    const sent: Record<string, unknown>[] = [];
    for (const classNames of [["stop", "yield", "speed-limit"], undefined]) {
      const session = await HUBTrainingSession.create(
        `ul://ada/road-signs/names-${
          classNames === undefined ? "none" : "given"
        }`,
        options(),
      );
      await session.createModel({ data: "coco8.yaml", epochs: 1 });
      session.queueMetrics(0, metricsOf(0));
      const file = join(dir, "names-best.pt");
      await writeFile(file, randomBytes(1_000));
      await session.uploadModel(0, file, {
        final: true,
        ...(classNames === undefined ? {} : { classNames }),
      });
      await session.close();
      const events = await hub.events(session.modelId!);
      const complete = events.find((e) => e.event === "training_complete");
      assert(complete !== undefined, "training_complete was received");
      sent.push(complete.data as Record<string, unknown>);
    }
    assertEquals(sent[0]!.classNames, ["stop", "yield", "speed-limit"]);
    assertEquals("classNames" in sent[1]!, false);
  });

  test("modelUrl and apiUrl name the run by the slug the server answered and lead to its page", async () => {
    const ids: string[] = [];
    const urls: Array<string | undefined> = [];
    for (const epochs of [2, 3]) {
      const session = await HUBTrainingSession.create(
        "ul://ada/road-signs/url-run",
        options(),
      );
      assertEquals(session.apiUrl, undefined);
      ids.push(await session.createModel({ data: "coco8.yaml", epochs }));
      urls.push(session.apiUrl);
      assertEquals(session.apiUrl, session.modelUrl);
      await session.close();
    }
    // The name was taken by the first run: the server answered url-run-2.
    assertEquals(urls, [
      `${hub.url}/ada/road-signs/url-run`,
      `${hub.url}/ada/road-signs/url-run-2`,
    ]);
    for (const [i, url] of urls.entries()) {
      const page = await fetch(url!, { redirect: "manual" });
      await page.body?.cancel();
      assertEquals(page.status, 302, url);
      assertEquals(page.headers.get("location"), `/models/${ids[i]}`);
      const followed = await fetch(url!, {
        headers: { authorization: `Bearer ${TEST_PLATFORM_KEY}` },
      });
      await followed.body?.cancel();
      assertEquals(followed.status, 200, url);
      assertEquals(followed.url, `${hub.url}/models/${ids[i]}`);
    }
  });

  test("a Stop on the HUB stops the trainer at the next epoch and the final upload is still made", async () => {
    const session = await HUBTrainingSession.create(
      "ul://ada/road-signs/stopped-run",
      options(),
    );
    const hooks = hubCallbacks(session, { logger: "quiet" });
    const trainer = { args: { data: "coco8.yaml", epochs: 30 }, stop: false };
    const id = await hooks.onPretrainRoutineStart(trainer);
    hooks.onPretrainRoutineEnd();
    const stopAfter = 3;
    let trained = -1;
    for (let epoch = 0; epoch < 30 && !trainer.stop; epoch++) {
      hooks.onFitEpochEnd(epoch, metricsOf(epoch));
      trained = epoch;
      // A real epoch takes long enough for its metrics to arrive.
      await waitUntil(
        () => session.pendingEpochs.length === 0,
        `epoch ${epoch} is acknowledged`,
      );
      if (epoch === stopAfter) assertEquals((await hub.stop(id)).status, 200);
    }
    assertEquals(trained, stopAfter + 1);
    assert(session.cancelled);
    assert(session.cancelSignal.aborted);
    await writeFile(join(dir, "stopped-best.pt"), randomBytes(100_000));
    const report = await hooks.onTrainEnd(
      trained,
      join(dir, "stopped-best.pt"),
    );
    const sha = await sha256File(join(dir, "stopped-best.pt"));
    assertEquals(report.final?.sha256, sha);
    assertEquals(await storedSha(id), sha);
    const names = (await hub.events(id)).map((e) => e.event);
    assertEquals(names.at(-1), "training_complete");
  });

  test("a malformed key is refused before anything is sent", async () => {
    const error = await assertRejects(
      () =>
        HUBTrainingSession.create(
          "ul://ada/road-signs/bad-key",
          options({ apiKey: "not-a-platform-key-1234" }),
        ),
      HUBConfigError,
    );
    assert(!error.message.includes("not-a-platform-key-1234"));
  });

  test("a refused key stops the run with one error, never showing the key", async () => {
    const wrong = "ul_" + "e".repeat(40);
    const logger = captureLogger();
    const session = await HUBTrainingSession.create(
      "ul://ada/road-signs/refused",
      options({ apiKey: wrong, logger }),
    );
    const error = await assertRejects(
      () => session.createModel({ data: "coco8.yaml", epochs: 1 }),
      HUBRequestError,
    );
    assertEquals(error.status, 401);
    await session.close({ timeout: 0 });
    const errors = logger.lines.filter((l) => l.startsWith("error"));
    assertEquals(errors.length, 1);
    assertStringIncludes(errors[0]!, "refused the API key");
    for (const line of logger.lines) assert(!line.includes("e".repeat(40)));
  });

  test("faults on every request kind are retried through the proxy: every epoch and the weights arrive", async () => {
    const flaky = await startPlatformHub({
      proxy: {
        schedule: [
          "status503",
          "pass",
          "rateLimited",
          "resetBeforeResponse",
          "status502",
          "resetMidUpload",
          "status504",
          "rateLimitedBare",
        ],
        faultRate: 0.25,
        faults: {
          status503: 1,
          status502: 1,
          resetBeforeResponse: 1,
          resetMidUpload: 1,
        },
        retryAfterSeconds: 1,
        seed: 3,
      },
    });
    try {
      const session = await HUBTrainingSession.create(
        "ul://ada/road-signs/flaky",
        // Each epoch is one request: give a batch of 8 room for its faults.
        options({
          platformUrl: flaky.clientUrl,
          budgets: { metrics: { maxAttempts: 12 } },
        }),
      );
      const id = await session.createModel({ data: "coco8.yaml", epochs: 8 });
      for (let epoch = 0; epoch < 8; epoch++) {
        session.queueMetrics(epoch, metricsOf(epoch));
      }
      const best = join(dir, "flaky-best.pt");
      await writeFile(best, randomBytes(1_000_000));
      const final = await session.uploadModel(7, best, {
        final: true,
        onProgress: () => {},
      });
      const report = await session.close();
      assertEquals(report.pendingEpochs, []);
      assertEquals(final.sha256, await sha256File(best));
      const stored = await fetch(`${flaky.url}/v1/models/${id}/files/best.pt`, {
        headers: { authorization: `Bearer ${TEST_PLATFORM_KEY}` },
      });
      const copy = join(dir, "flaky-copy.pt");
      await writeFile(copy, new Uint8Array(await stored.arrayBuffer()));
      assertEquals(await sha256File(copy), final.sha256);
      const metrics = await flaky.get(
        `/v1/models/${id}/metrics`,
      ) as unknown as Array<
        { epoch: number }
      >;
      assertEquals(metrics.map((m) => m.epoch).sort((a, b) => a - b), [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
      ]);
      const log = flaky.proxy!.log;
      const faulted = new Set(
        log.filter((e) => e.fault !== "pass").map((e) => e.path.split("/")[3]),
      );
      // Events, upload URLs and the signed PUT itself were all faulted.
      assert(faulted.has("training"), [...faulted].join());
      assert(
        log.some((e) => e.method === "PUT"),
        "no PUT went through the proxy",
      );
      const names = (await flaky.events(id)).map((e) => e.event);
      assertEquals(names.filter((n) => n === "training_started").length, 1);
      assertEquals(names.at(-1), "training_complete");
    } finally {
      await flaky.close();
    }
  });

  test("epochs the server never acknowledged stay in the journal and syncJournal() delivers them", async () => {
    const journal = join(dir, "journal");
    const local = await startPlatformHub({});
    const port = Number(new URL(local.url).port);
    const dataDir = local.dir;
    let restarted: PlatformHub | undefined;
    try {
      const session = await HUBTrainingSession.create(
        "ul://ada/road-signs/journaled",
        options({
          platformUrl: local.url,
          journal,
          budgets: { metrics: { maxAttempts: 1 } },
        }),
      );
      const id = await session.createModel({ data: "coco8.yaml", epochs: 6 });
      for (let epoch = 0; epoch < 3; epoch++) {
        session.queueMetrics(epoch, metricsOf(epoch));
      }
      await session.flush();
      assertEquals(session.pendingEpochs, []);
      await local.hub.close();
      for (let epoch = 3; epoch < 6; epoch++) {
        session.queueMetrics(epoch, metricsOf(epoch));
      }
      const report = await session.close({ timeout: 2_000 });
      assertEquals(report.pendingEpochs, [3, 4, 5]);
      restarted = await startPlatformHub({ dir: dataDir, port });
      const synced = await syncJournal({
        journal,
        platformUrl: restarted.url,
        apiKey: TEST_PLATFORM_KEY,
        settingsFile: false,
        env: () => undefined,
        logger: "quiet",
      });
      assertEquals(synced.map((r) => [r.modelId, r.epochs]), [[id, [3, 4, 5]]]);
      assertEquals(
        (await restarted.get(
          `/v1/models/${id}/metrics`,
        ) as unknown as unknown[])
          .length,
        6,
      );
    } finally {
      await restarted?.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("opening ul:// without a key says which variable to set", async () => {
    const error = await assertRejects(
      () =>
        HUBTrainingSession.create(
          "ul://ada/road-signs/no-key",
          options({ apiKey: undefined }),
        ),
      HUBConfigError,
    );
    assertStringIncludes(error.message, "ULTRALYTICS_API_KEY");
    assertInstanceOf(error, HUBConfigError);
  });
});
