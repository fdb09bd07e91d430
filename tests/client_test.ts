// HUBClient, one method per endpoint, against the local HUB, then its
// envelope checks and error mapping. Over 500 lines because it is one test
// per endpoint and per status rule (34 of them).
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStrictEquals,
  assertThrows,
} from "@std/assert";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { serveHub } from "../src/server/mod.ts";
import type { HubServer } from "../src/server/mod.ts";
import {
  HUBClient,
  isRetriableStatus,
  MAX_RESPONSE_BYTES,
  parseRetryAfter,
} from "../src/transport/client.ts";
import { HUBRequestError, HUBTimeoutError } from "../src/common/errors.ts";
import { AGENT, VERSION } from "../src/common/version.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import type { CreateModelPayload, Logger } from "../src/protocol/types.ts";

const KEY = "k".repeat(21) + "SECRET" + "y".repeat(15);
const quiet: Logger = { info() {}, warn() {}, error() {} };

const payload: CreateModelPayload = createModelPayload("yolov8n.pt", {
  data: "coco8.yaml",
  epochs: 3,
});

/** A fetch that answers every request with the Response `make` builds. */
function replying(
  make: (url: string, init: RequestInit | undefined) => Response,
): typeof fetch {
  return ((input: string | URL | Request, init?: RequestInit) =>
    Promise.resolve(make(String(input), init))) as typeof fetch;
}

/** A fetch that never answers, and rejects with the signal's reason when aborted. */
const hanging: typeof fetch =
  ((_input: unknown, init?: RequestInit) =>
    new Promise((_resolve, reject) => {
      const signal = init?.signal;
      signal?.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    })) as typeof fetch;

/** What `promise` rejects with; fails the test when it resolves. */
function rejection(promise: Promise<unknown>): Promise<unknown> {
  return assertRejects(() => promise);
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null
    ? address.port
    : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function assertNoKey(error: unknown): void {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current !== undefined && current !== null && !seen.has(current)) {
    seen.add(current);
    const text = current instanceof Error
      ? `${current.message} ${current.stack ?? ""} ${
        JSON.stringify({ ...current })
      }`
      : String(current);
    assert(!text.includes("SECRET"), `key leaked in: ${text}`);
    current = (current as { cause?: unknown }).cause;
  }
}

