// The Platform transport: names and event payloads, a run against the local
// HUB's Platform endpoints, and the signed PUT. Over 500 lines because it is
// one test per event and per upload rule.
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { createServer } from "node:http";
import type { IncomingHttpHeaders } from "node:http";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HUBConfigError, HUBRequestError } from "../src/common/errors.ts";
import { PlatformTransport } from "../src/transport/platform/transport.ts";
import {
  checkPlatformKey,
  PlatformClient,
} from "../src/transport/platform/client.ts";
import { putSignedFile } from "../src/transport/platform/signed_put.ts";
import {
  jsonSafe,
  parsePlatformUri,
  slugify,
} from "../src/protocol/platform.ts";
import { startPlatformHub, TEST_PLATFORM_KEY } from "./support/platform_hub.ts";
import type { PlatformHub } from "./support/platform_hub.ts";
import { captureLogger, quietLogger } from "./support/common.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";

const OTHER_KEY = "ul_" + "f".repeat(40);

let hub: PlatformHub;
let dir: string;

before(async () => {
  hub = await startPlatformHub();
  dir = await mkdtemp(join(tmpdir(), "platform-transport-"));
});

after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function transport(
  name: string,
  extra: Partial<ConstructorParameters<typeof PlatformTransport>[0]> = {},
): PlatformTransport {
  return new PlatformTransport({
    webhooksUrl: hub.webhooksUrl,
    apiKey: TEST_PLATFORM_KEY,
    project: "ada/road-signs",
    name,
    logger: quietLogger,
    ...extra,
  });
}

describe("Platform names and payloads", () => {
  test("slugify() keeps [a-z0-9-], collapses dashes and caps at 128", () => {
    assertEquals(slugify("  My Run #1 -- final "), "my-run-1-final");
    assertEquals(slugify("x".repeat(300)).length, 128);
  });

  test("parsePlatformUri() keeps the owner and slugifies project and name", () => {
    assertEquals(parsePlatformUri("ul://Ada/Road Signs/Run 1"), {
      owner: "Ada",
      project: "Ada/road-signs",
      name: "run-1",
    });
    assertEquals(parsePlatformUri("ul://ada/datasets"), undefined);
    assertEquals(parsePlatformUri("ul://ada/p/n/extra"), undefined);
    assertEquals(parsePlatformUri("https://ada/p/n"), undefined);
  });

  test("jsonSafe() turns NaN and Infinity into null at any depth", () => {
    assertEquals(jsonSafe({ a: NaN, b: [1, -Infinity], c: { d: Infinity } }), {
      a: null,
      b: [1, null],
      c: { d: null },
    });
  });

  test("a malformed key is refused without being echoed", () => {
    const key = "ul_" + "z".repeat(40);
    const error = (() => {
      try {
        checkPlatformKey(key);
      } catch (e) {
        return e;
      }
    })();
    assertInstanceOf(error, HUBConfigError);
    assert(!error.message.includes("zzzz"));
    assertStringIncludes(error.message, "ULTRALYTICS_API_KEY");
  });
});

