// HUBTrainingSession end to end against a real local HUB: opening, metrics,
// checkpoints, the final upload, the heartbeat and close(). Over 500 lines
// because it is one test per promise of the session (28 of them); shared
// set-up is in tests/support/.
import { after, before, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HUBClient } from "../src/transport/client.ts";
import {
  HUBError,
  HUBModelError,
  HUBRequestError,
} from "../src/common/errors.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import type { SessionOptions } from "../src/session/options.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { serveHub } from "../src/server/mod.ts";
import {
  captureLogger,
  runScript,
  startTestHub,
  type TestHub,
  waitUntil,
} from "./support/common.ts";
import { localSessionOptions, newModel } from "./support/session.ts";

let testHub: TestHub;
let dir: string;
let hub: TestHub["hub"];
let client: HUBClient;

before(async () => {
  testHub = await startTestHub("hub-session-test-");
  ({ dir, hub, client } = testHub);
});

after(async () => {
  await testHub.close();
});

/** Options every test uses: the local HUB, tiny delays, no settings file. */
function options(extra: SessionOptions = {}): SessionOptions {
  return localSessionOptions(hub.url, { heartbeat: true, ...extra });
}

/** A model the local HUB knows, ready to be trained. */
/** A model the local HUB knows, ready to be trained. */
async function newModelId(name = "yolov8n.yaml"): Promise<string> {
  return await newModel(client, name);
}

interface Call {
  method: string;
  path: string;
  body: string | undefined;
}

/**
 * Passes every request to the real server and records it; `fault` may answer
 * instead (to simulate what a healthy server cannot do).
 */
function recordingFetch(
  fault?: (
    call: Call,
    n: number,
    init?: RequestInit,
  ) => Promise<Response> | undefined,
): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const wrapped = async (
    input: RequestInfo | URL,
    init?: RequestInit,
  ): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const isJson = (request.headers.get("content-type") ?? "").includes("json");
    const body = isJson ? await request.clone().text() : undefined;
    const call = { method: request.method, path: url.pathname, body };
    calls.push(call);
    const answer = fault?.(call, calls.length, init);
    if (answer !== undefined) return await answer;
    return await fetch(input, init);
  };
  return { fetch: wrapped as typeof fetch, calls };
}

function metricsEpochsOf(call: Call): string[] {
  if (call.body === undefined) return [];
  const body = JSON.parse(call.body) as {
    type?: string;
    metrics?: Record<string, string>;
  };
  return body.type === "metrics" ? Object.keys(body.metrics ?? {}) : [];
}

const sha256 = (bytes: Uint8Array): string =>
  createHash("sha256").update(bytes).digest("hex");

test("create() loads a model id, derives training arguments and adopts the agent id", async () => {
  const id = await newModelId();
  const { fetch, calls } = recordingFetch();
  const session = await HUBTrainingSession.create(id, options({ fetch }));
  try {
    assertEquals(session.modelId, id);
    assertEquals(session.modelUrl, `${hub.url}/models/${id}`);
    assertEquals(session.apiUrl, `${hub.url}/v1/models/${id}`);
    assertEquals(session.trainArgs.data, "coco8.yaml");
    assertEquals(session.trainArgs.epochs, 3);
    assertEquals(session.modelFile, session.model?.cfg);
    assertEquals(session.alive, true);
    // The first beat is sent at start; wait for its answer.
    await waitUntil(
      () => session.agentId !== null,
      "the first beat is answered",
    );
    assertEquals(typeof session.agentId, "string");
    const beats = calls.filter((c) =>
      c.path.startsWith("/v1/agent/heartbeat/")
    );
    assertEquals(JSON.parse(beats[0]?.body ?? "{}").agentId, null);
  } finally {
    await session.close();
  }
  assertEquals(session.alive, false);
});

test("the heartbeat sends back the agent id the server assigned", async () => {
  const id = await newModelId();
  const { fetch, calls } = recordingFetch();
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, rateLimits: { metrics: 10, ckpt: 0, heartbeat: 5 } }),
  );
  try {
    const beats = () =>
      calls.filter((c) => c.path.startsWith("/v1/agent/heartbeat/"));
    await waitUntil(() => beats().length >= 3, "three beats were sent");
    assert(beats().length >= 3);
    const assigned = session.agentId;
    assert(assigned !== null);
    const later = beats().slice(1).map((c) =>
      JSON.parse(c.body ?? "{}").agentId
    );
    assert(
      later.every((agentId) => agentId === assigned),
      JSON.stringify(later),
    );
  } finally {
    await session.close();
  }
});

