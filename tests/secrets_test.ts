// The API key never leaks: not in logs, errors, URLs or over plain HTTP to
// another host, not through a redirect. Over 500 lines because each path a
// key could take has its own real server set-up.
import { after, before, describe, test } from "node:test";
import { assert, assertEquals } from "@std/assert";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HUBClient } from "../src/transport/client.ts";
import {
  HUBConfigError,
  HUBError,
  HUBRequestError,
} from "../src/common/errors.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import type { SessionOptions } from "../src/session/options.ts";
import { syncJournal } from "../src/session/sync.ts";
import { serveHub } from "../src/server/mod.ts";
import type { Logger } from "../src/protocol/types.ts";

type Hub = Awaited<ReturnType<typeof serveHub>>;

/** The known key every scenario uses; a hit anywhere is a leak. */
const KEY = "Kx7Qm2Vr9Lp4Zt8Wn3Bc6Hd1Jf5Gs0Ya2Ue4Io6Pq8";
const OTHER_KEY = "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4";
assertEquals(KEY.length, 42);
assertEquals(OTHER_KEY.length, 42);

let dir: string;
let hub: Hub;
let otherHub: Hub;
let client: HUBClient;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-secrets-test-"));
  hub = await serveHub({
    port: 0,
    dataDir: join(dir, "hub"),
    apiKeys: [KEY],
  });
  otherHub = await serveHub({
    port: 0,
    dataDir: join(dir, "other-hub"),
    apiKeys: [OTHER_KEY],
  });
  client = new HUBClient({ apiRoot: hub.url, apiKey: KEY });
});

after(async () => {
  await hub.close();
  await otherHub.close();
  await rm(dir, { recursive: true, force: true });
});

/** Everything a scenario produced that a user or a log could see. */
class Evidence {
  lines: string[] = [];
  urls: string[] = [];
  texts: string[] = [];

  logger(): Logger {
    return {
      info: (m) => this.lines.push(m),
      warn: (m) => this.lines.push(m),
      error: (m) => this.lines.push(m),
    };
  }

  /** A fetch that records every URL and passes the request on. */
  fetch(inner: typeof fetch = fetch): typeof fetch {
    return ((input: RequestInfo | URL, init?: RequestInit) => {
      this.urls.push(input instanceof Request ? input.url : String(input));
      return inner(input, init);
    }) as typeof fetch;
  }

  /** Records an error: message, stack, every string field, the cause chain. */
  error(value: unknown, seen = new Set<unknown>()): void {
    if (value === null || value === undefined || seen.has(value)) return;
    seen.add(value);
    if (typeof value === "string") {
      this.texts.push(value);
      return;
    }
    if (typeof value !== "object") {
      this.texts.push(String(value));
      return;
    }
    if (value instanceof Error) {
      this.texts.push(String(value), value.message, value.stack ?? "");
      this.error(value.cause, seen);
      if (value instanceof AggregateError) {
        for (const e of value.errors) this.error(e, seen);
      }
    }
    for (const [name, field] of Object.entries(value)) {
      if (name === "cause") continue;
      if (typeof field === "string") this.texts.push(field);
      else if (typeof field === "object") this.error(field, seen);
    }
  }

  hits(): string[] {
    return [...this.lines, ...this.urls, ...this.texts].filter((t) =>
      t.includes(KEY)
    );
  }
}

function options(evidence: Evidence, extra: SessionOptions = {}) {
  return {
    apiRoot: hub.url,
    webRoot: hub.url,
    settingsFile: false,
    env: () => undefined,
    logger: evidence.logger(),
    fetch: evidence.fetch(),
    journal: false,
    rateLimits: { metrics: 1, ckpt: 0, heartbeat: 5 },
    backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
    budgets: {
      metrics: { maxAttempts: 2 },
      checkpoint: { maxAttempts: 2 },
      final: { maxAttempts: 2 },
      other: { maxAttempts: 2 },
    },
    ...extra,
  } satisfies SessionOptions;
}

async function newModelId(on: HUBClient = client): Promise<string> {
  return await on.createModel(
    createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
  );
}

