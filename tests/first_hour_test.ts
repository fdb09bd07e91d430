// What a new user meets in the first hour (issue 13): metrics before the
// model exists, one failure policy when the server cannot be reached, the
// right message for each mistake, progress without a terminal, and the
// checkpoint rate limit said once.
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertNotMatch,
  assertThrows,
} from "@std/assert";
import net from "node:net";
import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { main } from "../src/cli/mod.ts";
import {
  HUBError,
  HUBModelError,
  HUBRequestError,
} from "../src/common/errors.ts";
import { serveHub } from "../src/server/mod.ts";
import type { SessionOptions } from "../src/session/options.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { captureLogger, startTestHub, type TestHub } from "./support/common.ts";
import { localSessionOptions, newModel } from "./support/session.ts";

let testHub: TestHub;

before(async () => {
  testHub = await startTestHub("hub-first-hour-");
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

/** A loopback URL on which nothing listens. */
async function deadUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve())
  );
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

describe("metrics before createModel()", () => {
  test("epochs queued before the model exists are sent once it does", async () => {
    const session = await HUBTrainingSession.create("yolov8n.yaml", options());
    session.queueMetrics(0, { "train/loss": 1 });
    const id = await session.createModel({ data: "coco8.yaml", epochs: 2 });
    session.queueMetrics(1, { "train/loss": 0.5 });
    const report = await session.close({ timeout: 10_000 });
    assertEquals(report.pendingEpochs, []);
    assertEquals(
      (await testHub.client.listMetrics(id)).map((m) => m.epoch),
      [0, 1],
    );
  });

  test("epochs never sent because no model was created are reported with the reason", async () => {
    const logger = captureLogger();
    const session = await HUBTrainingSession.create(
      "yolov8n.yaml",
      options({ logger }),
    );
    session.queueMetrics(0, { "train/loss": 1 });
    const report = await session.close({ timeout: 1_000 });
    assertEquals(report.pendingEpochs, [0]);
    const line = logger.lines.find((l) => l.includes("epoch(s) of metrics"));
    assertMatch(line ?? "", /no model: 0; call createModel\(\)/);
  });
});

describe("a server that cannot be reached", () => {
  test("createModel() throws a HUBRequestError that names the server", async () => {
    const url = await deadUrl();
    const session = await HUBTrainingSession.create(
      "yolov8n.yaml",
      options({ apiRoot: url, webRoot: url }),
    );
    const error = await session.createModel({ data: "coco8.yaml" }).catch((
      e,
    ) => e);
    assertInstanceOf(error, HUBRequestError);
    assertEquals(error.name, "HUBRequestError");
    assertMatch(error.message, new RegExp(`${url} is reachable`));
    await session.close({ timeout: 0 });
  });

  test("opening a model goes offline with one warning and no error line when a journal is on", async () => {
    const url = await deadUrl();
    const logger = captureLogger();
    const journal = await mkdtemp(join(testHub.dir, "journal-"));
    const session = await HUBTrainingSession.create(
      "AAAAAAAAAAAAAAAAAAAA",
      options({ apiRoot: url, webRoot: url, logger, journal }),
    );
    assert(session.offline);
    await session.close({ timeout: 0 });
    const warnings = logger.lines.filter((l) => l.startsWith("warn"));
    assertEquals(
      warnings.filter((l) => l.includes(`Cannot reach ${url}`)).length,
      1,
    );
    assertEquals(logger.lines.filter((l) => l.startsWith("error")), []);
  });

  test("opening a model without a journal throws a HUBError that names the server", async () => {
    const url = await deadUrl();
    const error = await HUBTrainingSession.create(
      "AAAAAAAAAAAAAAAAAAAA",
      options({ apiRoot: url, webRoot: url }),
    ).catch((e) => e);
    assertInstanceOf(error, HUBError);
    assertMatch(error.message, new RegExp(url));
  });
});