test("create() with a .yaml file sends the exact create payload on createModel()", async () => {
  const { fetch, calls } = recordingFetch();
  const session = await HUBTrainingSession.create(
    "yolov8s.yaml",
    options({ fetch }),
  );
  try {
    assertEquals(session.modelId, undefined);
    assertEquals(session.filename, "yolov8s.yaml");
    const id = await session.createModel({
      data: "coco8.yaml",
      epochs: 5,
      device: 0,
    });
    assertEquals(session.modelId, id);
    const create = calls.find((c) =>
      c.method === "POST" && c.path === "/v1/models"
    );
    assertEquals(JSON.parse(create?.body ?? "null"), {
      config: {
        batchSize: -1,
        epochs: 5,
        imageSize: 640,
        patience: 100,
        device: "0",
        cache: "ram",
      },
      dataset: { name: "coco8.yaml" },
      lineage: { architecture: { name: "yolov8s" }, parent: {} },
      meta: { name: "yolov8s.yaml" },
    });
    const model = await client.getModel(id);
    assertEquals(model.data, "coco8.yaml");
  } finally {
    await session.close();
  }
});

test("createModelPayload() names the parent only for a .pt file", () => {
  const pt = createModelPayload("yolov8n.pt", {
    data: "d.yaml",
    cache: false,
    batch: 16,
  });
  assertEquals(pt.lineage, {
    architecture: { name: "yolov8n" },
    parent: { name: "yolov8n.pt" },
  });
  assertEquals(pt.config.cache, "false");
  assertEquals(pt.config.batchSize, 16);
  const yaml = createModelPayload("yolov8n.yaml", {});
  assertEquals(yaml.lineage.parent, {});
});

test("create() fails with HUBModelError for a missing model", async () => {
  const error = await assertRejects(
    () => HUBTrainingSession.create("AAAAAAAAAAAAAAAAAAAA", options()),
    HUBModelError,
  );
  assertMatch(error.message, /does not exist/);
  assert(error.cause instanceof HUBRequestError);
});

test("create() fails with HUBModelError naming the URL for a trained model", async () => {
  const id = await newModelId();
  const file = join(dir, "trained-best.pt");
  await writeFile(file, randomBytes(1024));
  await client.uploadModel(id, { epoch: 3, file, type: "final", map: 0.5 });
  const error = await assertRejects(
    () => HUBTrainingSession.create(id, options()),
    HUBModelError,
  );
  assertMatch(error.message, /already trained/);
  assert(error.message.includes(`${hub.url}/models/${id}`));
});

test("create() fails with HUBModelError while the dataset is still processing", async () => {
  const payload = createModelPayload("yolov8n.yaml", {});
  const id = await client.createModel(payload);
  const error = await assertRejects(
    () => HUBTrainingSession.create(id, options()),
    HUBModelError,
  );
  assertMatch(error.message, /dataset is still processing/);
});

test("a resumable model trains from its last checkpoint", async () => {
  const id = await newModelId("yolov8n.pt");
  const file = join(dir, "resume-last.pt");
  await writeFile(file, randomBytes(2048));
  await client.uploadModel(id, {
    epoch: 1,
    file,
    type: "epoch",
    isBest: false,
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false }),
  );
  try {
    assertEquals(session.trainArgs, { data: "coco8.yaml", resume: true });
    assertEquals(session.modelFile, session.model?.resume);
    assertMatch(String(session.modelFile), /last\.pt$/);
  } finally {
    await session.close();
  }
});