describe("HUBClient against the local HUB", () => {
  let dir: string;
  let server: HubServer;
  let client: HUBClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hub-client-"));
    server = await serveHub({
      port: 0,
      dataDir: join(dir, "data"),
      apiKeys: [KEY],
    });
    client = new HUBClient({ apiRoot: `${server.url}/`, apiKey: KEY });
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("apiRoot loses its trailing slash", () => {
    assertEquals(client.apiRoot, server.url);
  });

  test("auth() is true with the right key and false with a wrong one", async () => {
    assertEquals(await client.auth(), true);
    const wrong = new HUBClient({
      apiRoot: server.url,
      apiKey: "w".repeat(42),
    });
    assertEquals(await wrong.auth(), false);
    const none = new HUBClient({ apiRoot: server.url });
    assertEquals(await none.auth(), false);
  });

  test("a request without a valid key fails with 401, not retriable, key not echoed", async () => {
    const wrong = new HUBClient({
      apiRoot: server.url,
      apiKey: "SECRET".repeat(7),
    });
    const error = await rejection(wrong.getModel("a".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 401);
    assertEquals(error.retriable, false);
    assertMatch(error.message, /check the API key/);
    assertNoKey(error);
  });

  test("createModel() returns a 20-character id and getModel() reads it back", async () => {
    const id = await client.createModel(payload);
    assertMatch(id, /^[A-Za-z0-9]{20}$/);
    const model = await client.getModel(id);
    assertEquals(model.id, id);
    assertEquals(model.status, "new");
    assertEquals(model.cfg?.startsWith("yolov8n"), true);
  });

  test("getModel() of an unknown model fails with 404 and the path without secrets", async () => {
    const error = await rejection(client.getModel("Z".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 404);
    assertEquals(error.method, "GET");
    assertEquals(error.path, `/v1/models/${"Z".repeat(20)}`);
    assertEquals(error.retriable, false);
    assertEquals(typeof error.serverMessage, "string");
    assertNoKey(error);
  });

  test("uploadMetrics() sends JSON strings per epoch and listMetrics() returns them sorted", async () => {
    const id = await client.createModel(payload);
    await client.uploadMetrics(
      id,
      new Map([[1, { "metrics/mAP50(B)": 0.5 }], [0, {
        "train/box_loss": 1.25,
      }]]),
    );
    await client.uploadMetrics(id, { "2": { "val/box_loss": 0.75 } });
    await client.uploadMetrics(id, {}); // sends nothing
    assertEquals(await client.listMetrics(id), [
      { epoch: 0, metrics: { "train/box_loss": 1.25 } },
      { epoch: 1, metrics: { "metrics/mAP50(B)": 0.5 } },
      { epoch: 2, metrics: { "val/box_loss": 0.75 } },
    ]);
    assertEquals((await client.getModel(id)).status, "training");
  });

  test("uploadMetrics() rejects a non-integer epoch before sending", async () => {
    await assertRejects(
      () => client.uploadMetrics("a".repeat(20), { "1.5": { a: 1 } }),
      RangeError,
    );
  });

  test("updateModel() changes the stored document, and a refused patch is a 400", async () => {
    const id = await client.createModel(payload);
    await client.updateModel(id, { status: "training" });
    assertEquals((await client.getModel(id)).status, "training");
    const error = await rejection(client.updateModel(id, { cfg: "x.yaml" }));
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 400);
    assertEquals(error.retriable, false);
    assertMatch(error.serverMessage ?? "", /cfg/);
  });

  test("heartbeat() adopts the agent id the server assigns", async () => {
    const id = await client.createModel(payload);
    const first = await client.heartbeat(id, { agentId: null });
    assertEquals(typeof first.agentId, "string");
    const second = await client.heartbeat(id, {
      agentId: first.agentId,
      agent: "test-agent",
    });
    assertEquals(second.agentId, first.agentId);
  });

  test("exportModel() is accepted for an existing model", async () => {
    const id = await client.createModel(payload);
    await client.exportModel(id, "onnx");
    const missing = await assertRejects(
      () => client.exportModel("Q".repeat(20), "onnx"),
      HUBRequestError,
    );
    assertEquals(missing.name, "HUBRequestError");
    assertEquals(missing.status, 404);
  });

  test("deleteModel() removes the model, soft or hard", async () => {
    for (const hard of [false, true]) {
      const id = await client.createModel(payload);
      await client.deleteModel(id, { hard });
      const error = await rejection(client.getModel(id));
      assert(error instanceof HUBRequestError);
      assertEquals(error.status, 404);
    }
  });

  test("deleteModel() errors carry the path without the query string", async () => {
    const error = await rejection(client.deleteModel("X".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertEquals(error.path, `/v1/models/${"X".repeat(20)}`);
    assert(!error.message.includes("?hard"));
  });

  test("uploadModel() stores last.pt and best.pt with the sha256 the server computed", async () => {
    const id = await client.createModel(payload);
    const file = join(dir, "weights.pt");
    const bytes = new Uint8Array(2_500_000).map((_, i) => (i * 31) & 255);
    await writeFile(file, bytes);
    const epoch = await client.uploadModel(id, {
      epoch: 1,
      file,
      type: "epoch",
      isBest: true,
    });
    assertEquals(epoch.size, bytes.byteLength);
    const final = await client.uploadModel(id, {
      epoch: 2,
      file,
      type: "final",
      map: 0.61,
    });
    assertEquals(final.sha256, epoch.sha256);
    const model = await client.getModel(id);
    assertEquals(model.status, "trained");
    assertEquals(model.has_last_weights, true);
    const served = await fetch(`${server.url}/v1/models/${id}/files/best.pt`, {
      headers: { "x-api-key": KEY },
    });
    assertEquals(new Uint8Array(await served.arrayBuffer()), bytes);
  });
});

describe("HUBClient envelope checks", () => {
  const root = "http://127.0.0.1:9";

  test("a 200 with success false is a HUBRequestError with the server's message", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        Response.json({ success: false, message: "Model is archived" })
      ),
    });
    const error = await rejection(client.getModel("a".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 200);
    assertEquals(error.serverMessage, "Model is archived");
    assertEquals(error.retriable, false);
    assertMatch(error.message, /success false: Model is archived/);
  });

  test("an HTML body is reported as such", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        new Response("<!doctype html><title>Login</title>", {
          headers: { "content-type": "text/html" },
        })
      ),
    });
    const error = await rejection(client.getModel("a".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertMatch(error.message, /HTML page/);
    assertEquals(error.retriable, false);
  });

  test("a 502 HTML page is retriable", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        new Response("<html>Bad gateway</html>", { status: 502 })
      ),
    });
    const error = await rejection(client.auth());
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 502);
    assertEquals(error.retriable, true);
    assertMatch(error.message, /HTML page/);
  });

  test("truncated JSON is reported as invalid JSON", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() => new Response('{"success": true, "data": {"id"')),
    });
    const error = await rejection(client.createModel(payload));
    assert(error instanceof HUBRequestError);
    assertMatch(error.message, /not valid JSON/);
  });

  test("missing data where it is required is an error; not where it is not", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() => Response.json({ success: true })),
    });
    assertMatch(
      String(await assertRejects(() => client.createModel(payload))),
      /has no 'data.id'/,
    );
    assertMatch(
      String(await assertRejects(() => client.getModel("a".repeat(20)))),
      /no model document/,
    );
    assertMatch(
      String(await assertRejects(() => client.listMetrics("a".repeat(20)))),
      /epoch, metrics/,
    );
    await client.updateModel("a".repeat(20), { a: 1 });
  });

  test("a reply that is not an envelope is rejected", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() => Response.json([1, 2])),
    });
    assertMatch(
      String(await assertRejects(() => client.auth())),
      /not a HUB envelope/,
    );
  });

  test("an empty 2xx body is accepted only where no data is needed", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() => new Response(null, { status: 204 })),
    });
    await client.deleteModel("a".repeat(20));
    assertMatch(
      String(await assertRejects(() => client.getModel("a".repeat(20)))),
      /is empty/,
    );
  });

  test("a reply larger than the cap is refused instead of buffered", async () => {
    let pulled = 0;
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              pulled++;
              controller.enqueue(new Uint8Array(1 << 20));
            },
          }),
        )
      ),
    });
    const error = await rejection(client.getModel("a".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertMatch(error.message, /exceeds/);
    assert(pulled <= MAX_RESPONSE_BYTES / (1 << 20) + 2);
  });

  test("requests send x-api-key and user-agent only as configured", async () => {
    const seen: Headers[] = [];
    const fetchFn = replying((_url, init) => {
      seen.push(new Headers(init?.headers));
      return Response.json({ success: true, data: {} });
    });
    await new HUBClient({ apiRoot: root, apiKey: KEY, fetch: fetchFn }).auth();
    await new HUBClient({ apiRoot: root, fetch: fetchFn }).auth();
    await new HUBClient({ apiRoot: root, idToken: "tok", fetch: fetchFn })
      .auth();
    assertEquals(seen[0]?.get("x-api-key"), KEY);
    assertEquals(seen[1]?.has("x-api-key"), false);
    assertEquals(seen[1]?.has("authorization"), false);
    assertEquals(seen[2]?.get("authorization"), "Bearer tok");
    assertEquals(seen[0]?.get("user-agent"), AGENT);
    assertMatch(AGENT, new RegExp(`^hub-session/${VERSION} \\((deno|bun) `));
  });
});

