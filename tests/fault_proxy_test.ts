// The fault-injecting proxy the resilience tests rely on: each fault it
// injects, its replay by seed and its streaming. Over 500 lines because it
// is one test per fault (24 of them).
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertNotMatch,
  assertRejects,
  fail,
} from "@std/assert";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createHash } from "node:crypto";
import { FAULTS, startFaultProxy } from "./support/fault_proxy.ts";
import type {
  Fault,
  FaultProxy,
  FaultProxyOptions,
} from "./support/fault_proxy.ts";

/** What the upstream saw of one request. */
interface Received {
  method: string;
  url: string;
  apiKey: string | undefined;
  bytes: number;
  complete: boolean;
  sha256: string;
  settled: Promise<void>;
}

interface Upstream {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/**
 * A tiny real upstream: hashes every request body as it streams in and
 * answers `{success, data: {bytes, sha256, method, url}}`; `/status/<code>`
 * answers that status.
 */
async function startUpstream(): Promise<Upstream> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const hash = createHash("sha256");
    let settle!: () => void;
    const rec: Received = {
      method: req.method ?? "",
      url: req.url ?? "",
      apiKey: req.headers["x-api-key"] as string | undefined,
      bytes: 0,
      complete: false,
      sha256: "",
      settled: new Promise<void>((resolve) => (settle = resolve)),
    };
    received.push(rec);
    req.on("data", (chunk: Uint8Array) => {
      hash.update(chunk);
      rec.bytes += chunk.length;
    });
    req.on("error", () => settle());
    req.on("close", () => settle());
    req.on("end", () => {
      rec.complete = true;
      rec.sha256 = hash.digest("hex");
      settle();
      const status = Number(/^\/status\/(\d{3})$/.exec(rec.url)?.[1] ?? 200);
      const body = JSON.stringify({
        success: status < 400,
        data: {
          bytes: rec.bytes,
          sha256: rec.sha256,
          method: rec.method,
          url: rec.url,
        },
      });
      res.writeHead(status, { "content-type": "application/json" });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/**
 * Resolves with what upstream saw of its `index`-th request once that request
 * has settled; the client may hear of a reset before upstream got the start
 * of the request, so this waits (up to 5 s) for it to arrive.
 */
async function settledRequest(
  upstream: Upstream,
  index: number,
): Promise<Received> {
  const end = performance.now() + 5_000;
  while (upstream.received[index] === undefined) {
    if (performance.now() > end) {
      fail(`Timed out waiting for upstream request ${index}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const rec = upstream.received[index]!;
  await rec.settled;
  return rec;
}

/** A deterministic stream of `size` bytes in `chunk`-sized pieces, and its sha256. */
function byteStream(
  size: number,
  chunk = 1 << 20,
): { stream: ReadableStream<Uint8Array>; sha256: string } {
  const block = new Uint8Array(chunk);
  for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
  const piece = (index: number, length: number): Uint8Array => {
    const out = block.slice(0, length);
    out[0] = index & 0xff;
    out[1] = (index >>> 8) & 0xff;
    return out;
  };
  const hash = createHash("sha256");
  for (let sent = 0, i = 0; sent < size; i++) {
    const length = Math.min(chunk, size - sent);
    hash.update(piece(i, length));
    sent += length;
  }
  let sent = 0;
  let index = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= size) {
        controller.close();
        return;
      }
      const length = Math.min(chunk, size - sent);
      controller.enqueue(piece(index++, length));
      sent += length;
    },
  });
  return { stream, sha256: hash.digest("hex") };
}

/** `RequestInit` for a streamed body (`duplex` is missing from Deno's type). */
function streamInit(
  body: ReadableStream<Uint8Array>,
  extra: RequestInit = {},
): RequestInit {
  const init: RequestInit & { duplex: "half" } = {
    method: "POST",
    ...extra,
    body,
    duplex: "half",
  };
  return init;
}

async function withProxy(
  upstream: Upstream,
  options: Omit<FaultProxyOptions, "upstream">,
  fn: (proxy: FaultProxy) => Promise<void>,
): Promise<void> {
  const proxy = await startFaultProxy({ upstream: upstream.url, ...options });
  try {
    await fn(proxy);
  } finally {
    await proxy.close();
  }
}

describe("fault proxy", () => {
  let upstream: Upstream;
  before(async () => {
    upstream = await startUpstream();
  });
  after(async () => {
    await upstream.close();
  });

  test("passes a request through with its method, path, query, headers and body", async () => {
    await withProxy(upstream, {}, async (proxy) => {
      const seen = upstream.received.length;
      const res = await fetch(`${proxy.url}/v1/models/abc?hard=true`, {
        method: "PATCH",
        headers: { "x-api-key": "k-123", "content-type": "application/json" },
        body: JSON.stringify({ name: "n" }),
      });
      assertEquals(res.status, 200);
      const { data } = await res.json();
      assertEquals(data.method, "PATCH");
      assertEquals(data.url, "/v1/models/abc?hard=true");
      assertEquals(data.bytes, JSON.stringify({ name: "n" }).length);
      assertEquals(upstream.received[seen]?.apiKey, "k-123");
      assertEquals(proxy.log, [
        { n: 1, method: "PATCH", path: "/v1/models/abc", fault: "pass" },
      ]);
      assertEquals(proxy.stats.requests, 1);
      assertEquals(proxy.stats.byFault.pass, 1);
    });
  });

  test("returns upstream error statuses unchanged when passing", async () => {
    await withProxy(upstream, {}, async (proxy) => {
      const res = await fetch(`${proxy.url}/status/404`);
      assertEquals(res.status, 404);
      assertEquals((await res.json()).success, false);
    });
  });

  test("prefixes the upstream base path to forwarded requests", async () => {
    const proxy = await startFaultProxy({ upstream: `${upstream.url}/base/` });
    try {
      const res = await fetch(`${proxy.url}/v1/auth`, { method: "POST" });
      assertEquals((await res.json()).data.url, "/base/v1/auth");
    } finally {
      await proxy.close();
    }
  });

  test("answers 502, 503 and 504 from the schedule without contacting upstream", async () => {
    await withProxy(
      upstream,
      { schedule: ["status502", "status503", "status504"] },
      async (proxy) => {
        const seen = upstream.received.length;
        const statuses: number[] = [];
        const types: string[] = [];
        for (let i = 0; i < 4; i++) {
          const res = await fetch(`${proxy.url}/v1/models/abc`);
          statuses.push(res.status);
          types.push(res.headers.get("content-type") ?? "");
          await res.body?.cancel();
        }
        assertEquals(statuses, [502, 503, 504, 200]);
        assertEquals(types.slice(0, 3), [
          "text/html",
          "application/json",
          "text/html",
        ]);
        assertEquals(upstream.received.length, seen + 1);
        assertEquals(
          proxy.log.map((e) => e.fault),
          ["status502", "status503", "status504", "pass"],
        );
      },
    );
  });

  test("answers 503 with a JSON envelope the client can read", async () => {
    await withProxy(upstream, { schedule: ["status503"] }, async (proxy) => {
      const res = await fetch(`${proxy.url}/v1/models/abc`);
      const body = await res.json();
      assertEquals(body.success, false);
      assertMatch(body.message, /unavailable/i);
    });
  });

  test("answers a status fault only after reading a streamed upload, so the client sees the status", async () => {
    await withProxy(upstream, { schedule: ["status503"] }, async (proxy) => {
      const seen = upstream.received.length;
      const { stream } = byteStream(4 << 20);
      const res = await fetch(
        `${proxy.url}/v1/models/abc/upload`,
        streamInit(stream),
      );
      assertEquals(res.status, 503);
      await res.body?.cancel();
      assertEquals(upstream.received.length, seen);
    });
  });

  test("answers 429 with Retry-After and X-RateLimit-* headers for rateLimited", async () => {
    await withProxy(
      upstream,
      { schedule: ["rateLimited"], retryAfterSeconds: 7 },
      async (proxy) => {
        const before = Math.floor(Date.now() / 1000);
        const res = await fetch(`${proxy.url}/v1/models/abc/metrics`);
        await res.body?.cancel();
        assertEquals(res.status, 429);
        assertEquals(res.headers.get("retry-after"), "7");
        assertEquals(res.headers.get("x-ratelimit-limit"), "60");
        assertEquals(res.headers.get("x-ratelimit-remaining"), "0");
        const reset = Number(res.headers.get("x-ratelimit-reset"));
        assert(reset >= before + 7, `reset ${reset} is at least 7 s ahead`);
      },
    );
  });

  test("answers 429 without any rate-limit header for rateLimitedBare", async () => {
    await withProxy(
      upstream,
      { schedule: ["rateLimitedBare"] },
      async (proxy) => {
        const res = await fetch(`${proxy.url}/v1/models/abc/metrics`);
        await res.body?.cancel();
        assertEquals(res.status, 429);
        for (const name of res.headers.keys()) {
          assertNotMatch(name, /^(retry-after|x-ratelimit-)/i);
        }
      },
    );
  });

  test("resetBeforeResponse makes fetch reject with a TypeError after upstream got the request", async () => {
    await withProxy(
      upstream,
      { schedule: ["resetBeforeResponse"] },
      async (proxy) => {
        const seen = upstream.received.length;
        await assertRejects(
          () =>
            fetch(`${proxy.url}/v1/models/abc`, {
              method: "POST",
              body: JSON.stringify({ type: "metrics" }),
            }),
          TypeError,
        );
        const rec = upstream.received[seen];
        assert(rec, "upstream received the request");
        await rec.settled;
        assertEquals(rec.complete, true);
        assertEquals(proxy.log[0]?.fault, "resetBeforeResponse");
      },
    );
  });

  test("resetMidUpload cuts a streamed upload: fetch rejects and upstream never gets the whole body", async () => {
    await withProxy(
      upstream,
      { schedule: ["resetMidUpload"] },
      async (proxy) => {
        const seen = upstream.received.length;
        const size = 8 << 20;
        const { stream } = byteStream(size, 256 << 10);
        await assertRejects(
          () => fetch(`${proxy.url}/v1/models/abc/upload`, streamInit(stream)),
          TypeError,
        );
        const rec = await settledRequest(upstream, seen);
        assertEquals(rec.complete, false);
        assert(
          rec.bytes < size,
          `upstream got ${rec.bytes} of ${size} bytes`,
        );
      },
    );
  });

  test("resetMidUpload forwards at most half of a body with a Content-Length", async () => {
    await withProxy(
      upstream,
      { schedule: ["resetMidUpload"] },
      async (proxy) => {
        const seen = upstream.received.length;
        const size = 1 << 20;
        await assertRejects(
          () =>
            fetch(`${proxy.url}/v1/models/abc/upload`, {
              method: "POST",
              body: new Uint8Array(size),
            }),
          TypeError,
        );
        const rec = await settledRequest(upstream, seen);
        assertEquals(rec.complete, false);
        assert(rec.bytes <= size / 2, `upstream got ${rec.bytes} bytes`);
      },
    );
  });

  test("resetMidUpload resets a request without a body before it reaches upstream", async () => {
    await withProxy(
      upstream,
      { schedule: ["resetMidUpload"] },
      async (proxy) => {
        const seen = upstream.received.length;
        await assertRejects(
          () => fetch(`${proxy.url}/v1/models/abc`),
          TypeError,
        );
        assertEquals(upstream.received.length, seen);
      },
    );
  });

  test("stall never answers, so the client's AbortSignal.timeout fires", async () => {
    await withProxy(upstream, { schedule: ["stall"] }, async (proxy) => {
      const seen = upstream.received.length;
      const error = await assertRejects(() =>
        fetch(`${proxy.url}/v1/models/abc`, {
          signal: AbortSignal.timeout(100),
        })
      );
      assertEquals((error as Error).name, "TimeoutError");
      assertEquals(upstream.received.length, seen);
      assertEquals(proxy.stats.byFault.stall, 1);
    });
  });

  test("close() ends a stalled connection and resolves", async () => {
    const proxy = await startFaultProxy({
      upstream: upstream.url,
      schedule: ["stall"],
    });
    const pending = fetch(`${proxy.url}/v1/models/abc`);
    const outcome = pending.then(
      () => "answered",
      (error: unknown) => (error as Error).name,
    );
    while (proxy.stats.requests === 0) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await proxy.close();
    assertEquals(await outcome, "TypeError");
  });

  test("latency passes the request after the configured delay", async () => {
    await withProxy(
      upstream,
      { schedule: ["latency"], latencyMs: 50 },
      async (proxy) => {
        const start = performance.now();
        const res = await fetch(`${proxy.url}/v1/models/abc`);
        const elapsed = performance.now() - start;
        assertEquals(res.status, 200);
        assertEquals((await res.json()).data.url, "/v1/models/abc");
        assert(elapsed >= 45, `took ${elapsed} ms`);
        assertEquals(proxy.log[0]?.fault, "latency");
      },
    );
  });

  test("an outage window answers 503 or resets every request and keeps upstream untouched", async () => {
    await withProxy(
      upstream,
      { outages: [{ start: 0, end: 3_600_000 }] },
      async (proxy) => {
        const seen = upstream.received.length;
        const outcomes: Array<number | string> = [];
        for (let i = 0; i < 4; i++) {
          try {
            const res = await fetch(`${proxy.url}/v1/models/abc`);
            await res.body?.cancel();
            outcomes.push(res.status);
          } catch (error) {
            outcomes.push((error as Error).name);
          }
        }
        assertEquals(outcomes, ["TypeError", 503, "TypeError", 503]);
        assertEquals(
          proxy.log.map((e) => e.fault),
          [
            "resetBeforeResponse",
            "status503",
            "resetBeforeResponse",
            "status503",
          ],
        );
        assertEquals(upstream.received.length, seen);
      },
    );
  });

  test("an outage window in the future lets requests pass now", async () => {
    await withProxy(
      upstream,
      { outages: [{ start: 3_600_000, end: 3_700_000 }] },
      async (proxy) => {
        const res = await fetch(`${proxy.url}/v1/models/abc`);
        await res.body?.cancel();
        assertEquals(res.status, 200);
      },
    );
  });

  test("setOutage() starts and ends an outage by hand", async () => {
    await withProxy(upstream, {}, async (proxy) => {
      proxy.setOutage(true);
      await assertRejects(() => fetch(`${proxy.url}/a`), TypeError);
      const down = await fetch(`${proxy.url}/b`);
      await down.body?.cancel();
      assertEquals(down.status, 503);
      proxy.setOutage(false);
      const up = await fetch(`${proxy.url}/c`);
      await up.body?.cancel();
      assertEquals(up.status, 200);
    });
  });

  test("requests that do not match always pass and do not consume the schedule", async () => {
    await withProxy(
      upstream,
      {
        schedule: ["status503"],
        match: (method, path) => method === "POST" && path.endsWith("/upload"),
      },
      async (proxy) => {
        const other = await fetch(`${proxy.url}/v1/models/abc`);
        await other.body?.cancel();
        const upload = await fetch(`${proxy.url}/v1/models/abc/upload`, {
          method: "POST",
          body: "x",
        });
        await upload.body?.cancel();
        assertEquals(other.status, 200);
        assertEquals(upload.status, 503);
        assertEquals(proxy.log.map((e) => e.fault), ["pass", "status503"]);
      },
    );
  });

  test("the same seed gives the same fault sequence and another seed a different one", async () => {
    const faults: Partial<Record<Fault, number>> = {
      status502: 1,
      status503: 1,
      status504: 1,
      rateLimited: 1,
      rateLimitedBare: 1,
      resetBeforeResponse: 1,
      resetMidUpload: 1,
    };
    async function run(seed: number): Promise<Fault[]> {
      let sequence: Fault[] = [];
      await withProxy(
        upstream,
        { seed, faultRate: 0.5, faults },
        async (proxy) => {
          for (let i = 0; i < 40; i++) {
            try {
              const res = await fetch(`${proxy.url}/v1/models/abc`, {
                method: "POST",
                body: "{}",
              });
              await res.body?.cancel();
            } catch {
              // resets are expected
            }
          }
          sequence = proxy.log.map((e) => e.fault);
        },
      );
      return sequence;
    }
    const first = await run(42);
    const second = await run(42);
    const other = await run(43);
    assertEquals(first.length, 40);
    assertEquals(second, first);
    assertNotEquals(other, first);
    const passes = first.filter((f) => f === "pass").length;
    assert(passes > 0 && passes < 40, `${passes} of 40 passed`);
    assert(first.every((f) => f === "pass" || f in faults));
  });

  test("a streamed 32 MiB upload passes through intact", async () => {
    await withProxy(upstream, {}, async (proxy) => {
      const size = 32 << 20;
      const { stream, sha256 } = byteStream(size);
      const res = await fetch(
        `${proxy.url}/v1/models/abc/upload`,
        streamInit(stream, { headers: { "x-api-key": "k-upload" } }),
      );
      assertEquals(res.status, 200);
      const { data } = await res.json();
      assertEquals(data.bytes, size);
      assertEquals(data.sha256, sha256);
      assertEquals(upstream.received.at(-1)?.apiKey, "k-upload");
    });
  });

  test("answers 502 when the upstream cannot be reached", async () => {
    const gone = await startUpstream();
    const url = gone.url;
    await gone.close();
    const proxy = await startFaultProxy({ upstream: url });
    try {
      const res = await fetch(`${proxy.url}/v1/models/abc`);
      await res.body?.cancel();
      assertEquals(res.status, 502);
    } finally {
      await proxy.close();
    }
  });

  test("rejects bad options up front", async () => {
    const bad: Array<[FaultProxyOptions, ErrorConstructor]> = [
      [{ upstream: "not a url" }, TypeError],
      [{ upstream: "https://127.0.0.1:1" }, TypeError],
      [{ upstream: upstream.url, faultRate: 1.5 }, RangeError],
      [{ upstream: upstream.url, faultRate: Number.NaN }, RangeError],
      [{ upstream: upstream.url, latencyMs: -1 }, RangeError],
      [{ upstream: upstream.url, retryAfterSeconds: 0.5 }, RangeError],
      [
        { upstream: upstream.url, outages: [{ start: 10, end: 5 }] },
        RangeError,
      ],
      [{ upstream: upstream.url, schedule: ["nope" as Fault] }, TypeError],
      [{ upstream: upstream.url, faults: { pass: -1 } }, RangeError],
      [
        { upstream: upstream.url, faultRate: 0.5, faults: { stall: 0 } },
        RangeError,
      ],
    ];
    for (const [options, type] of bad) {
      await assertRejects(
        () => startFaultProxy(options),
        type,
        undefined,
        JSON.stringify(options),
      );
    }
  });

  test("FAULTS lists every fault once", () => {
    assertEquals(new Set(FAULTS).size, FAULTS.length);
    assertEquals(FAULTS.length, 10);
  });
});