test("50 epochs queued faster than the rate limit all arrive exactly once after close()", async () => {
  const id = await newModelId();
  const { fetch, calls } = recordingFetch();
  const session = await HUBTrainingSession.create(
    id,
    options({
      fetch,
      heartbeat: false,
      rateLimits: { metrics: 25, ckpt: 0, heartbeat: 1000 },
    }),
  );
  for (let epoch = 0; epoch < 50; epoch++) {
    session.queueMetrics(epoch, {
      "train/loss": 1 / (epoch + 1),
      "metrics/mAP50(B)": epoch / 50,
    });
  }
  const report = await session.close();
  assertEquals(report.pendingEpochs, []);
  assertEquals(report.settled, true);
  const stored = await client.listMetrics(id);
  assertEquals(stored.map((m) => m.epoch), [...Array(50).keys()]);
  assertEquals(stored[49]?.metrics["train/loss"], 1 / 50);
  const sent = calls.flatMap(metricsEpochsOf);
  assertEquals(sent.length, 50, "each epoch is sent exactly once");
  assertEquals(new Set(sent).size, 50);
  // The rate limit batched them: far fewer requests than epochs.
  assert(calls.filter((c) => metricsEpochsOf(c).length > 0).length < 50);
});

test("a 503 then a success keeps the epoch and delivers it", async () => {
  const id = await newModelId();
  let failed = 0;
  const { fetch, calls } = recordingFetch((call) => {
    if (metricsEpochsOf(call).length > 0 && failed++ === 0) {
      return Promise.resolve(
        Response.json({ success: false, message: "Service unavailable" }, {
          status: 503,
        }),
      );
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, heartbeat: false }),
  );
  session.queueMetrics(0, { "train/loss": 2 });
  const result = await session.uploadMetrics();
  assertEquals(result.sent, [0]);
  assertEquals(result.error, undefined);
  await session.close();
  assertEquals(calls.filter((c) => metricsEpochsOf(c).includes("0")).length, 2);
  assertEquals((await client.listMetrics(id)).map((m) => m.epoch), [0]);
});

test("a 400 about an epoch fails fast with the server's message and sets that epoch aside", async () => {
  const id = await newModelId();
  const logger = captureLogger();
  const { fetch, calls } = recordingFetch((call) => {
    if (metricsEpochsOf(call).length > 0) {
      return Promise.resolve(
        Response.json({ success: false, message: "Metric names are invalid" }, {
          status: 400,
        }),
      );
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, heartbeat: false, logger }),
  );
  session.queueMetrics(7, { "train/loss": 2 });
  const result = await session.uploadMetrics();
  assert(result.error instanceof HUBRequestError);
  assertEquals(result.error.status, 400);
  assertEquals(result.error.serverMessage, "Metric names are invalid");
  assertEquals(result.pending, []);
  assertEquals(result.rejected, [7]);
  assertEquals(
    calls.filter((c) => metricsEpochsOf(c).length > 0).length,
    1,
    "no retry",
  );
  assert(logger.lines.some((l) => l.includes("Metric names are invalid")));
  const report = await session.close({ timeout: 1000 });
  assertEquals(report.pendingEpochs, []);
  assertEquals(report.rejectedEpochs, [7]);
});

test("a Retry-After is waited at least as long as it says", async () => {
  const id = await newModelId();
  let limited = 0;
  const { fetch } = recordingFetch((call) => {
    if (metricsEpochsOf(call).length > 0 && limited++ === 0) {
      return Promise.resolve(
        Response.json({ success: false, message: "Rate limit reached" }, {
          status: 429,
          headers: { "Retry-After": "1" },
        }),
      );
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, heartbeat: false }),
  );
  session.queueMetrics(0, { "train/loss": 1 });
  const start = performance.now();
  const result = await session.uploadMetrics();
  const waited = performance.now() - start;
  await session.close();
  assertEquals(result.sent, [0]);
  assert(waited >= 990, `waited ${waited} ms`);
});

