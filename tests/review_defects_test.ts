// Regression tests for the session defects found in review (issue 9, part 4):
// each failed before its fix.
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertNotMatch,
  assertRejects,
} from "@std/assert";
import { mkdir, mkdtemp, symlink } from "node:fs/promises";
import { join } from "node:path";
import { HUBError } from "../src/common/errors.ts";
import { journalDir, MetricsJournal } from "../src/session/journal.ts";
import type {
  SessionOptions,
  SessionTransport,
} from "../src/session/options.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import {
  captureLogger,
  startTestHub,
  type TestHub,
  waitUntil,
} from "./support/common.ts";
import { localSessionOptions, newModel } from "./support/session.ts";

let testHub: TestHub;

before(async () => {
  testHub = await startTestHub("hub-review-");
});

after(async () => {
  await testHub.close();
});

function options(extra: SessionOptions = {}): SessionOptions {
  return localSessionOptions(testHub.hub.url, extra);
}

async function newModelId(): Promise<string> {
  return await newModel(testHub.client);
}

/** A fetch that holds every metrics POST for `ms` before sending it on. */
function slowMetricsFetch(ms: number): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const body = typeof init?.body === "string" ? init.body : "";
    if (body.includes('"type":"metrics"')) {
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
    return await fetch(input, init);
  }) as typeof fetch;
}

/** A transport that answers like the real client, with one method replaced. */
function transportWith(
  replace: Partial<SessionTransport>,
): SessionTransport {
  const client = testHub.client;
  return {
    getModel: (id, o) => client.getModel(id, o),
    createModel: (payload, o) => client.createModel(payload, o),
    uploadMetrics: (id, metrics, o) => client.uploadMetrics(id, metrics, o),
    uploadModel: (id, o) => client.uploadModel(id, o),
    heartbeat: (id, body, o) => client.heartbeat(id, body, o),
    ...replace,
  };
}

describe("flush() and close() with an infinite timeout", () => {
  test("flush({ timeout: Infinity }) waits for the upload in flight", async () => {
    const id = await newModelId();
    const session = await HUBTrainingSession.create(
      id,
      options({ fetch: slowMetricsFetch(300) }),
    );
    session.queueMetrics(0, { "train/loss": 1 });
    const report = await session.flush({ timeout: Infinity });
    assertEquals(report.settled, true);
    assertEquals(report.pendingEpochs, []);
    assertEquals(
      (await testHub.client.listMetrics(id)).map((m) => m.epoch),
      [0],
    );
    await session.close({ timeout: 0 });
  });

  test("close({ timeout: Infinity }) delivers before it aborts anything", async () => {
    const id = await newModelId();
    const session = await HUBTrainingSession.create(
      id,
      options({ fetch: slowMetricsFetch(300) }),
    );
    session.queueMetrics(0, { "train/loss": 1 });
    session.queueMetrics(1, { "train/loss": 0.5 });
    const report = await session.close({ timeout: Infinity });
    assertEquals(report.settled, true);
    assertEquals(report.pendingEpochs, []);
    assertEquals(
      (await testHub.client.listMetrics(id)).map((m) => m.epoch),
      [0, 1],
    );
  });
});

describe("errors that are not HTTP errors", () => {
  test("a TypeError from a custom transport is thrown, neither retried nor taken for an unreachable server", async () => {
    const id = await newModelId();
    const journal = await mkdtemp(join(testHub.dir, "journal-"));
    const logger = captureLogger();
    let calls = 0;
    // A bug whose message happens to mention a connection.
    const bug = new TypeError(
      "Cannot read properties of undefined (reading 'connection')",
    );
    const transport = transportWith({
      getModel: () => {
        calls++;
        return Promise.reject(bug);
      },
    });
    const error = await HUBTrainingSession.create(
      id,
      options({ transport, journal, logger }),
    ).catch((e) => e);
    assert(error === bug, `expected the transport's own error, got ${error}`);
    assertEquals(calls, 1, "a programming error is not retried");
    assertNotMatch(logger.lines.join("\n"), /working offline|Cannot reach/);
  });
});