describe("PlatformTransport against the local HUB", () => {
  test("a run sends every event in order with every field, and the HUB stores it as a model", async () => {
    const cancels: number[] = [];
    const t = transport("Full Run".toLowerCase().replace(" ", "-"), {
      onCancel: () => cancels.push(1),
    });
    const modelId = await t.startRun({
      data: "coco8.yaml",
      epochs: 3,
      batch: 16,
      device: "cpu",
      model: "yolov8n.pt",
    });
    assertEquals(modelId, t.modelId);
    assertMatch(t.runId ?? "", /^[0-9a-f]{16}$/);
    assertEquals(t.modelSlug, "full-run");
    for (let epoch = 0; epoch < 3; epoch++) {
      await t.sendEpochs(
        new Map([[epoch, {
          "train/box_loss": 1 / (epoch + 1),
          "metrics/mAP50(B)": 0.2 * (epoch + 1),
          "metrics/mAP50-95(B)": 0.1 * (epoch + 1),
          "val/odd": epoch === 1 ? NaN : 0.5,
          ...(epoch === 2 ? { "system/ram_gb": 1.5 } : {}),
          ...(epoch === 0
            ? {
              "model/parameters": 3_000_000,
              "model/GFLOPs": 8.7,
              "model/speed_PyTorch(ms)": 1.5,
            }
            : {}),
        }]]),
      );
    }
    const ckpt = new Uint8Array(randomBytes(300_000));
    await writeFile(join(dir, "last.pt"), ckpt);
    const sentCkpt = await t.uploadWeights({
      epoch: 1,
      file: join(dir, "last.pt"),
      type: "epoch",
    });
    assertEquals(sentCkpt, { size: ckpt.byteLength, sha256: sha256(ckpt) });
    const best = new Uint8Array(randomBytes(1_500_000));
    await writeFile(join(dir, "best.pt"), best);
    const progress: number[] = [];
    const sentBest = await t.uploadWeights({
      epoch: 2,
      file: join(dir, "best.pt"),
      type: "final",
      map: 0.3,
      onProgress: ({ loaded }) => progress.push(loaded),
    });
    assertEquals(sentBest, { size: best.byteLength, sha256: sha256(best) });
    assertEquals(progress.at(-1), best.byteLength);

    const events = await hub.events(modelId);
    assertEquals(events.map((e) => e.event), [
      "training_started",
      "epoch_end",
      "epoch_end",
      "epoch_end",
      "checkpoint_saved",
      "training_complete",
    ]);
    // deno-lint-ignore no-explicit-any
    const [started, e0, e1, e2, saved, complete] = events as any[];
    // Project and name until the server answered a modelId, then the modelId.
    assertEquals(started!.project, "ada/road-signs");
    assertEquals(started!.name, "full-run");
    assertEquals(started!.modelId, undefined);
    for (const later of [e0, e1, e2, saved, complete]) {
      assertEquals(later!.modelId, modelId);
      assertEquals(later!.project, undefined);
      assertEquals(later!.name, undefined);
    }
    assertEquals(started!.data.trainArgs, {
      data: "coco8.yaml",
      epochs: "3",
      batch: "16",
      device: "cpu",
      model: "yolov8n.pt",
    });
    assertEquals(started!.data.epochs, 3);
    assertEquals(started!.data.device, "cpu");
    const env = started!.data.environment;
    assert(env.cpuCount >= 1);
    assertEquals(typeof env.hostname, "string");
    assertEquals(typeof env.os, "string");
    assertEquals(typeof env.totalRamGb, "number");
    assert(["deno", "bun"].includes(env.runtime));
    assertMatch(env.runtimeVersion, /^\d+\.\d+/);
    assertEquals(e0!.data.epoch, 0);
    assertEquals(e0!.data.modelInfo, {
      parameters: 3_000_000,
      gflops: 8.7,
      speedMs: 1.5,
    });
    assertEquals(e0!.data.metrics["model/parameters"], undefined);
    assertEquals(e1!.data.modelInfo, undefined);
    assertEquals(e1!.data.metrics["val/odd"], null);
    assertEquals(e2!.data.epoch, 2);
    assertEquals(e2!.data.system, { ram_gb: 1.5 });
    assertEquals(e1!.data.system, undefined);
    assertEquals(e2!.data.metrics["system/ram_gb"], undefined);
    const fitness = (e: number): number =>
      0.1 * (0.2 * (e + 1)) + 0.9 * (0.1 * (e + 1));
    assertEquals(e2!.data.fitness, fitness(2));
    assertEquals(e2!.data.best_fitness, fitness(2));
    assertEquals(saved!.data, {
      modelPath: `models/${modelId}/last.pt`,
      runId: t.runId,
      uploadPath: `ada/road-signs/full-run/last.pt`,
    });
    assertEquals(complete!.data.runId, t.runId);
    assertEquals(complete!.data.results.modelPath, `models/${modelId}/best.pt`);
    assertEquals(complete!.data.results.modelSize, best.byteLength);
    assertEquals(complete!.data.results.bestEpoch, 2);
    assertEquals(complete!.data.results.bestFitness, fitness(2));
    assertEquals(complete!.data.results.metrics.fitness, fitness(2));
    assertEquals(complete!.data.results.metrics["val/odd"], 0.5);

    const doc = await hub.get(`/v1/models/${modelId}`);
    assertEquals(doc.status, "trained");
    assertEquals(doc.data, "coco8.yaml");
    // deno-lint-ignore no-explicit-any
    const platform = doc.platform as any;
    assertEquals(platform.project, "ada/road-signs");
    assertEquals(platform.slug, "full-run");
    assertEquals(platform.runId, t.runId);
    assertEquals(platform.results.modelSize, best.byteLength);
    const metrics = await hub.get(`/v1/models/${modelId}/metrics`) as unknown;
    assertEquals((metrics as unknown[]).length, 3);
    const file = await fetch(`${hub.url}/v1/models/${modelId}/files/best.pt`, {
      headers: { authorization: `Bearer ${TEST_PLATFORM_KEY}` },
    });
    assertEquals(
      sha256(new Uint8Array(await file.arrayBuffer())),
      sha256(best),
    );
    assertEquals(cancels, []);
  });

  test("a second run of the same name gets the next slug", async () => {
    const first = transport("twice");
    await first.startRun({ epochs: 1 });
    const second = transport("twice");
    await second.startRun({ epochs: 2 });
    assertEquals(first.modelSlug, "twice");
    assertEquals(second.modelSlug, "twice-2");
    assert(first.modelId !== second.modelId);
  });

  test("a training_started sent again after a lost reply answers the same run", async () => {
    const client = transport("resent").client;
    const target = { project: "ada/road-signs", name: "resent" };
    const data = {
      trainArgs: { epochs: "1" },
      epochs: 1,
      device: "",
      environment: {},
    };
    const first = await client.sendEvent("training_started", data, target);
    const again = await client.sendEvent("training_started", data, target);
    assertEquals(again.modelId, first.modelId);
    assertEquals(again.runId, first.runId);
    await client.sendEvent("epoch_end", { epoch: 0, metrics: {} }, {
      modelId: first.modelId!,
    });
    // Once the run has moved on, the same body starts a new run.
    const later = await client.sendEvent("training_started", data, target);
    assert(later.modelId !== first.modelId);
    assertEquals(later.modelSlug, "resent-2");
  });

  test("a run stopped before it starts is answered cancelled: true by training_started", async () => {
    const first = transport("early-stop");
    const id = await first.startRun({ epochs: 3 });
    assertEquals((await hub.stop(id)).status, 200);
    let cancels = 0;
    const resumed = transport("early-stop", {
      modelId: id,
      onCancel: () => cancels++,
    });
    assertEquals(await resumed.startRun({ epochs: 3 }), id);
    assert(resumed.cancelled);
    assert(resumed.cancelSignal.aborted);
    assertEquals(cancels, 1);
  });

  test("a Stop on the HUB answers cancelled: true at the next epoch_end, once to the hook", async () => {
    let cancels = 0;
    const t = transport("stopped", { onCancel: () => cancels++ });
    const id = await t.startRun({ epochs: 5 });
    await t.sendEpochs(new Map([[0, { loss: 1 }]]));
    assertEquals(t.cancelled, false);
    assertEquals((await hub.stop(id)).status, 200);
    await t.sendEpochs(new Map([[1, { loss: 0.5 }], [2, { loss: 0.4 }]]));
    assertEquals(t.cancelled, true);
    assertEquals(cancels, 1);
    const doc = await hub.get(`/v1/models/${id}`);
    assertEquals((doc.platform as Record<string, unknown>).cancelled, true);
  });

  test("the model page of a running Platform run has a Stop button that stops it", async () => {
    const t = transport("button");
    const id = await t.startRun({ epochs: 5 });
    await t.sendEpochs(new Map([[0, { loss: 1 }]]));
    const key = { "x-api-key": TEST_PLATFORM_KEY };
    const before = await fetch(`${hub.url}/models/${id}`, {
      headers: { ...key, accept: "text/html" },
    });
    const html = await before.text();
    assertStringIncludes(html, `action="/models/${id}/stop"`);
    assertStringIncludes(html, "ada/road-signs/button");
    // A form posted from another site is refused.
    const forged = await fetch(`${hub.url}/models/${id}/stop`, {
      method: "POST",
      headers: {
        ...key,
        origin: "https://elsewhere.example",
        "content-type": "application/x-www-form-urlencoded",
      },
      body: "",
    });
    assertEquals(forged.status, 403);
    await forged.body?.cancel();
    await t.sendEpochs(new Map([[1, { loss: 0.9 }]]));
    assertEquals(t.cancelled, false);
    const pressed = await fetch(`${hub.url}/models/${id}/stop`, {
      method: "POST",
      headers: {
        ...key,
        origin: hub.url,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: "",
      redirect: "manual",
    });
    assertEquals(pressed.status, 303);
    await pressed.body?.cancel();
    await t.sendEpochs(new Map([[2, { loss: 0.8 }]]));
    assertEquals(t.cancelled, true);
    const after = await (await fetch(`${hub.url}/models/${id}`, {
      headers: { ...key, accept: "text/html" },
    })).text();
    assertStringIncludes(after, "Stop requested");
    assert(!after.includes(`action="/models/${id}/stop"`));
  });

  test("a 401 stops every later send with one clear error that never shows the key", async () => {
    const logger = captureLogger();
    let requests = 0;
    const counting = ((input: RequestInfo | URL, init?: RequestInit) => {
      requests++;
      return fetch(input, init);
    }) as typeof fetch;
    const t = new PlatformTransport({
      webhooksUrl: hub.webhooksUrl,
      apiKey: OTHER_KEY,
      project: "ada/road-signs",
      name: "refused",
      logger,
      fetch: counting,
    });
    const error = await assertRejects(
      () => t.startRun({ epochs: 1 }),
      HUBRequestError,
    );
    assertEquals(error.status, 401);
    assertEquals(error.retriable, false);
    assertStringIncludes(error.message, "nothing more is sent for this run");
    await assertRejects(
      () => t.sendEpochs(new Map([[0, { loss: 1 }]])),
      HUBRequestError,
      "refused the API key",
    );
    await writeFile(join(dir, "refused.pt"), "x");
    await assertRejects(() =>
      t.uploadWeights({
        epoch: 0,
        file: join(dir, "refused.pt"),
        type: "final",
      })
    );
    assertEquals(requests, 1);
    assertEquals(logger.lines.filter((l) => l.startsWith("error")).length, 1);
    for (const text of [...logger.lines, error.message]) {
      assert(!text.includes(OTHER_KEY.slice(3)));
    }
  });

  test("statuses through the fault proxy: 503 and 429 are retriable with Retry-After, 404 is not", async () => {
    const proxy = await startFaultProxy({
      upstream: hub.url,
      schedule: ["status503", "rateLimited"],
      retryAfterSeconds: 2,
    });
    try {
      const client = new PlatformClient({
        webhooksUrl: `${proxy.url}/api/webhooks`,
        apiKey: TEST_PLATFORM_KEY,
        logger: quietLogger,
      });
      const target = { project: "ada/road-signs", name: "proxied" };
      const busy = await assertRejects(
        () => client.sendEvent("training_started", {}, target),
        HUBRequestError,
      );
      assertEquals([busy.status, busy.retriable], [503, true]);
      const limited = await assertRejects(
        () => client.sendEvent("training_started", {}, target),
        HUBRequestError,
      );
      assertEquals([limited.status, limited.retriable], [429, true]);
      assertEquals(limited.retryAfter, 2000);
      const missing = await assertRejects(
        () => client.sendEvent("epoch_end", {}, { modelId: "x".repeat(20) }),
        HUBRequestError,
      );
      assertEquals([missing.status, missing.retriable], [404, false]);
      const reply = await client.sendEvent("training_started", {
        trainArgs: {},
        epochs: 1,
        device: "",
        environment: {},
      }, target);
      assert(typeof reply.modelId === "string");
    } finally {
      await proxy.close();
    }
  });
});

describe("The signed PUT", () => {
  test("sends the exact bytes with an exact Content-Length and no credentials", async () => {
    const bytes = new Uint8Array(randomBytes(3 * 1024 * 1024 + 17));
    await writeFile(join(dir, "put.pt"), bytes);
    let headers: IncomingHttpHeaders = {};
    const chunks: Uint8Array[] = [];
    const server = createServer((req, res) => {
      headers = req.headers;
      req.on("data", (c: Uint8Array) => chunks.push(c));
      req.on("end", () => res.end());
    });
    await new Promise<void>((go) => server.listen(0, "127.0.0.1", go));
    const { port } = server.address() as { port: number };
    try {
      const sent = await putSignedFile(
        `http://127.0.0.1:${port}/bucket/w.pt?X-Goog-Signature=abc`,
        join(dir, "put.pt"),
      );
      assertEquals(sent.size, bytes.byteLength);
      assertEquals(sent.sha256, sha256(bytes));
    } finally {
      await new Promise((go) => server.close(go));
    }
    assertEquals(headers["content-length"], String(bytes.byteLength));
    assertEquals(headers["transfer-encoding"], undefined);
    assertEquals(headers["content-type"], "application/octet-stream");
    assertEquals(headers.authorization, undefined);
    assertEquals(headers["x-api-key"], undefined);
    const got = Buffer.concat(chunks);
    assertEquals(sha256(got), sha256(bytes));
  });

  test("the HUB refuses an upload URL used after it expired", async () => {
    let clock = Date.now();
    const timed = await startPlatformHub({ now: () => clock });
    try {
      const t = new PlatformTransport({
        webhooksUrl: timed.webhooksUrl,
        apiKey: TEST_PLATFORM_KEY,
        project: "ada/road-signs",
        name: "late",
        logger: quietLogger,
      });
      await t.startRun({ epochs: 1 });
      const url = await t.client.requestUpload("last.pt", {
        modelId: t.modelId!,
      }, t.runId);
      clock += 15 * 60_000 + 1;
      await writeFile(join(dir, "late.pt"), "late");
      const late = await assertRejects(
        () => putSignedFile(url.uploadUrl, join(dir, "late.pt")),
        HUBRequestError,
      );
      assertEquals([late.status, late.retriable], [403, false]);
      assertStringIncludes(late.message, "expired");
      // A fresh URL works: uploadWeights asks for one on every attempt.
      const sent = await t.uploadWeights({
        epoch: 0,
        file: join(dir, "late.pt"),
        type: "epoch",
      });
      assertEquals(sent.size, 4);
    } finally {
      await timed.close();
    }
  });

  test("the HUB refuses a chunked PUT, a used URL and a foreign token", async () => {
    const t = transport("tokens");
    await t.startRun({ epochs: 1 });
    const client = t.client;
    const url = await client.requestUpload("last.pt", {
      modelId: t.modelId!,
    }, t.runId);
    const chunked = await fetch(url.uploadUrl, {
      method: "PUT",
      body: new ReadableStream({
        start(c) {
          c.enqueue(new Uint8Array([1, 2, 3]));
          c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    // Bun sends no length for a stream body either; both must be refused.
    assertEquals(chunked.status, 411);
    await writeFile(join(dir, "once.pt"), "once");
    const first = await putSignedFile(url.uploadUrl, join(dir, "once.pt"));
    assertEquals(first.storedSha256, first.sha256);
    const again = await assertRejects(
      () => putSignedFile(url.uploadUrl, join(dir, "once.pt")),
      HUBRequestError,
    );
    assertEquals([again.status, again.retriable], [403, false]);
    assert(!again.message.includes(new URL(url.uploadUrl).pathname));
    const forged = await assertRejects(
      () =>
        putSignedFile(
          `${hub.url}/api/platform/uploads/${"A".repeat(32)}`,
          join(dir, "once.pt"),
        ),
      HUBRequestError,
    );
    assertEquals(forged.status, 403);
  });
});
