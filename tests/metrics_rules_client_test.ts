// The client refuses bad epochs with the server's own rules, a refusal of
// one epoch never blocks the others, and journal directories never collide.
import { after, before, describe, test } from "node:test";
import { assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import {
  MAX_EPOCH,
  MAX_METRIC_NAME_LENGTH,
  MAX_METRIC_NAMES_PER_MODEL,
  MAX_METRICS_PER_EPOCH,
} from "../src/protocol/metrics_rules.ts";
import { journalDir, serverJournalDir } from "../src/session/journal.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { captureLogger, startTestHub, type TestHub } from "./support/common.ts";

let testHub: TestHub;

before(async () => {
  testHub = await startTestHub("hub-rules-");
});

after(async () => {
  await testHub.close();
});

async function openSession(
  logger = captureLogger(),
): Promise<{ session: HUBTrainingSession; id: string }> {
  const id = await testHub.client.createModel(
    createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
  );
  const session = await HUBTrainingSession.create(id, {
    apiRoot: testHub.hub.url,
    webRoot: testHub.hub.url,
    settingsFile: false,
    env: () => undefined,
    logger,
    journal: false,
    heartbeat: false,
    rateLimits: { metrics: 60_000 },
    backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
  });
  return { session, id };
}

function names(prefix: string, count: number): Record<string, number> {
  return Object.fromEntries(
    Array.from({ length: count }, (_, i) => [`${prefix}/${i}`, i]),
  );
}

describe("queueMetrics() applies the server's rules", () => {
  test("an epoch the server would refuse is refused at once with a RangeError", async () => {
    const { session } = await openSession();
    try {
      assertThrows(
        () => session.queueMetrics(1e10, { "train/loss": 1 }),
        RangeError,
        `from 0 to ${MAX_EPOCH}`,
      );
      assertThrows(
        () => session.queueMetrics(0, names("m", MAX_METRICS_PER_EPOCH + 1)),
        RangeError,
        `more than ${MAX_METRICS_PER_EPOCH} metrics`,
      );
      assertThrows(
        () =>
          session.queueMetrics(0, {
            ["x".repeat(MAX_METRIC_NAME_LENGTH + 1)]: 1,
          }),
        RangeError,
        "metric name",
      );
      assertThrows(
        () =>
          session.queueMetrics(0, { "train/loss": "low" as unknown as number }),
        TypeError,
      );
      // NaN travels as null, which the server accepts.
      session.queueMetrics(0, { "train/loss": NaN });
      assertEquals(session.pendingEpochs, [0]);
    } finally {
      await session.close({ timeout: 5_000 });
    }
  });
});

describe("a refusal about one epoch", () => {
  test("never blocks the others: the batch is split, the refused epoch reported, the rest delivered", async () => {
    const logger = captureLogger();
    const { session, id } = await openSession(logger);
    // Fill the model up to a few names short of the server's limit on
    // distinct metric names (a real 413 from the real store).
    const room = 5;
    let epoch = 100;
    for (
      let left = MAX_METRIC_NAMES_PER_MODEL - room;
      left > 0;
      left -= MAX_METRICS_PER_EPOCH
    ) {
      await testHub.client.uploadMetrics(id, {
        [String(epoch)]: names(
          `fill${epoch}`,
          Math.min(left, MAX_METRICS_PER_EPOCH),
        ),
      });
      epoch++;
    }
    // One batch: epoch 1 brings more new names than the model has room for.
    session.queueMetrics(0, { "train/loss": 1 });
    session.queueMetrics(1, names("new", room + 1));
    session.queueMetrics(2, { "train/loss": 0.5 });
    const report = await session.close({ timeout: 10_000 });
    assertEquals(report.rejectedEpochs, [1]);
    assertEquals(report.pendingEpochs, []);
    const stored = (await testHub.client.listMetrics(id)).map((m) => m.epoch);
    assertEquals(stored.filter((e) => e < 100), [0, 2]);
    assertEquals(
      logger.lines.filter((l) =>
        l.startsWith("error The server refused the metrics of epoch 1")
      ).length,
      1,
    );
  });
});

describe("journal directories", () => {
  test("different server URLs and model ids never share a directory", () => {
    const roots = [
      "http://127.0.0.1:8080/hub-a",
      "http://127.0.0.1:8080/hub/a",
      "http://127.0.0.1:8080/hub.a",
      "http://127.0.0.1:8080/hub_a",
      "http://127.0.0.1:8080/hub_2Fa",
      "http://127.0.0.1:80/",
      "http://127.0.0.1/",
      "https://127.0.0.1:80/",
    ];
    const dirs = roots.map((root) => serverJournalDir("/j", root));
    // Same server (default port spelled or not) may share; the others not.
    assertEquals(dirs[5], dirs[6]);
    const distinct = new Set([...dirs.slice(0, 5), dirs[5], dirs[7]]);
    assertEquals(distinct.size, 7);
    assertNotEquals(
      journalDir("/j", roots[0]!, "a_b"),
      journalDir("/j", roots[0]!, "a.b"),
    );
    assertNotEquals(
      journalDir("/j", roots[0]!, "a_2Eb"),
      journalDir("/j", roots[0]!, "a.b"),
    );
  });
});