async function weights(name: string, size = 20_000): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, randomBytes(size));
  return path;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Runs `fn`, recording what it threw. */
async function capture(
  evidence: Evidence,
  fn: () => Promise<unknown>,
): Promise<unknown> {
  try {
    await fn();
    return undefined;
  } catch (error) {
    evidence.error(error);
    return error;
  }
}

describe("the API key never leaks", () => {
  test("a full session opened by <key>_<id>: metrics, checkpoint, final, close", async () => {
    const evidence = new Evidence();
    const id = await newModelId();
    const session = await HUBTrainingSession.create(
      `${KEY}_${id}`,
      options(evidence),
    );
    for (let epoch = 0; epoch < 3; epoch++) {
      session.queueMetrics(epoch, { "train/loss": 1 / (epoch + 1) });
    }
    const outcome = await session.uploadModel(2, await weights("last.pt"));
    evidence.error(outcome);
    const final = await session.uploadModel(2, await weights("best.pt"), {
      final: true,
      onProgress: () => {},
    });
    evidence.error(final);
    const report = await session.close();
    evidence.error(report);
    assertEquals(report.pendingEpochs, []);
    assertEquals(outcome.status, "uploaded");
    assert(evidence.urls.length >= 5, evidence.urls.join("\n"));
    assert(evidence.lines.length > 0);
    assertEquals(evidence.hits(), []);
  });

  test("a 401 from a server configured with a different key", async () => {
    const evidence = new Evidence();
    const id = await newModelId(
      new HUBClient({ apiRoot: otherHub.url, apiKey: OTHER_KEY }),
    );
    const error = await capture(evidence, () =>
      HUBTrainingSession.create(
        `${KEY}_${id}`,
        options(evidence, { apiRoot: otherHub.url, webRoot: otherHub.url }),
      ));
    assert(error instanceof HUBError, String(error));
    const status = error instanceof HUBRequestError
      ? error.status
      : (error as { cause?: { status?: number } }).cause?.status;
    assertEquals(status, 401);
    assertEquals(evidence.hits(), []);
  });

  test("a 401 on metrics, checkpoint and final uploads in the middle of a session", async () => {
    const evidence = new Evidence();
    const id = await newModelId();
    let revoked = false;
    const revoking = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (!revoked) return await fetch(input, init);
      const body = init?.body;
      if (body instanceof ReadableStream) {
        await new Response(body).arrayBuffer();
      }
      return Response.json({ success: false, message: "Invalid API key" }, {
        status: 401,
      });
    }) as typeof fetch;
    const session = await HUBTrainingSession.create(
      `${KEY}_${id}`,
      options(evidence, { fetch: evidence.fetch(revoking) }),
    );
    revoked = true;
    session.queueMetrics(0, { "train/loss": 1 });
    evidence.error(await session.uploadMetrics());
    evidence.error(await session.uploadModel(0, await weights("c401.pt")));
    await capture(
      evidence,
      () =>
        session.uploadModel(0, join(dir, "c401.pt"), {
          final: true,
          onProgress: () => {},
        }),
    );
    evidence.error(await session.close());
    assert(evidence.texts.some((t) => t.includes("401")));
    assertEquals(evidence.hits(), []);
  });

  test("a network failure at open and in the middle of a session", async () => {
    const evidence = new Evidence();
    const apiRoot = `http://127.0.0.1:${await closedPort()}`;
    const error = await capture(
      evidence,
      () =>
        HUBTrainingSession.create(
          `${KEY}_AbCdEfGhIj0123456789`,
          options(evidence, { apiRoot, webRoot: apiRoot }),
        ),
    );
    assert(error instanceof HUBError, String(error));
    const network = error instanceof HUBRequestError ? error : error.cause;
    assert(network instanceof HUBRequestError, String(network));
    assertEquals(network.status, undefined);

    const id = await newModelId();
    let cut = false;
    const cutting =
      ((input: RequestInfo | URL, init?: RequestInit) =>
        cut
          ? Promise.reject(new TypeError("fetch failed: connection reset"))
          : fetch(input, init)) as typeof fetch;
    const session = await HUBTrainingSession.create(
      `${KEY}_${id}`,
      options(evidence, { fetch: evidence.fetch(cutting) }),
    );
    cut = true;
    session.queueMetrics(0, { "train/loss": 1 });
    evidence.error(await session.uploadMetrics());
    evidence.error(await session.uploadModel(0, await weights("cnet.pt")));
    evidence.error(await session.close());
    assert(evidence.lines.length > 0);
    assertEquals(evidence.hits(), []);
  });

  test("a 400, also one whose message echoes the key", async () => {
    const evidence = new Evidence();
    const id = await newModelId();
    let mode: "ok" | "plain" | "echo" = "ok";
    const refusing = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (mode === "ok") return await fetch(input, init);
      const body = init?.body;
      if (body instanceof ReadableStream) {
        await new Response(body).arrayBuffer();
      }
      const headers = new Headers(init?.headers);
      const message = mode === "echo"
        ? `Bad request from key ${headers.get("x-api-key")}`
        : "Invalid metrics";
      return Response.json({ success: false, message }, { status: 400 });
    }) as typeof fetch;
    const session = await HUBTrainingSession.create(
      `${KEY}_${id}`,
      options(evidence, { fetch: evidence.fetch(refusing) }),
    );
    for (const next of ["plain", "echo"] as const) {
      mode = next;
      session.queueMetrics(0, { "train/loss": 1 });
      const result = await session.uploadMetrics();
      assert(result.error instanceof HUBRequestError);
      assertEquals(result.error.status, 400);
      evidence.error(result);
      evidence.error(await session.uploadModel(0, await weights("c400.pt")));
    }
    evidence.error(await session.close());
    assertEquals(evidence.hits(), []);
  });

  test("syncJournal() with a key and a server that refuses it", async () => {
    const evidence = new Evidence();
    const error = await capture(evidence, async () => {
      const reports = await syncJournal({
        apiRoot: otherHub.url,
        apiKey: KEY,
        journal: join(dir, "empty-journal"),
        modelId: "AbCdEfGhIj0123456789",
        settingsFile: false,
        env: () => undefined,
        logger: evidence.logger(),
        fetch: evidence.fetch(),
        backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
      });
      evidence.error(reports);
    });
    evidence.error(error);
    assertEquals(evidence.hits(), []);
  });
});