test("a stalled final upload times out per attempt and is retried", async () => {
  const id = await newModelId();
  const file = join(dir, "stall-best.pt");
  const bytes = randomBytes(64 * 1024);
  await writeFile(file, bytes);
  let uploads = 0;
  const { fetch } = recordingFetch((call, _n, init) => {
    if (call.path.endsWith("/upload") && uploads++ === 0) {
      // Accept the request and never answer, until the attempt is aborted.
      return new Promise<Response>((_resolve, reject) => {
        const signal = init?.signal;
        signal?.addEventListener("abort", () => reject(signal.reason), {
          once: true,
        });
      });
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({
      fetch,
      heartbeat: false,
      // Long enough for a real attempt on a loaded machine; the stalled one
      // is aborted when it passes.
      budgets: { final: { attemptTimeout: 2_000 } },
    }),
  );
  const result = await session.uploadModel(3, file, {
    final: true,
    map: 0.7,
    onProgress() {},
  });
  await session.close();
  assertEquals(uploads, 2);
  assertEquals(result.sha256, sha256(bytes));
  const model = await client.getModel(id);
  assertEquals(model.status, "trained");
  const served = new Uint8Array(
    await (await fetch(String(model.weights))).arrayBuffer(),
  );
  assertEquals(sha256(served), sha256(bytes));
});

test("the final upload rejects with a typed error once its budget is spent", async () => {
  const id = await newModelId();
  const file = join(dir, "budget-best.pt");
  await writeFile(file, randomBytes(1024));
  let uploads = 0;
  const { fetch } = recordingFetch((call) => {
    if (call.path.endsWith("/upload")) {
      uploads++;
      return Promise.resolve(
        Response.json({ success: false, message: "Bad gateway" }, {
          status: 502,
        }),
      );
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({
      fetch,
      heartbeat: false,
      budgets: { final: { maxAttempts: 3 } },
    }),
  );
  await assertRejects(
    () => session.uploadModel(1, file, { final: true, onProgress() {} }),
    HUBError,
  );
  await session.close();
  assertEquals(uploads, 3);
});

test("overwriting last.pt right after uploadModel() still delivers the old bytes", async () => {
  const id = await newModelId();
  const file = join(dir, "snapshot-last.pt");
  const first = randomBytes(256 * 1024);
  await writeFile(file, first);
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false }),
  );
  const outcome = session.uploadModel(1, file, { isBest: true });
  await writeFile(file, randomBytes(256 * 1024)); // the trainer saves the next epoch
  const result = await outcome;
  await session.close();
  assertEquals(result.status, "uploaded");
  const model = await client.getModel(id);
  const served = new Uint8Array(
    await (await fetch(String(model.resume))).arrayBuffer(),
  );
  assertEquals(sha256(served), sha256(first));
});

test("a newer checkpoint supersedes one still waiting; one upload runs at a time", async () => {
  const id = await newModelId();
  const file = join(dir, "supersede-last.pt");
  let running = 0;
  let maxRunning = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => release = resolve);
  const { fetch } = recordingFetch((call, _n, init) => {
    if (!call.path.endsWith("/upload")) return undefined;
    running++;
    maxRunning = Math.max(maxRunning, running);
    return gate.then(() =>
      globalThis.fetch(new Request(`${hub.url}${call.path}`, init))
    )
      .finally(() => running--);
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, heartbeat: false }),
  );
  await writeFile(file, "epoch 1");
  const one = session.uploadModel(1, file);
  await writeFile(file, "epoch 2");
  const two = session.uploadModel(2, file);
  await writeFile(file, "epoch 3");
  const three = session.uploadModel(3, file);
  release();
  const outcomes = await Promise.all([one, two, three]);
  await session.close();
  assertEquals(outcomes.map((o) => o.status), [
    "uploaded",
    "superseded",
    "uploaded",
  ]);
  assertEquals(maxRunning, 1);
  const model = await client.getModel(id);
  const served = await (await fetch(String(model.resume))).text();
  assertEquals(served, "epoch 3");
});

test("checkpoints obey the rate limit unless forced", async () => {
  const id = await newModelId();
  const file = join(dir, "rate-last.pt");
  await writeFile(file, "weights");
  const session = await HUBTrainingSession.create(
    id,
    options({
      heartbeat: false,
      rateLimits: { metrics: 10, ckpt: 3_600_000, heartbeat: 1000 },
    }),
  );
  const first = await session.uploadModel(1, file);
  const second = await session.uploadModel(2, file);
  const forced = await session.uploadModel(3, file, { force: true });
  await session.close();
  assertEquals(first.status, "uploaded");
  assertEquals(second, {
    status: "skipped",
    epoch: 2,
    reason: "rate-limit",
  });
  assertEquals(forced.status, "uploaded");
});

