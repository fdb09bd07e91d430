/**
 * Attacks on the local HUB that must fail: deeply nested JSON, bodies over
 * Bun's own limit, DNS rebinding of an open server, cross-origin simple
 * requests from a web page, and clients that trickle their headers. Each test
 * reproduces the attack against a real server on loopback.
 *
 * @module
 */

import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertFalse,
  assertMatch,
  assertStringIncludes,
} from "@std/assert";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { type HubServer, serveHub } from "../src/server/mod.ts";
import { MAX_JSON_DEPTH } from "../src/server/limits.ts";
import {
  CREATE_PAYLOAD as PAYLOAD,
  type Envelope,
  withServer,
} from "./support/server.ts";

const JSON_TYPE = { "content-type": "application/json" };
const KEY = "k".repeat(42);

async function createModel(
  server: HubServer,
  headers: Record<string, string> = {},
): Promise<string> {
  const reply = await fetch(`${server.url}/v1/models`, {
    method: "POST",
    headers: { ...JSON_TYPE, ...headers },
    body: JSON.stringify(PAYLOAD),
  });
  const body = await reply.json() as Envelope;
  assertEquals(reply.status, 200, body.message);
  return (body.data as { id: string }).id;
}

interface RawReply {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/**
 * Sends one HTTP/1.1 request as written (any Host, Origin or body) and reads
 * the reply to the end of the connection.
 */
function raw(
  server: HubServer,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | Uint8Array = "",
): Promise<RawReply> {
  const bytes = typeof body === "string"
    ? new TextEncoder().encode(body)
    : body;
  const head = [
    `${method} ${path} HTTP/1.1`,
    ...Object.entries({
      connection: "close",
      ...(bytes.length > 0 || method !== "GET"
        ? { "content-length": String(bytes.length) }
        : {}),
      ...headers,
    }).map(([k, v]) => `${k}: ${v}`),
    "",
    "",
  ].join("\r\n");
  return new Promise((resolve, reject) => {
    let received = new Uint8Array();
    let settled = false;
    const socket = connect(server.port, "127.0.0.1", () => {
      socket.write(head);
      if (bytes.length > 0) socket.write(bytes);
    });
    const settle = (final: boolean): void => {
      if (settled) return;
      const reply = parseReply(new TextDecoder().decode(received), final);
      if (reply === undefined) return;
      settled = true;
      socket.destroy();
      resolve(reply);
    };
    socket.on("data", (chunk: Uint8Array) => {
      const out = new Uint8Array(received.length + chunk.length);
      out.set(received);
      out.set(chunk, received.length);
      received = out;
      settle(false);
    });
    socket.on("error", (error) => {
      if (!settled) reject(error);
    });
    socket.on("close", () => {
      settle(true);
      if (!settled) reject(new Error("The connection closed without a reply"));
    });
  });
}

/** Parses a reply; `undefined` while it is incomplete (unless `final`). */
function parseReply(text: string, final: boolean): RawReply | undefined {
  const split = text.indexOf("\r\n\r\n");
  if (split === -1) return undefined;
  const lines = text.slice(0, split).split("\r\n");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? "")?.[1]);
  const map = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    map.set(
      line.slice(0, colon).trim().toLowerCase(),
      line.slice(colon + 1).trim(),
    );
  }
  let rest = text.slice(split + 4);
  if (map.get("transfer-encoding") === "chunked") {
    let out = "";
    for (;;) {
      const eol = rest.indexOf("\r\n");
      if (eol === -1) {
        return final ? { status, headers: map, body: out } : undefined;
      }
      const size = parseInt(rest.slice(0, eol), 16);
      if (size === 0) break;
      if (!(size > 0) || rest.length < eol + 2 + size + 2) {
        return final ? { status, headers: map, body: out } : undefined;
      }
      out += rest.slice(eol + 2, eol + 2 + size);
      rest = rest.slice(eol + 2 + size + 2);
    }
    return { status, headers: map, body: out };
  }
  const length = map.get("content-length");
  if (length !== undefined && rest.length < Number(length) && !final) {
    return undefined;
  }
  if (length === undefined && !final) return undefined;
  return { status, headers: map, body: rest };
}