describe("the API key over plain HTTP", () => {
  test("a session refuses to send it to a non-loopback host, before any request", async () => {
    for (
      const apiRoot of [
        "http://example.com",
        "http://10.0.0.1:8080",
        "http://hub.local",
      ]
    ) {
      const evidence = new Evidence();
      const error = await capture(
        evidence,
        () =>
          HUBTrainingSession.create(
            `${KEY}_AbCdEfGhIj0123456789`,
            options(evidence, { apiRoot, webRoot: apiRoot }),
          ),
      );
      assert(error instanceof HUBConfigError, `${apiRoot}: ${error}`);
      assertEquals(evidence.urls, []);
      assertEquals(evidence.hits(), []);
      const viaOption = await capture(
        evidence,
        () =>
          HUBTrainingSession.create(
            "AbCdEfGhIj0123456789",
            options(evidence, { apiRoot, webRoot: apiRoot, apiKey: KEY }),
          ),
      );
      assert(viaOption instanceof HUBConfigError, `${apiRoot}`);
      const viaEnv = await capture(
        evidence,
        () =>
          HUBTrainingSession.create(
            "AbCdEfGhIj0123456789",
            options(evidence, {
              apiRoot,
              webRoot: apiRoot,
              env: (name) => name === "HUB_API_KEY" ? KEY : undefined,
            }),
          ),
      );
      assert(viaEnv instanceof HUBConfigError, `${apiRoot}`);
      assertEquals(evidence.urls, []);
      assertEquals(evidence.hits(), []);
    }
  });

  test("a HUBClient built directly refuses to send it to a non-loopback host", async () => {
    const evidence = new Evidence();
    const reply = (() =>
      Promise.resolve(
        Response.json({ success: true, data: { id: "AbCdEfGhIj0123456789" } }),
      )) as unknown as typeof fetch;
    const error = await capture(evidence, () => {
      const direct = new HUBClient({
        apiRoot: "http://example.com",
        apiKey: KEY,
        fetch: evidence.fetch(reply),
      });
      return direct.getModel("AbCdEfGhIj0123456789");
    });
    assert(error instanceof HUBConfigError, String(error));
    assertEquals(evidence.urls, []);
    assertEquals(evidence.hits(), []);
  });

  test("the same key goes to a loopback host over plain HTTP and to any host over HTTPS", async () => {
    const evidence = new Evidence();
    const session = await HUBTrainingSession.create(
      "yolov8n.yaml",
      options(evidence, {
        apiRoot: "https://hub.example.com",
        webRoot: "https://hub.example.com",
        apiKey: KEY,
      }),
    );
    await session.close();
    const local = await HUBTrainingSession.create(
      "yolov8n.yaml",
      options(evidence, { apiKey: KEY }),
    );
    await local.close();
    assertEquals(evidence.urls, []);
  });
});