describe("HUBClient error mapping", () => {
  const root = "http://127.0.0.1:9";

  test("429 with Retry-After seconds is retriable with retryAfter in ms", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        Response.json({
          success: false,
          message: "Rate limit reached (0/10). Please retry after 7s.",
        }, { status: 429, headers: { "retry-after": "7" } })
      ),
    });
    const error = await rejection(
      client.uploadMetrics("a".repeat(20), { "0": { a: 1 } }),
    );
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, 429);
    assertEquals(error.retriable, true);
    assertEquals(error.retryAfter, 7000);
    assertMatch(error.message, /Rate limit reached/);
  });

  test("429 with only X-RateLimit-Reset uses it, and without any header has no retryAfter", async () => {
    const reset = String(Math.floor(Date.now() / 1000) + 120);
    const withReset = new HUBClient({
      apiRoot: root,
      fetch: replying(() =>
        new Response("", {
          status: 429,
          headers: { "x-ratelimit-reset": reset, "x-ratelimit-limit": "10" },
        })
      ),
    });
    const a = await rejection(withReset.auth());
    assert(a instanceof HUBRequestError);
    assert(
      a.retryAfter !== undefined && a.retryAfter > 100_000 &&
        a.retryAfter <= 121_000,
    );
    const bare = new HUBClient({
      apiRoot: root,
      fetch: replying(() => new Response(null, { status: 429 })),
    });
    const b = await rejection(bare.auth());
    assert(b instanceof HUBRequestError);
    assertEquals(b.retriable, true);
    assertEquals(b.retryAfter, undefined);
  });

  test("parseRetryAfter() reads seconds, HTTP dates and resets, caps at one hour and survives garbage", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    const h = (init: Record<string, string>) => new Headers(init);
    assertEquals(parseRetryAfter(h({ "retry-after": "0" }), now), 0);
    assertEquals(
      parseRetryAfter(
        h({ "retry-after": "Thu, 01 Jan 2026 00:00:30 GMT" }),
        now,
      ),
      30_000,
    );
    assertEquals(
      parseRetryAfter(
        h({ "retry-after": "Wed, 31 Dec 2025 00:00:00 GMT" }),
        now,
      ),
      0,
    );
    assertEquals(
      parseRetryAfter(h({ "retry-after": "999999" }), now),
      3_600_000,
    );
    assertEquals(
      parseRetryAfter(h({ "x-ratelimit-reset": "15" }), now),
      15_000,
    );
    assertEquals(
      parseRetryAfter(h({ "x-ratelimit-reset": String(now / 1000 + 60) }), now),
      60_000,
    );
    assertEquals(parseRetryAfter(h({ "retry-after": "soon" }), now), undefined);
    assertEquals(
      parseRetryAfter(h({ "x-ratelimit-reset": "-5" }), now),
      undefined,
    );
  });

  test("isRetriableStatus() matches the contract's list", () => {
    for (const status of [408, 429, 500, 502, 503, 504]) {
      assert(isRetriableStatus(status), String(status));
    }
    for (const status of [400, 401, 403, 404, 409, 413, 501]) {
      assert(!isRetriableStatus(status), String(status));
    }
  });

  test("a Checksum mismatch 400 is retriable; another 400 is not", async () => {
    for (
      const [message, retriable] of [
        ["Checksum mismatch: got x", true],
        ["Bad payload", false],
      ] as const
    ) {
      const client = new HUBClient({
        apiRoot: root,
        fetch: replying(() =>
          Response.json({ success: false, message }, { status: 400 })
        ),
      });
      const error = await rejection(client.auth());
      assert(error instanceof HUBRequestError);
      assertEquals(error.retriable, retriable, message);
    }
  });

  test("a refused connection is a retriable HUBRequestError without status", async () => {
    const port = await closedPort();
    const client = new HUBClient({
      apiRoot: `http://127.0.0.1:${port}`,
      apiKey: KEY,
    });
    const error = await rejection(client.getModel("a".repeat(20)));
    assert(error instanceof HUBRequestError);
    assertEquals(error.status, undefined);
    assertEquals(error.retriable, true);
    assert(error.cause !== undefined);
    assertMatch(error.message, /failed on the network/);
    assertNoKey(error);
  });

  test("a request that gets no reply in time fails with HUBTimeoutError", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: hanging,
      timeout: 50,
    });
    const error = await rejection(client.getModel("a".repeat(20)));
    assert(error instanceof HUBTimeoutError);
    assertEquals(error.timeout, 50);
    assertMatch(error.message, /within 50 ms/);
    const perCall = await rejection(
      new HUBClient({ apiRoot: root, fetch: hanging }).auth({ timeout: 20 }),
    );
    assert(perCall instanceof HUBTimeoutError);
    assertEquals(perCall.timeout, 20);
  });

  test("a caller's abort rejects with the signal's reason, not a timeout", async () => {
    const client = new HUBClient({
      apiRoot: root,
      fetch: hanging,
      timeout: 60_000,
    });
    const controller = new AbortController();
    const reason = new Error("stop now");
    const pending = rejection(client.auth({ signal: controller.signal }));
    controller.abort(reason);
    assertStrictEquals(await pending, reason);
    const already = await rejection(
      client.auth({ signal: AbortSignal.abort(reason) }),
    );
    assertStrictEquals(already, reason);
  });

  test("the client's signal aborts every request with its reason", async () => {
    const controller = new AbortController();
    const client = new HUBClient({
      apiRoot: root,
      fetch: hanging,
      signal: controller.signal,
    });
    const pending = rejection(client.listMetrics("a".repeat(20)));
    controller.abort(new Error("closing"));
    const error = await pending;
    assert(error instanceof Error);
    assertEquals(error.message, "closing");
  });

  test("the constructor validates its options", () => {
    assertThrows(() => new HUBClient({ apiRoot: "nope" }), TypeError);
    assertThrows(() => new HUBClient({ apiRoot: "ftp://x" }), TypeError);
    assertThrows(
      () => new HUBClient({ apiRoot: "http://u:p@127.0.0.1" }),
      TypeError,
    );
    assertThrows(
      () => new HUBClient({ apiRoot: "http://127.0.0.1", timeout: 0 }),
      RangeError,
    );
    assertThrows(
      () => new HUBClient({ apiRoot: "http://127.0.0.1", apiKey: "" }),
      TypeError,
    );
  });

  test("methods validate their arguments before sending", async () => {
    let calls = 0;
    const client = new HUBClient({
      apiRoot: root,
      fetch: replying(() => {
        calls++;
        return Response.json({ success: true, data: {} });
      }),
      logger: quiet,
    });
    await assertRejects(() => client.getModel(""), TypeError);
    await assertRejects(
      () =>
        client.uploadModel("a".repeat(20), {
          epoch: -1,
          file: "x",
          type: "epoch",
        }),
      RangeError,
    );
    await assertRejects(
      () =>
        client.uploadModel("a".repeat(20), {
          epoch: 1,
          file: "x",
          type: "bogus" as "epoch",
        }),
      TypeError,
    );
    await assertRejects(
      () => client.exportModel("a".repeat(20), ""),
      TypeError,
    );
    await assertRejects(() => client.auth({ timeout: -1 }), RangeError);
    assertEquals(calls, 0);
  });
});

test("a redirect is not followed and fails with a typed error that keeps the key", async () => {
  const seen: RequestInit[] = [];
  const redirecting = ((_input: RequestInfo | URL, init?: RequestInit) => {
    seen.push(init ?? {});
    return Promise.resolve(
      new Response(null, {
        status: 307,
        headers: {
          location: "http://other.example:9999/v1/models/x?token=abc",
        },
      }),
    );
  }) as typeof fetch;
  const client = new HUBClient({
    apiRoot: "http://127.0.0.1:9",
    apiKey: KEY,
    fetch: redirecting,
    logger: quiet,
  });
  const error = await assertRejects(
    () => client.getModel("AbCdEfGhIj0123456789"),
    HUBRequestError,
  );
  assertEquals(error.status, 307);
  assertEquals(error.retriable, false);
  assertMatch(
    error.message,
    /redirected .* to http:\/\/other\.example:9999\/v1\/models\/x/,
  );
  assert(!error.message.includes("token=abc"));
  assert(!error.message.includes(KEY));
  assertEquals(seen[0]?.redirect, "manual");
});