test("a missing checkpoint mid-training is a warning, not a crash", async () => {
  const id = await newModelId();
  const logger = captureLogger();
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false, logger }),
  );
  const outcome = await session.uploadModel(1, join(dir, "nope", "last.pt"));
  await session.close();
  assertEquals(outcome, {
    status: "skipped",
    epoch: 1,
    reason: "missing-file",
  });
  assert(
    logger.lines.some((l) =>
      l.startsWith("warn") && l.includes("missing checkpoint")
    ),
  );
});

test("a checkpoint before the model exists is skipped with a warning", async () => {
  const logger = captureLogger();
  const session = await HUBTrainingSession.create(
    "yolov8n.yaml",
    options({ logger }),
  );
  const outcome = await session.uploadModel(0, join(dir, "whatever.pt"));
  await session.close();
  assertEquals(outcome, {
    status: "skipped",
    epoch: 0,
    reason: "no-model",
  });
  assert(
    logger.lines.some((l) =>
      l.startsWith("warn") && l.includes("createModel()")
    ),
  );
});

test("a missing best.pt falls back to last.pt with a warning", async () => {
  const id = await newModelId();
  const weights = join(dir, "fallback", "weights");
  await import("node:fs/promises").then((fs) =>
    fs.mkdir(weights, { recursive: true })
  );
  const last = randomBytes(4096);
  await writeFile(join(weights, "last.pt"), last);
  const logger = captureLogger();
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false, logger }),
  );
  const result = await session.uploadModel(5, join(weights, "best.pt"), {
    final: true,
    onProgress() {},
  });
  await session.close();
  assertEquals(result.path, join(weights, "last.pt"));
  assertEquals(result.sha256, sha256(last));
  assert(
    logger.lines.some((l) => l.startsWith("warn") && l.includes("best.pt")),
  );
  const other = await HUBTrainingSession.create(
    await newModelId(),
    options({ heartbeat: false }),
  );
  const missing = await assertRejects(
    () => other.uploadModel(5, join(dir, "none", "best.pt"), { final: true }),
    HUBError,
  );
  assertMatch(missing.message, /does not exist/);
});

test("final upload progress ends with loaded === total", async () => {
  const id = await newModelId();
  const file = join(dir, "progress-best.pt");
  await writeFile(file, randomBytes(3 * 1024 * 1024 + 17));
  const events: Array<{ loaded: number; total: number | undefined }> = [];
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false }),
  );
  await session.uploadModel(9, file, {
    final: true,
    onProgress: (p) => events.push({ ...p }),
  });
  await session.close();
  const last = events.at(-1);
  assert(last !== undefined && last.total !== undefined);
  assertEquals(last.loaded, last.total);
  for (let i = 1; i < events.length; i++) {
    assert((events[i]?.loaded ?? 0) >= (events[i - 1]?.loaded ?? 0));
  }
});