function envelope(reply: RawReply): Envelope {
  assertMatch(reply.headers.get("content-type") ?? "", /^application\/json/);
  return JSON.parse(reply.body) as Envelope;
}

function nested(depth: number): string {
  return "[".repeat(depth) + "]".repeat(depth);
}

function multipart(
  boundary: string,
  epoch: number,
  data: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const field = (name: string, value: string): string =>
    `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  const head = enc.encode(
    field("epoch", String(epoch)) + field("type", "epoch") +
      field("isBest", "False") +
      `--${boundary}\r\nContent-Disposition: form-data; name="last.pt"; filename="last.pt"\r\n\r\n`,
  );
  const tail = enc.encode(`\r\n--${boundary}--\r\n`);
  const out = new Uint8Array(head.length + data.length + tail.length);
  out.set(head);
  out.set(data, head.length);
  out.set(tail, head.length + data.length);
  return out;
}

describe("deeply nested JSON", () => {
  test("a PATCH nested 100,000 deep is refused with 400 and stores nothing", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const reply = await fetch(`${server.url}/v1/models/${id}`, {
        method: "PATCH",
        headers: JSON_TYPE,
        body: `{"deep": ${nested(100_000)}}`,
      });
      const body = await reply.json() as Envelope;
      assertEquals(reply.status, 400);
      assertFalse(body.success);
      assertStringIncludes(body.message ?? "", `${MAX_JSON_DEPTH} levels`);
      const doc = await fetch(`${server.url}/v1/models/${id}`);
      assertEquals(doc.status, 200);
      assertFalse("deep" in ((await doc.json()) as { data: object }).data);
    });
  });

  test("nesting up to the limit is stored, one level more is refused", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const patch = (depth: number): Promise<Response> =>
        fetch(`${server.url}/v1/models/${id}`, {
          method: "PATCH",
          headers: JSON_TYPE,
          // The body object itself is the first level.
          body: `{"deep": ${nested(depth - 1)}}`,
        });
      const fits = await patch(MAX_JSON_DEPTH);
      assertEquals(fits.status, 200, (await fits.json()).message);
      const over = await patch(MAX_JSON_DEPTH + 1);
      assertEquals(over.status, 400);
      await over.body?.cancel();
      // Brackets inside strings are not nesting.
      const text = await fetch(`${server.url}/v1/models/${id}`, {
        method: "PATCH",
        headers: JSON_TYPE,
        body: JSON.stringify({ note: "[".repeat(1000) + '\\"{' }),
      });
      assertEquals(text.status, 200);
      await text.body?.cancel();
    });
  });

  test("metrics sent as a deeply nested JSON string are refused with 400", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const reply = await fetch(`${server.url}/v1/models/${id}`, {
        method: "POST",
        headers: JSON_TYPE,
        body: JSON.stringify({
          type: "metrics",
          metrics: { "0": `{"a": ${nested(100_000)}}` },
        }),
      });
      assertEquals(reply.status, 400);
      assertStringIncludes((await reply.json()).message, "levels");
    });
  });
});

describe("bodies over the limit", () => {
  test("an upload far over the limit is answered 413 with the JSON envelope", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const boundary = randomBytes(8).toString("hex");
      // Declared well above the limit plus any margin a runtime adds of its
      // own; the reply comes before the body is sent.
      const reply = await raw(
        server,
        "POST",
        `/v1/models/${id}/upload`,
        {
          host: `127.0.0.1:${server.port}`,
          "content-type": `multipart/form-data; boundary=${boundary}`,
          "content-length": String(3 * 1024 * 1024),
        },
        `--${boundary}\r\n`,
      );
      assertEquals(reply.status, 413);
      const json = envelope(reply);
      assertFalse(json.success);
      assertStringIncludes(json.message ?? "", "exceed");
    }, { maxUploadBytes: 1000 });
  });
});

describe("an open server and DNS rebinding", () => {
  test("a foreign Host is answered 421 for reads and deletes alike", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const evil = { host: `rebind.evil.example:${server.port}` };
      for (
        const [method, path] of [
          ["GET", "/"],
          ["GET", "/v1/models/" + id],
          ["GET", `/v1/models/${id}/files/last.pt`],
          ["DELETE", `/v1/models/${id}?hard=true`],
        ]
      ) {
        const reply = await raw(server, method!, path!, evil);
        assertEquals(reply.status, 421, `${method} ${path}`);
        const body = envelope(reply);
        assertFalse(body.success);
        assertStringIncludes(body.message ?? "", "rebind.evil.example");
      }
      const still = await fetch(`${server.url}/v1/models/${id}`);
      assertEquals(still.status, 200);
      await still.body?.cancel();
    });
  });

  test("loopback names, IP addresses and configured names are served", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      for (
        const host of [
          `localhost:${server.port}`,
          `127.0.0.1:${server.port}`,
          `[::1]:${server.port}`,
          `trainer.localhost:${server.port}`,
          "192.0.2.7",
          "hub.example.test",
          "HUB.Example.Test:443",
          "lab-box",
        ]
      ) {
        const reply = await raw(server, "GET", `/v1/models/${id}`, { host });
        assertEquals(reply.status, 200, host);
        assert(envelope(reply).success);
      }
    }, { publicUrl: "https://hub.example.test", allowedHosts: ["lab-box"] });
  });

  test("a server with keys answers any Host with the key", async () => {
    await withServer(async (server) => {
      const id = await createModel(server, { "x-api-key": KEY });
      const reply = await raw(server, "GET", `/v1/models/${id}`, {
        host: "hub.behind-a-proxy.example",
        "x-api-key": KEY,
      });
      assertEquals(reply.status, 200);
    }, { apiKeys: [KEY] });
  });
});

describe("an open server and cross-origin requests", () => {
  test("a form upload from another site is refused and the weights stay", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const boundary = randomBytes(8).toString("hex");
      const upload = (headers: Record<string, string>, data: Uint8Array) =>
        raw(server, "POST", `/v1/models/${id}/upload`, {
          host: `127.0.0.1:${server.port}`,
          "content-type": `multipart/form-data; boundary=${boundary}`,
          ...headers,
        }, multipart(boundary, 1, data));
      const mine = await upload({}, new Uint8Array([1, 2, 3]));
      assertEquals(mine.status, 200, mine.body);
      for (
        const headers of [
          { origin: "https://evil.example" },
          { origin: "null" },
          { "sec-fetch-site": "cross-site" },
          { "sec-fetch-site": "same-site" },
          { origin: `http://localhost:${server.port + 1}` },
        ]
      ) {
        const reply = await upload(headers, new Uint8Array([6, 6, 6]));
        assertEquals(reply.status, 403, JSON.stringify(headers));
        assertFalse(envelope(reply).success);
      }
      const file = await fetch(`${server.url}/v1/models/${id}/files/last.pt`);
      assertEquals(
        new Uint8Array(await file.arrayBuffer()),
        new Uint8Array([1, 2, 3]),
      );
    });
  });

  test("a text/plain POST creates no model and sends no metrics", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const before = await readdir(join(dataDir, "models"));
      for (
        const [path, body] of [
          ["/v1/models", JSON.stringify(PAYLOAD)],
          [
            `/v1/models/${id}`,
            JSON.stringify({ type: "metrics", metrics: { "0": { a: 1 } } }),
          ],
        ] as const
      ) {
        for (
          const type of ["text/plain", "application/x-www-form-urlencoded"]
        ) {
          const reply = await fetch(`${server.url}${path}`, {
            method: "POST",
            headers: { "content-type": type },
            body,
          });
          assertEquals(reply.status, 415, `${type} ${path}`);
          assertStringIncludes(
            (await reply.json()).message,
            "application/json",
          );
        }
      }
      assertEquals(await readdir(join(dataDir, "models")), before);
      const metrics = await fetch(`${server.url}/v1/models/${id}/metrics`);
      assertEquals((await metrics.json()).data, []);
    });
  });

  test("the server's own pages and clients without Origin still change it", async () => {
    await withServer(async (server) => {
      const own = await fetch(`${server.url}/v1/models`, {
        method: "POST",
        headers: {
          ...JSON_TYPE,
          origin: server.url,
          "sec-fetch-site": "same-origin",
        },
        body: JSON.stringify(PAYLOAD),
      });
      assertEquals(own.status, 200, (await own.json()).message);
      const proxied = await fetch(`${server.url}/v1/models`, {
        method: "POST",
        headers: { ...JSON_TYPE, origin: "https://hub.example.test" },
        body: JSON.stringify(PAYLOAD),
      });
      assertEquals(proxied.status, 200, (await proxied.json()).message);
    }, { publicUrl: "https://hub.example.test" });
  });

  test("curl --json and curl -F work as documented", async (t) => {
    const curl = (args: string[]): Promise<string> =>
      new Promise((resolve, reject) =>
        execFile(
          "curl",
          ["-sS", ...args],
          (error, stdout, stderr) =>
            error
              ? reject(new Error(`${error.message}: ${stderr}`))
              : resolve(stdout),
        )
      );
    try {
      await curl(["--version"]);
    } catch (error) {
      t.skip(`curl is not installed: ${(error as Error).message}`);
      console.warn("SKIPPED: curl --json / -F test, curl is not installed");
      return;
    }
    await withServer(async (server, dataDir) => {
      const created = JSON.parse(
        await curl([
          "--json",
          JSON.stringify(PAYLOAD),
          `${server.url}/v1/models`,
        ]),
      ) as Envelope;
      assert(created.success, created.message);
      const id = (created.data as { id: string }).id;
      const metrics = JSON.parse(
        await curl([
          "--json",
          JSON.stringify({ type: "metrics", metrics: { "0": { loss: 1 } } }),
          `${server.url}/v1/models/${id}`,
        ]),
      ) as Envelope;
      assert(metrics.success, metrics.message);
      const file = join(dataDir, "weights.pt");
      await writeFile(file, "weights");
      const uploaded = JSON.parse(
        await curl([
          "-F",
          "epoch=0",
          "-F",
          "type=epoch",
          "-F",
          `last.pt=@${file}`,
          `${server.url}/v1/models/${id}/upload`,
        ]),
      ) as Envelope;
      assert(uploaded.success, uploaded.message);
    });
  });
});