describe("a redirect to another host", () => {
  let redirector: Server;
  let recorder: Server;
  let redirectorUrl: string;
  const seen: IncomingHttpHeaders[] = [];

  async function listen(server: Server): Promise<string> {
    await new Promise<void>((resolve) =>
      server.listen(0, "127.0.0.1", resolve)
    );
    const { port } = server.address() as net.AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  before(async () => {
    recorder = createServer((request, response) => {
      seen.push(request.headers);
      request.resume();
      request.on("end", () => {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(
          JSON.stringify({
            success: true,
            data: {
              id: "AbCdEfGhIj0123456789",
              status: "new",
              data: "coco8.yaml",
            },
          }),
        );
      });
    });
    const recorderUrl = await listen(recorder);
    redirector = createServer((request, response) => {
      request.resume();
      request.on("end", () => {
        response.writeHead(307, {
          location: `${recorderUrl}${request.url ?? "/"}`,
        });
        response.end();
      });
    });
    redirectorUrl = await listen(redirector);
  });

  after(async () => {
    for (const server of [redirector, recorder]) {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test("the redirect target records the x-api-key of a fetch that follows the redirect", async () => {
    seen.length = 0;
    const response = await fetch(`${redirectorUrl}/v1/probe`, {
      headers: { "x-api-key": "probe" },
    });
    await response.arrayBuffer();
    assertEquals(response.status, 200);
    assertEquals(seen.at(-1)?.["x-api-key"], "probe");
  });

  test("the client does not carry the key to the redirect target and fails with a typed error", async () => {
    seen.length = 0;
    const evidence = new Evidence();
    const redirected = new HUBClient({
      apiRoot: redirectorUrl,
      apiKey: KEY,
      logger: evidence.logger(),
    });
    const error = await capture(
      evidence,
      () => redirected.getModel("AbCdEfGhIj0123456789"),
    );
    await capture(
      evidence,
      () => redirected.uploadMetrics("AbCdEfGhIj0123456789", { "0": { a: 1 } }),
    );
    assertEquals(
      seen.filter((h) => h["x-api-key"] !== undefined).length,
      0,
      "the redirect target received x-api-key",
    );
    assert(error instanceof HUBRequestError, String(error));
    assertEquals(evidence.hits(), []);
  });

  test("a session opened by <key>_<id> does not carry the key to the redirect target", async () => {
    seen.length = 0;
    const evidence = new Evidence();
    await capture(evidence, async () => {
      const session = await HUBTrainingSession.create(
        `${KEY}_AbCdEfGhIj0123456789`,
        options(evidence, {
          apiRoot: redirectorUrl,
          webRoot: redirectorUrl,
          heartbeat: false,
        }),
      );
      await session.close();
    });
    assertEquals(
      seen.filter((h) => h["x-api-key"] !== undefined).length,
      0,
      "the redirect target received x-api-key",
    );
    assertEquals(evidence.hits(), []);
  });
});