describe("messages", () => {
  test("createModel() twice says the session already created a model", async () => {
    const session = await HUBTrainingSession.create("yolov8n.yaml", options());
    const id = await session.createModel({ data: "coco8.yaml", epochs: 1 });
    const error = await session.createModel({ data: "coco8.yaml" }).catch((
      e,
    ) => e);
    assertInstanceOf(error, HUBModelError);
    assertMatch(error.message, new RegExp(`already created model ${id}`));
    assertNotMatch(error.message, /opened on an existing model/);
    await session.close({ timeout: 5_000 });
  });

  test("uploadMetrics() after close() throws like queueMetrics() does", async () => {
    const session = await HUBTrainingSession.create(
      await newModelId(),
      options(),
    );
    await session.close({ timeout: 1_000 });
    assertThrows(() => session.uploadMetrics(), HUBError, "session is closed");
    assertThrows(
      () => session.queueMetrics(0, { "train/loss": 1 }),
      HUBError,
      "session is closed",
    );
  });

  test("CLI upload names an unknown model and a refused key for what they are", async () => {
    const file = join(testHub.dir, "upload.pt");
    await writeFile(file, "weights");
    const run = async (args: string[]) => {
      const err: string[] = [];
      const code = await main(args, {
        env: () => undefined,
        write: () => {},
        writeError: (l) => err.push(l),
      });
      return { code, err: err.join("\n") };
    };
    const unknown = await run([
      "upload",
      "ZZZZZZZZZZZZZZZZZZZZ",
      file,
      "--hub",
      testHub.hub.url,
    ]);
    assertEquals(unknown.code, 1);
    assertMatch(unknown.err, /Cannot find model ZZZZZZZZZZZZZZZZZZZZ on/);
    assertNotMatch(unknown.err, /list the metrics/);

    const keyed = await serveHub({
      port: 0,
      dataDir: join(testHub.dir, "keyed"),
      apiKeys: ["right-key-0123456789"],
    });
    try {
      const keyFile = join(testHub.dir, "wrong-key.txt");
      await writeFile(keyFile, "wrong-key-0123456789\n");
      const refused = await run([
        "upload",
        "ZZZZZZZZZZZZZZZZZZZZ",
        file,
        "--hub",
        keyed.url,
        "--api-key-file",
        keyFile,
      ]);
      assertEquals(refused.code, 1);
      assertMatch(refused.err, /refused the API key \(401\)/);
      assertNotMatch(refused.err, /list the metrics/);
    } finally {
      await keyed.close();
    }
  });
});

describe("progress and rate limits", () => {
  test("without a terminal the final upload prints progress lines at a bounded rate", async () => {
    const logger = captureLogger();
    const id = await newModelId();
    const file = join(testHub.dir, "best.pt");
    await writeFile(file, new Uint8Array(4 * 1024 * 1024));
    const session = await HUBTrainingSession.create(id, options({ logger }));
    await session.uploadModel(0, file, { final: true });
    await session.close({ timeout: 5_000 });
    const progress = logger.lines.filter((l) =>
      l.startsWith("info Uploading best.pt")
    );
    // At least the start and the end; at most one per 10 % plus the end.
    assert(progress.length >= 2, logger.lines.join("\n"));
    assert(progress.length <= 12, logger.lines.join("\n"));
    assertMatch(progress.at(-1)!, /100%/);
  });

  test("checkpoints skipped by the rate limit are said once, with when the next may go", async () => {
    const logger = captureLogger();
    const id = await newModelId();
    const file = join(testHub.dir, "last.pt");
    await writeFile(file, "checkpoint");
    const session = await HUBTrainingSession.create(
      id,
      options({ logger, rateLimits: { ckpt: 900_000 } }),
    );
    const first = await session.uploadModel(0, file);
    assertEquals(first.status, "uploaded");
    const skipped = [
      await session.uploadModel(1, file),
      await session.uploadModel(2, file),
    ];
    assertEquals(skipped.map((s) => s.status), ["skipped", "skipped"]);
    const said = logger.lines.filter((l) => l.includes("rate-limited"));
    assertEquals(said.length, 1, logger.lines.join("\n"));
    assertMatch(said[0]!, /^info .*one every 15 min.*next one may go in/);
    await session.close({ timeout: 5_000 });
  });
});