/** Opens a connection and reports when the server closes it. */
function openConnection(
  server: HubServer,
  onOpen: (write: (text: string) => boolean) => void,
  onData?: (data: Uint8Array) => void,
): { closed: Promise<void>; isClosed(): boolean; destroy(): void } {
  let done = false;
  let destroy = (): void => {};
  const closed = new Promise<void>((resolve) => {
    const socket = connect(server.port, "127.0.0.1", () => {
      onOpen((text) => !done && socket.write(text));
    });
    if (onData !== undefined) socket.on("data", onData);
    destroy = () => socket.destroy();
    socket.on("error", () => {});
    socket.on("close", () => {
      done = true;
      resolve();
    });
  });
  return { closed, isClosed: () => done, destroy };
}

async function waitUntil(
  condition: () => boolean,
  what: string,
  bound = 60_000,
): Promise<void> {
  const until = Date.now() + bound;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("slow clients", () => {
  test("connections that trickle headers or send nothing are closed", async () => {
    await withServer(async (server) => {
      const timers: ReturnType<typeof setInterval>[] = [];
      const trickling = Array.from(
        { length: 5 },
        () =>
          openConnection(server, (write) => {
            write("GET /v1 HTTP/1.1\r\n");
            let i = 0;
            timers.push(setInterval(() => write(`x-slow-${i++}: 1\r\n`), 200));
          }),
      );
      const silent = openConnection(server, () => {});
      try {
        await waitUntil(
          () => trickling.every((c) => c.isClosed()) && silent.isClosed(),
          "the server closes the slow connections",
        );
        // The server still serves everyone else.
        const reply = await fetch(`${server.url}/v1`);
        assertEquals(reply.status, 200);
        await reply.body?.cancel();
      } finally {
        for (const timer of timers) clearInterval(timer);
        for (const c of [...trickling, silent]) c.destroy();
      }
    }, { headerTimeout: 1000 });
  });

  test("a connection whose request body stops, or that idles after a reply, is closed", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      // Headers complete, then the body stops half-way.
      const stalled = openConnection(server, (write) => {
        write(
          `POST /v1/models/${id}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
            "Content-Type: multipart/form-data; boundary=x\r\n" +
            "Content-Length: 100000\r\n\r\n--x\r\n",
        );
      });
      // One request answered, then nothing on the kept-alive connection.
      let replied = false;
      const idle = openConnection(server, (write) => {
        write("GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      }, () => {
        replied = true;
      });
      try {
        await waitUntil(
          () => stalled.isClosed() && idle.isClosed(),
          "the server closes the stalled and the idle connection",
        );
        assert(replied, "the kept-alive connection was answered first");
        // The server still serves everyone else.
        const reply = await fetch(`${server.url}/v1`);
        assertEquals(reply.status, 200);
        await reply.body?.cancel();
      } finally {
        stalled.destroy();
        idle.destroy();
      }
    }, { headerTimeout: 1000, idleTimeout: 1500 });
  });

  // Deno only (not registered on Bun): the HUB keeps this timeout itself on
  // Deno; Bun.serve applies its own limit (measured: such a connection
  // closed after ~40 s), which the README states.
  const onDeno = "Bun" in globalThis ? (() => {}) as typeof test : test;
  onDeno(
    "the next request on a kept-alive connection must bring its headers in time",
    async () => {
      await withServer(async (server) => {
        let replied = false;
        const timers: ReturnType<typeof setInterval>[] = [];
        const connection = openConnection(server, (write) => {
          write("GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
          // After the reply, the next request's headers trickle in: each
          // byte moves the connection, so only the header timeout ends it.
          let i = 0;
          timers.push(setInterval(() => {
            if (!replied) return;
            write(i === 0 ? "GET /v1 HTTP/1.1\r\n" : `x-slow-${i}: 1\r\n`);
            i++;
          }, 200));
        }, () => {
          replied = true;
        });
        try {
          await waitUntil(
            () => connection.isClosed(),
            "the server closes the kept-alive connection",
          );
          assert(replied, "the first request was answered");
        } finally {
          for (const timer of timers) clearInterval(timer);
          connection.destroy();
        }
      }, { headerTimeout: 1000, idleTimeout: 60_000 });
    },
  );

  test("an upload that takes longer than the header timeout is not cut", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const boundary = randomBytes(8).toString("hex");
      const body = multipart(boundary, 2, randomBytes(64 * 1024));
      let offset = 0;
      const slices = 12;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (offset >= body.length) {
            controller.close();
            return;
          }
          // Steady but slow: the whole body takes ~2.4 s.
          await new Promise((resolve) => setTimeout(resolve, 200));
          const size = Math.ceil(body.length / slices);
          controller.enqueue(body.slice(offset, offset + size));
          offset += size;
        },
      });
      const init: RequestInit & { duplex: "half" } = {
        method: "POST",
        headers: {
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body: stream,
        duplex: "half",
      };
      const reply = await fetch(`${server.url}/v1/models/${id}/upload`, init);
      assertEquals(reply.status, 200, (await reply.json()).message);
      // And a kept-alive connection serves the next request.
      const again = await fetch(`${server.url}/v1/models/${id}`);
      assertEquals(again.status, 200);
      await again.body?.cancel();
    }, { headerTimeout: 1000 });
  });

  test("serveHub() refuses timeouts that are not positive", async () => {
    for (const bad of [0, -1, Number.NaN]) {
      let error: unknown;
      try {
        await serveHub({ dataDir: "unused", headerTimeout: bad });
      } catch (caught) {
        error = caught;
      }
      assert(error instanceof RangeError, String(bad));
    }
  });
});