describe("files that cannot be read", () => {
  test("a checkpoint that cannot be read is told apart from a missing one", async () => {
    const id = await newModelId();
    const work = await mkdtemp(join(testHub.dir, "ckpt-"));
    const loop = join(work, "loop.pt");
    await symlink(loop, loop); // ELOOP: exists, but cannot be read
    const dir = join(work, "weights-dir");
    await mkdir(dir);
    const logger = captureLogger();
    const session = await HUBTrainingSession.create(id, options({ logger }));
    const looped = await session.uploadModel(0, loop, { force: true });
    assertEquals(looped.status, "skipped");
    assert(looped.status === "skipped");
    assertEquals(looped.reason, "unreadable-file");
    assertMatch(looped.detail ?? "", /ELOOP/);
    const directory = await session.uploadModel(1, dir, { force: true });
    assert(directory.status === "skipped");
    assertEquals(directory.reason, "unreadable-file");
    assertEquals(directory.detail, "is a directory");
    await waitUntil(
      () => logger.lines.filter((l) => l.startsWith("warn")).length >= 2,
      "both checkpoints are reported",
    );
    const warnings = logger.lines.filter((l) => l.startsWith("warn"));
    assert(warnings.every((l) => !l.includes("missing checkpoint")));
    await session.close({ timeout: 1_000 });
  });

  test("a directory passed as the final weights says it is a directory", async () => {
    const id = await newModelId();
    const dir = await mkdtemp(join(testHub.dir, "final-"));
    const session = await HUBTrainingSession.create(id, options());
    const error = await session.uploadModel(2, dir, { final: true }).catch((
      e,
    ) => e);
    assertInstanceOf(error, HUBError);
    assertMatch(error.message, /is a directory/);
    assertNotMatch(error.message, /does not exist/);
    await session.close({ timeout: 1_000 });
  });
});

describe("a journal on a failing disk", () => {
  test("a full disk neither crashes queueMetrics() nor loses the epoch, and says so once", async () => {
    const id = await newModelId();
    const root = await mkdtemp(join(testHub.dir, "journal-full-"));
    const dir = journalDir(root, testHub.hub.url, id);
    await mkdir(dir, { recursive: true });
    // Every write to /dev/full fails with ENOSPC: a disk with no space left.
    await symlink("/dev/full", join(dir, "metrics.jsonl"));
    const logger = captureLogger();
    const session = await HUBTrainingSession.create(
      id,
      options({ journal: root, logger }),
    );
    session.queueMetrics(0, { "train/loss": 1 });
    session.queueMetrics(1, { "train/loss": 0.5 });
    const first = await session.uploadMetrics();
    assertEquals(first.error, undefined);
    assertEquals(first.pending, []);
    // Later uploads still work: nothing poisoned the metrics chain.
    session.queueMetrics(2, { "train/loss": 0.25 });
    const second = await session.uploadMetrics();
    assertEquals(second.error, undefined);
    assertEquals(second.pending, []);
    const report = await session.close({ timeout: 5_000 });
    assertEquals(report.pendingEpochs, []);
    assertEquals(
      (await testHub.client.listMetrics(id)).map((m) => m.epoch),
      [0, 1, 2],
    );
    const full = logger.lines.filter((l) => l.includes("ENOSPC"));
    assertEquals(full.length, 1, logger.lines.join("\n"));
    assertMatch(full[0]!, /^warn .*epoch 0 .*kept in memory/);
  });

  test("an fdatasync that fails is reported, not ignored", async () => {
    const dir = await mkdtemp(join(testHub.dir, "journal-sync-"));
    // fdatasync on a character device fails with EINVAL.
    await symlink("/dev/null", join(dir, "metrics.jsonl"));
    const warnings: string[] = [];
    const journal = MetricsJournal.open(dir, {
      logger: { warn: (m) => warnings.push(m) },
    });
    journal.append(0, { "train/loss": 1 });
    await journal.close();
    assertEquals(warnings.length, 1);
    assertMatch(warnings[0]!, /Cannot flush the journal .* to the disk/);
  });
});

describe("heartbeats", () => {
  test("budgets.heartbeat bounds a beat through a transport that ignores its signal", async () => {
    const id = await newModelId();
    const logger = captureLogger();
    let beats = 0;
    const transport = transportWith({
      heartbeat: () => {
        beats++;
        return new Promise<never>(() => {}); // never answers, ignores signal
      },
    });
    const session = await HUBTrainingSession.create(
      id,
      options({
        transport,
        logger,
        heartbeat: true,
        budgets: { heartbeat: { attemptTimeout: 50 } },
      }),
    );
    await waitUntil(
      () =>
        logger.lines.some((l) => l.startsWith("warn Cannot send a heartbeat")),
      "the stalled beat is given up",
      10_000,
    );
    assertMatch(
      logger.lines.find((l) => l.includes("heartbeat")) ?? "",
      /within 50 ms/,
    );
    assertEquals(beats, 1);
    await session.close({ timeout: 1_000 });
  });

  test("an invalid heartbeat budget is refused up front", async () => {
    await assertRejects(
      () =>
        HUBTrainingSession.create(
          "yolov8n.yaml",
          options({ budgets: { heartbeat: { attemptTimeout: -1 } } }),
        ),
      RangeError,
    );
  });
});