test("flush() reports epochs that could not be delivered, bounded by its timeout", async () => {
  const id = await newModelId();
  const { fetch } = recordingFetch((call) => {
    if (metricsEpochsOf(call).length > 0) {
      return Promise.reject(new TypeError("fetch failed"));
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({
      fetch,
      heartbeat: false,
      budgets: { metrics: { maxAttempts: 2 } },
    }),
  );
  session.queueMetrics(0, { a: 1 });
  session.queueMetrics(1, { a: 2 });
  const report = await session.flush({ timeout: 5_000 });
  assertEquals(report.pendingEpochs, [0, 1]);
  const closed = await session.close({ timeout: 0 });
  assertEquals(closed.pendingEpochs, [0, 1]);
  assertThrows(() => session.queueMetrics(2, { a: 3 }), HUBError);
});

test("a newer value queued while an epoch is in flight is not lost", async () => {
  const id = await newModelId();
  const holder: { session?: HUBTrainingSession } = {};
  const { fetch } = recordingFetch((call, _n, init) => {
    if (
      metricsEpochsOf(call).includes("0") &&
      JSON.parse(call.body ?? "{}").metrics["0"].includes("1")
    ) {
      // While the first value is in flight, the trainer re-queues epoch 0.
      holder.session?.queueMetrics(0, { "train/loss": 2 });
      return globalThis.fetch(
        new Request(`${hub.url}${call.path}`, {
          ...init,
          body: call.body ?? null,
        }),
      );
    }
  });
  const session = await HUBTrainingSession.create(
    id,
    options({ fetch, heartbeat: false }),
  );
  holder.session = session;
  session.queueMetrics(0, { "train/loss": 1 });
  const first = await session.uploadMetrics();
  assertEquals(first.pending, [0], "the newer value stays queued");
  await session.close();
  const stored = await client.listMetrics(id);
  assertEquals(stored[0]?.metrics["train/loss"], 2);
});

test("no log line, error or request URL carries the API key", async () => {
  const key = "Q".repeat(42);
  const secured = await serveHub({
    port: 0,
    dataDir: join(dir, "secured"),
    apiKeys: [key],
  });
  try {
    const securedClient = new HUBClient({ apiRoot: secured.url, apiKey: key });
    const id = await securedClient.createModel(
      createModelPayload("yolov8n.yaml", { data: "coco8.yaml" }),
    );
    const logger = captureLogger();
    const urls: string[] = [];
    const wrapped = ((input: RequestInfo | URL, init?: RequestInit) => {
      urls.push(new Request(input, init).url);
      return fetch(input, init);
    }) as typeof fetch;
    const errors: unknown[] = [];
    const session = await HUBTrainingSession.create(`${key}_${id}`, {
      ...options({ logger, fetch: wrapped }),
      apiRoot: secured.url,
      webRoot: secured.url,
    });
    session.queueMetrics(0, { a: 1 });
    await session.uploadModel(0, join(dir, "missing.pt"));
    await session.uploadModel(0, join(dir, "missing", "best.pt"), {
      final: true,
    }).catch((e) => errors.push(e));
    await session.close();
    await HUBTrainingSession.create(`${"W".repeat(42)}_${id}`, {
      ...options({ logger, fetch: wrapped }),
      apiRoot: secured.url,
      webRoot: secured.url,
    }).catch((e) => errors.push(e));
    await HUBTrainingSession.create(id, {
      ...options({ logger }),
      apiRoot: "http://hub.example.org",
      apiKey: key,
    }).catch((e) => errors.push(e));
    assert(errors.length >= 3);
    const texts = [
      ...logger.lines,
      ...urls,
      ...errors.flatMap(function chain(e: unknown): string[] {
        if (!(e instanceof Error)) return [String(e)];
        return [
          e.message,
          String(e.stack),
          ...(e.cause === undefined ? [] : chain(e.cause)),
        ];
      }),
    ];
    assert(texts.length > 5);
    for (const text of texts) assert(!text.includes(key), text);
    assertEquals(
      (await securedClient.listMetrics(id)).map((m) => m.epoch),
      [0],
    );
  } finally {
    await secured.close();
  }
});

test("rate limits are validated up front", async () => {
  await assertRejects(
    () =>
      HUBTrainingSession.create(
        "yolov8n.pt",
        options({ rateLimits: { metrics: -1 } }),
      ),
    RangeError,
  );
});

test("the session closes with `await using`", async () => {
  const id = await newModelId();
  let closedSession: HUBTrainingSession | undefined;
  {
    await using session = await HUBTrainingSession.create(id, options());
    closedSession = session;
    session.queueMetrics(0, { a: 1 });
  }
  assertEquals(closedSession?.alive, false);
  assertEquals((await client.listMetrics(id)).map((m) => m.epoch), [0]);
});

test("after close() the process has nothing pending and exits promptly", async () => {
  const id = await newModelId();
  const fixture =
    new URL("./fixtures/session_child.ts", import.meta.url).pathname;
  const { code, killed, stdout, stderr } = await runScript(fixture, [
    hub.url,
    id,
  ], {
    timeout: 30_000,
  });
  const out = stdout + stderr;
  assertEquals(killed, false, "the child did not exit on its own");
  assertEquals(code, 0, out);
  assertMatch(out, /closed pending=0/);
  assertEquals((await client.listMetrics(id)).map((m) => m.epoch), [
    0,
    1,
    2,
  ]);
});

test("the trainer's files are read, not modified", async () => {
  const id = await newModelId();
  const file = join(dir, "untouched-last.pt");
  await writeFile(file, "abc");
  const session = await HUBTrainingSession.create(
    id,
    options({ heartbeat: false }),
  );
  await session.uploadModel(1, file);
  await session.close();
  assertEquals(await readFile(file, "utf8"), "abc");
});
