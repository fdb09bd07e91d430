import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
  fail,
} from "@std/assert";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { createHash, randomBytes } from "node:crypto";
import {
  appendFile,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  createHubHandler,
  type HubServer,
  serveHub,
} from "../src/server/mod.ts";
import {
  FileModelStore,
  MAX_CACHED_MODELS,
} from "../src/server/storage/files/models.ts";
import { type Envelope, STORED_CONFIG, withServer } from "./support/server.ts";

const KEY = "a".repeat(42);
const PAYLOAD = {
  config: {
    batchSize: 16,
    epochs: 3,
    imageSize: 320,
    patience: 10,
    device: "cpu",
    cache: "ram",
  },
  dataset: { name: "coco8.yaml" },
  lineage: {
    architecture: { name: "yolov8n" },
    parent: { name: "yolov8n.pt" },
  },
  meta: { name: "yolov8n.pt" },
};
const encoder = new TextEncoder();

type StreamInit = RequestInit & { duplex: "half" };

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function call(
  server: HubServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Envelope; headers: Headers }> {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    ...(body === undefined
      ? {}
      : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: JSON.parse(text) as Envelope,
    headers: response.headers,
  };
}

async function createModel(
  server: HubServer,
  headers: Record<string, string> = {},
): Promise<string> {
  const { status, body } = await call(
    server,
    "POST",
    "/v1/models",
    PAYLOAD,
    headers,
  );
  assertEquals(status, 200, body.message);
  const id = (body.data as { id: string }).id;
  assertMatch(id, /^[A-Za-z0-9]{20}$/);
  return id;
}

async function getDoc(
  server: HubServer,
  id: string,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const { status, body } = await call(
    server,
    "GET",
    `/v1/models/${id}`,
    undefined,
    headers,
  );
  assertEquals(status, 200, body.message);
  return body.data as Record<string, unknown>;
}

interface Part {
  name: string;
  value: string | Uint8Array;
  filename?: string;
}

/** A multipart body as python-requests/urllib3 encodes it. */
function multipart(
  boundary: string,
  parts: Part[],
): Uint8Array<ArrayBuffer> {
  const chunks: Uint8Array[] = [];
  for (const part of parts) {
    const filename = part.filename === undefined
      ? ""
      : `; filename="${part.filename}"`;
    chunks.push(
      encoder.encode(
        `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"${filename}\r\n\r\n`,
      ),
    );
    chunks.push(
      typeof part.value === "string" ? encoder.encode(part.value) : part.value,
    );
    chunks.push(encoder.encode("\r\n"));
  }
  chunks.push(encoder.encode(`--${boundary}--\r\n`));
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

function epochParts(
  epoch: number,
  data: Uint8Array,
  extra: Part[] = [],
): Part[] {
  return [
    { name: "epoch", value: String(epoch) },
    { name: "type", value: "epoch" },
    { name: "isBest", value: "False" },
    { name: "last.pt", filename: "last.pt", value: data },
    ...extra,
  ];
}

async function upload(
  server: HubServer,
  id: string,
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>,
  boundary: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Envelope }> {
  const init: StreamInit = {
    method: "POST",
    headers: {
      "content-type": `multipart/form-data; boundary=${boundary}`,
      ...headers,
    },
    body,
    duplex: "half",
  };
  const response = await fetch(`${server.url}/v1/models/${id}/upload`, init);
  return { status: response.status, body: await response.json() as Envelope };
}

/** A stream of `data` cut into the given chunk sizes (cycled). */
function chunked(
  data: Uint8Array,
  sizes: number[],
): ReadableStream<Uint8Array> {
  let offset = 0;
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= data.length) {
        controller.close();
        return;
      }
      const size = sizes[i++ % sizes.length]!;
      controller.enqueue(data.slice(offset, offset + size));
      offset += size;
    },
  });
}

async function listTemp(dataDir: string): Promise<string[]> {
  return await readdir(join(dataDir, "weights", ".partial"));
}

/** The weights files stored for a model, referenced or not. */
async function blobsOf(dataDir: string, id: string): Promise<string[]> {
  try {
    return await readdir(join(dataDir, "weights", id));
  } catch {
    return [];
  }
}

/**
 * Path of the weights file a model's document names (content-addressed
 * under `weights/`), or of a file that does not exist when it names none.
 */
async function weightsFile(
  dataDir: string,
  id: string,
  kind: "last" | "best",
): Promise<string> {
  const doc = JSON.parse(
    await readFile(join(dataDir, "models", id, "model.json"), "utf8"),
  ) as { weights: Record<string, { blob?: string } | undefined> };
  const key = doc.weights[kind]?.blob ?? "missing/missing";
  return join(dataDir, "weights", ...key.split("/"));
}

async function waitFor(
  condition: () => Promise<boolean>,
  what: string,
): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  fail(`Timed out waiting until ${what}`);
}

describe("serveHub()", () => {
  test("serveHub() answers on a free loopback port with a URL without trailing slash", async () => {
    await withServer(async (server) => {
      assertMatch(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assertEquals(server.url, `http://127.0.0.1:${server.port}`);
      assert(server.port > 0);
      const { status, body } = await call(server, "GET", "/");
      assertEquals(status, 200);
      assertEquals(body.success, true);
    });
  });

  test("close() frees the port and can be called twice", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      const server = await serveHub({ dataDir });
      await server.close();
      await server.close();
      await assertRejects(() => fetch(`${server.url}/`));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("an aborted signal closes the server", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      const controller = new AbortController();
      const server = await serveHub({ dataDir, signal: controller.signal });
      assertEquals(
        (await fetch(`${server.url}/`).then((r) => r.json())).success,
        true,
      );
      controller.abort();
      await server.close();
      await assertRejects(() => fetch(`${server.url}/`));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("serveHub() and createHubHandler() reject bad options before starting", async () => {
    await assertRejects(() => serveHub({ dataDir: "" }), TypeError);
    await assertRejects(
      () => serveHub({ dataDir: "x", port: 70_000 }),
      RangeError,
    );
    assertThrows(
      () => createHubHandler({ dataDir: "x", maxUploadBytes: -1 }),
      RangeError,
    );
    assertThrows(
      () => createHubHandler({ dataDir: "x", apiKeys: [""] }),
      TypeError,
    );
    assertThrows(
      () => createHubHandler({ dataDir: "x", publicUrl: "ftp://host" }),
      TypeError,
    );
  });
});

describe("authentication", () => {
  test("a server without keys accepts /v1/auth with or without a key", async () => {
    await withServer(async (server) => {
      assertEquals((await call(server, "POST", "/v1/auth")).body.success, true);
      const withKey = await call(server, "POST", "/v1/auth", undefined, {
        "x-api-key": KEY,
      });
      assertEquals(withKey.status, 200);
      assertEquals(withKey.body.success, true);
    });
  });

  test("a server with keys answers 401 to a missing or wrong key and never echoes it", async () => {
    await withServer(async (server) => {
      const missing = await call(server, "POST", "/v1/auth");
      assertEquals(missing.status, 401);
      assertEquals(missing.body.success, false);
      const wrongKey = "b".repeat(42);
      const wrong = await call(server, "POST", "/v1/auth", undefined, {
        "x-api-key": wrongKey,
      });
      assertEquals(wrong.status, 401);
      assert(!JSON.stringify(wrong.body).includes(wrongKey));
      const other = await call(
        server,
        "GET",
        "/v1/models/abcdefghij0123456789",
        undefined,
        {
          "x-api-key": wrongKey,
        },
      );
      assertEquals(other.status, 401);
    }, { apiKeys: [KEY, "c".repeat(42)] });
  });

  test("a server with keys accepts x-api-key and authorization: Bearer", async () => {
    await withServer(async (server) => {
      const header = await call(server, "POST", "/v1/auth", undefined, {
        "x-api-key": KEY,
      });
      assertEquals(header.status, 200);
      assertEquals(header.body.success, true);
      const bearer = await call(server, "POST", "/v1/auth", undefined, {
        authorization: `Bearer ${KEY}`,
      });
      assertEquals(bearer.status, 200);
      const id = await createModel(server, { "x-api-key": KEY });
      assertEquals(
        (await getDoc(server, id, { authorization: `Bearer ${KEY}` })).id,
        id,
      );
    }, { apiKeys: [KEY] });
  });
});

describe("routes and errors", () => {
  test("unknown routes and models answer 404 and wrong methods 405 with Allow", async () => {
    await withServer(async (server) => {
      const route = await call(server, "GET", "/v2/nothing");
      assertEquals(route.status, 404);
      assertEquals(route.body.success, false);
      assert(route.body.message);
      const unknown = "Z".repeat(20);
      for (
        const [method, path, body] of [
          ["GET", `/v1/models/${unknown}`, undefined],
          ["GET", `/v1/models/${unknown}/metrics`, undefined],
          ["POST", `/v1/models/${unknown}`, { type: "metrics", metrics: {} }],
          ["PATCH", `/v1/models/${unknown}`, {}],
          ["DELETE", `/v1/models/${unknown}`, undefined],
          ["POST", `/v1/models/${unknown}/export`, { format: "onnx" }],
          ["POST", `/v1/agent/heartbeat/models/${unknown}`, {
            agent: "x",
            agentId: null,
          }],
          ["GET", `/v1/models/${unknown}/files/last.pt`, undefined],
          ["GET", `/v1/models/../../etc/files/last.pt`, undefined],
        ] as const
      ) {
        const reply = await call(server, method, path, body);
        assertEquals(reply.status, 404, `${method} ${path}`);
        assertEquals(reply.body.success, false);
      }
      const wrong = await call(server, "PUT", "/v1/models");
      assertEquals(wrong.status, 405);
      assertEquals(wrong.headers.get("allow"), "POST");
      const get = await call(server, "GET", "/v1/auth");
      assertEquals(get.status, 405);
    });
  });

  test("bad create payloads answer 400 with a message", async () => {
    await withServer(async (server) => {
      for (
        const body of [
          "{not json",
          "",
          "[1, 2]",
          JSON.stringify({ ...PAYLOAD, lineage: undefined }),
          JSON.stringify({
            ...PAYLOAD,
            lineage: { architecture: { name: 3 } },
          }),
          JSON.stringify({ ...PAYLOAD, config: { epochs: "ten" } }),
          JSON.stringify({ ...PAYLOAD, config: [] }),
          JSON.stringify({ ...PAYLOAD, dataset: { name: 5 } }),
        ]
      ) {
        const reply = await call(server, "POST", "/v1/models", body);
        assertEquals(reply.status, 400, body);
        assertEquals(reply.body.success, false);
        assertMatch(reply.body.message ?? "", /^Cannot /);
      }
    });
  });
});

describe("models", () => {
  test("a created model's document carries every protocol field", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const doc = await getDoc(server, id);
      assertEquals(doc.id, id);
      assertEquals(doc.status, "new");
      assertEquals(doc.data, "coco8.yaml");
      assertEquals(doc.cfg, "yolov8n.yaml");
      assertEquals(doc.weights, "yolov8n.pt");
      assertEquals(doc.resume, undefined);
      assertEquals(doc.has_last_weights, false);
      assertEquals(doc.has_best_weights, false);
      assertEquals(doc.is_pretrained, true);
      assertEquals(doc.is_custom, false);
      assertEquals(doc.train_args, {
        batch: 16,
        epochs: 3,
        imgsz: 320,
        patience: 10,
        device: "cpu",
        cache: "ram",
        data: "coco8.yaml",
      });
      assertEquals(doc.batch_size, 16);
      assertEquals(doc.epochs, 3);
      assertEquals(doc.imgsz, 320);
      assertEquals(doc.patience, 10);
      assertEquals(doc.device, "cpu");
      assertEquals(doc.cache, "ram");
      assertEquals(doc.config, PAYLOAD.config);
    });
  });

  test("a model built from a .yaml is custom and not pretrained, with default config", async () => {
    await withServer(async (server) => {
      const { body } = await call(server, "POST", "/v1/models", {
        config: {},
        dataset: { name: "coco8.yaml" },
        lineage: { architecture: { name: "yolov8s" }, parent: {} },
        meta: { name: "yolov8s.yaml" },
      });
      const doc = await getDoc(server, (body.data as { id: string }).id);
      assertEquals(doc.is_pretrained, false);
      assertEquals(doc.is_custom, true);
      assertEquals(doc.weights, undefined);
      assertEquals(doc.cfg, "yolov8s.yaml");
      assertEquals(doc.config, {
        batchSize: -1,
        epochs: 300,
        imageSize: 640,
        patience: 100,
        device: "",
        cache: "ram",
      });
    });
  });

  test("PATCH updates the config and refuses computed fields", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const patched = await call(server, "PATCH", `/v1/models/${id}`, {
        config: { epochs: 50 },
        meta: { name: "renamed" },
        notes: "hello",
      });
      assertEquals(patched.status, 200, patched.body.message);
      const doc = await getDoc(server, id);
      assertEquals(doc.epochs, 50);
      assertEquals((doc.train_args as { epochs: number }).epochs, 50);
      assertEquals(doc.name, "renamed");
      assertEquals(doc.notes, "hello");
      const bad = await call(server, "PATCH", `/v1/models/${id}`, {
        has_best_weights: true,
      });
      assertEquals(bad.status, 400);
      const notObject = await call(server, "PATCH", `/v1/models/${id}`, "42");
      assertEquals(notObject.status, 400);
    });
  });

  test("DELETE soft-deletes by default and removes the files with hard=true", async () => {
    await withServer(async (server, dataDir) => {
      const weights = async (id: string): Promise<void> => {
        const boundary = randomBytes(16).toString("hex");
        const reply = await upload(
          server,
          id,
          multipart(boundary, epochParts(1, randomBytes(5_000))),
          boundary,
        );
        assertEquals(reply.status, 200);
      };
      const soft = await createModel(server);
      await weights(soft);
      assertEquals(
        (await call(server, "DELETE", `/v1/models/${soft}?hard=false`)).status,
        200,
      );
      assertEquals(
        (await call(server, "GET", `/v1/models/${soft}`)).status,
        404,
      );
      assert((await stat(join(dataDir, "models", soft))).isDirectory());
      // A soft-deleted model keeps its weights.
      assertEquals((await blobsOf(dataDir, soft)).length, 1);
      const hard = await createModel(server);
      await weights(hard);
      assertEquals(
        (await call(server, "DELETE", `/v1/models/${hard}?hard=true`)).status,
        200,
      );
      assertEquals(
        (await call(server, "GET", `/v1/models/${hard}`)).status,
        404,
      );
      await assertRejects(() => stat(join(dataDir, "models", hard)));
      assertEquals(await blobsOf(dataDir, hard), []);
      const other = await createModel(server);
      assertEquals(
        (await call(server, "DELETE", `/v1/models/${other}?hard=maybe`)).status,
        400,
      );
    });
  });

  test("export is recorded and needs a format", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const reply = await call(server, "POST", `/v1/models/${id}/export`, {
        format: "onnx",
      });
      assertEquals(reply.status, 200);
      assertEquals((reply.body.data as { format: string }).format, "onnx");
      const doc = await getDoc(server, id);
      assertEquals((doc.exports as { format: string }[])[0]?.format, "onnx");
      assertEquals(
        (await call(server, "POST", `/v1/models/${id}/export`, {})).status,
        400,
      );
    });
  });
});

describe("metrics", () => {
  test("re-sending an epoch replaces it and the list is sorted by epoch", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const send = (metrics: Record<string, unknown>) =>
        call(server, "POST", `/v1/models/${id}`, { type: "metrics", metrics });
      assertEquals(
        (await send({ "10": JSON.stringify({ loss: 1 }) })).status,
        200,
      );
      assertEquals(
        (await send({
          "2": JSON.stringify({ loss: 3 }),
          "1": JSON.stringify({ loss: 4 }),
        })).status,
        200,
      );
      assertEquals(
        (await send({ "2": JSON.stringify({ loss: 2.5, map: 0.1 }) })).status,
        200,
      );
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(body.data, [
        { epoch: 1, metrics: { loss: 4 } },
        { epoch: 2, metrics: { loss: 2.5, map: 0.1 } },
        { epoch: 10, metrics: { loss: 1 } },
      ]);
      assertEquals((await getDoc(server, id)).status, "training");
    });
  });

  test("malformed metrics answer 400 and change nothing", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      for (
        const body of [
          { type: "other", metrics: {} },
          { type: "metrics", metrics: [] },
          { type: "metrics", metrics: { "x": "{}" } },
          { type: "metrics", metrics: { "1": "{not json" } },
          { type: "metrics", metrics: { "1": "[1]" } },
          {
            type: "metrics",
            metrics: { "1": JSON.stringify({ loss: "high" }) },
          },
        ]
      ) {
        const reply = await call(server, "POST", `/v1/models/${id}`, body);
        assertEquals(reply.status, 400, JSON.stringify(body));
      }
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(body.data, []);
      assertEquals((await getDoc(server, id)).status, "new");
    });
  });

  test("concurrent metric posts to one model lose nothing, also after a restart", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      let id: string;
      {
        await using server = await serveHub({ dataDir });
        id = await createModel(server);
        const replies = await Promise.all(
          Array.from(
            { length: 60 },
            (_, epoch) =>
              call(server, "POST", `/v1/models/${id}`, {
                type: "metrics",
                metrics: { [epoch]: JSON.stringify({ epoch }) },
              }),
          ),
        );
        assert(replies.every((r) => r.status === 200));
      }
      await using server = await serveHub({ dataDir });
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      const list = body.data as { epoch: number; metrics: { epoch: number } }[];
      assertEquals(list.length, 60);
      assertEquals(
        list.map((m) => m.epoch),
        Array.from({ length: 60 }, (_, i) => i),
      );
      assert(list.every((m) => m.metrics.epoch === m.epoch));
      // One appended, synced line per post; model.json no longer holds them.
      const raw = JSON.parse(
        await readFile(join(dataDir, "models", id, "model.json"), "utf8"),
      );
      assertEquals(raw.metrics, undefined);
      const lines = (await readFile(
        join(dataDir, "models", id, "metrics.jsonl"),
        "utf8",
      )).split("\n").filter((line) => line !== "");
      assertEquals(lines.length, 60);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("heartbeat", () => {
  test("a heartbeat gets an agentId, keeps a known one and starts training", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const path = `/v1/agent/heartbeat/models/${id}`;
      const first = await call(server, "POST", path, {
        agent: "test/1",
        agentId: null,
      });
      assertEquals(first.status, 200);
      const agentId = (first.body.data as { agentId: string }).agentId;
      assertEquals(typeof agentId, "string");
      assert(agentId.length > 0);
      const second = await call(server, "POST", path, {
        agent: "test/1",
        agentId,
      });
      assertEquals((second.body.data as { agentId: string }).agentId, agentId);
      const doc = await getDoc(server, id);
      assertEquals(doc.status, "training");
      assertEquals((doc.heartbeat as { agentId: string }).agentId, agentId);
      assertEquals(
        (await call(server, "POST", path, { agent: 5, agentId: null })).status,
        400,
      );
      assertEquals(
        (await call(server, "POST", path, { agent: "x", agentId: 7 })).status,
        400,
      );
    });
  });
});

describe("uploads", () => {
  test("an upload is stored byte for byte and served back at the resume URL", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const boundary = randomBytes(16).toString("hex");
      const reply = await upload(
        server,
        id,
        multipart(boundary, epochParts(4, data)),
        boundary,
      );
      assertEquals(reply.status, 200, reply.body.message);
      assertEquals(reply.body.data, {
        sha256: sha256(data),
        size: data.length,
        epoch: 4,
        type: "epoch",
      });
      const stored = await readFile(await weightsFile(dataDir, id, "last"));
      assertEquals(sha256(stored), sha256(data));
      const doc = await getDoc(server, id);
      assertEquals(doc.has_last_weights, true);
      assertEquals(doc.resume, `${server.url}/v1/models/${id}/files/last.pt`);
      const served = await fetch(doc.resume as string);
      assertEquals(served.status, 200);
      assertEquals(served.headers.get("content-length"), String(data.length));
      assertEquals(
        sha256(new Uint8Array(await served.arrayBuffer())),
        sha256(data),
      );
      assertEquals(await listTemp(dataDir), []);
    });
  });

  test("a chunked upload cut at awkward places is parsed exactly", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const data = randomBytes(2 * 1024 * 1024 + 3);
      // Make the file contain boundary look-alikes.
      const boundary = "----hubBoundary" + randomBytes(8).toString("hex");
      data.set(encoder.encode(`\r\n--${boundary.slice(0, -1)}`), 1000);
      data.set(encoder.encode(`\r\n--`), 5000);
      const sha = sha256(data);
      const body = multipart(
        boundary,
        epochParts(7, data, [{ name: "sha256", value: sha }]),
      );
      const reply = await upload(
        server,
        id,
        chunked(body, [1, 7, 65_536, 3, 40, 1_048_576, 2]),
        boundary,
      );
      assertEquals(reply.status, 200, reply.body.message);
      assertEquals((reply.body.data as { sha256: string }).sha256, sha);
      const stored = await readFile(await weightsFile(dataDir, id, "last"));
      assertEquals(sha256(stored), sha);
    });
  });

  test("every split of a small multipart body into two chunks parses the same", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      const handle = createHubHandler({ dataDir });
      const created = await handle(
        new Request("http://127.0.0.1/v1/models", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(PAYLOAD),
        }),
      );
      const id = ((await created.json()) as { data: { id: string } }).data.id;
      const data = encoder.encode("\r\n--a\r\n\r\n-weights\r\n-\r");
      const body = multipart(
        "ab",
        epochParts(1, data, [{ name: "sha256", value: sha256(data) }]),
      );
      for (let cut = 0; cut <= body.length; cut++) {
        const init: StreamInit = {
          method: "POST",
          headers: { "content-type": "multipart/form-data; boundary=ab" },
          body: chunked(body, [cut === 0 ? body.length : cut, body.length]),
          duplex: "half",
        };
        const response = await handle(
          new Request(`http://127.0.0.1/v1/models/${id}/upload`, init),
        );
        const reply = await response.json() as Envelope;
        assertEquals(response.status, 200, `cut at ${cut}: ${reply.message}`);
        assertEquals((reply.data as { size: number }).size, data.length);
      }
      const stored = await readFile(await weightsFile(dataDir, id, "last"));
      assertEquals(new Uint8Array(stored), data);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("a checksum mismatch answers 400 and stores no weights", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const data = randomBytes(256 * 1024);
      const boundary = randomBytes(16).toString("hex");
      const reply = await upload(
        server,
        id,
        multipart(
          boundary,
          epochParts(1, data, [{ name: "sha256", value: "0".repeat(64) }]),
        ),
        boundary,
      );
      assertEquals(reply.status, 400);
      assertMatch(reply.body.message ?? "", /^Checksum mismatch/);
      assertEquals((await getDoc(server, id)).has_last_weights, false);
      assertEquals(await blobsOf(dataDir, id), []);
      assertEquals(await listTemp(dataDir), []);
    });
  });

  test("a final upload stores best.pt, records the mAP and marks the model trained", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const data = randomBytes(100_000);
      const boundary = randomBytes(16).toString("hex");
      const reply = await upload(
        server,
        id,
        multipart(boundary, [
          { name: "epoch", value: "3" },
          { name: "type", value: "final" },
          { name: "map", value: "0.625" },
          { name: "best.pt", filename: "best.pt", value: data },
        ]),
        boundary,
      );
      assertEquals(reply.status, 200, reply.body.message);
      const doc = await getDoc(server, id);
      assertEquals(doc.status, "trained");
      assertEquals(doc.has_best_weights, true);
      assertEquals(doc.map, 0.625);
      assertEquals(doc.weights, `${server.url}/v1/models/${id}/files/best.pt`);
      const served = await fetch(doc.weights as string);
      assertEquals(
        sha256(new Uint8Array(await served.arrayBuffer())),
        sha256(data),
      );
    });
  });

  test("a 0-byte file is stored as an empty file", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const boundary = randomBytes(16).toString("hex");
      const reply = await upload(
        server,
        id,
        multipart(boundary, epochParts(0, new Uint8Array(0))),
        boundary,
      );
      assertEquals(reply.status, 200, reply.body.message);
      assertEquals((reply.body.data as { size: number }).size, 0);
      assertEquals(
        (await stat(await weightsFile(dataDir, id, "last"))).size,
        0,
      );
      assertEquals((await getDoc(server, id)).has_last_weights, true);
    });
  });

  test("malformed uploads answer 400 and leave no temporary files", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const data = randomBytes(1000);
      const b = "xyz123";
      const cases: [string, Uint8Array<ArrayBuffer>, string][] = [
        [
          "no closing boundary",
          multipart(b, epochParts(1, data)).slice(0, -12),
          b,
        ],
        [
          "missing type",
          multipart(b, [{ name: "epoch", value: "1" }, {
            name: "last.pt",
            filename: "last.pt",
            value: data,
          }]),
          b,
        ],
        [
          "wrong file part",
          multipart(b, [{ name: "epoch", value: "1" }, {
            name: "type",
            value: "final",
          }, { name: "last.pt", filename: "last.pt", value: data }]),
          b,
        ],
        [
          "no file",
          multipart(b, [{ name: "epoch", value: "1" }, {
            name: "type",
            value: "epoch",
          }]),
          b,
        ],
        [
          "bad epoch",
          multipart(b, [{ name: "epoch", value: "one" }, {
            name: "type",
            value: "epoch",
          }, { name: "last.pt", filename: "last.pt", value: data }]),
          b,
        ],
        [
          "bad isBest",
          multipart(b, [
            { name: "epoch", value: "1" },
            { name: "type", value: "epoch" },
            { name: "isBest", value: "Maybe" },
            { name: "last.pt", filename: "last.pt", value: data },
          ]),
          b,
        ],
        [
          "two files",
          multipart(b, [...epochParts(1, data), {
            name: "best.pt",
            filename: "best.pt",
            value: data,
          }]),
          b,
        ],
      ];
      for (const [what, body, boundary] of cases) {
        const reply = await upload(server, id, body, boundary);
        assertEquals(reply.status, 400, what);
        assertEquals(reply.body.success, false);
      }
      const notMultipart = await fetch(`${server.url}/v1/models/${id}/upload`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: new Uint8Array(data),
      });
      assertEquals(notMultipart.status, 400);
      await notMultipart.body?.cancel();
      assertEquals((await getDoc(server, id)).has_last_weights, false);
      assertEquals(await listTemp(dataDir), []);
    });
  });

  test("an upload above the limit answers 413, by Content-Length and by counted chunks", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const boundary = randomBytes(16).toString("hex");
      const body = multipart(boundary, epochParts(1, randomBytes(200_000)));
      const declared = await upload(server, id, body, boundary);
      assertEquals(declared.status, 413);
      assertEquals(declared.body.success, false);
      const streamed = await upload(
        server,
        id,
        chunked(body, [16_384]),
        boundary,
      );
      assertEquals(streamed.status, 413);
      assertEquals((await getDoc(server, id)).has_last_weights, false);
      await waitFor(
        async () => (await listTemp(dataDir)).length === 0,
        "temporary files are gone",
      );
    }, { maxUploadBytes: 100_000 });
  });

  test("an upload to a model hard-deleted mid-body answers 404 and leaves no blob", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const boundary = randomBytes(16).toString("hex");
      const whole = multipart(
        boundary,
        epochParts(1, randomBytes(2 * 1024 * 1024)),
      );
      let release: () => void = () => {};
      const released = new Promise<void>((resolve) => release = resolve);
      let step = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (step === 0) c.enqueue(whole.slice(0, 1024 * 1024));
          else if (step === 1) {
            await released;
            c.enqueue(whole.slice(1024 * 1024));
          } else c.close();
          step++;
        },
      });
      const init: StreamInit = {
        method: "POST",
        headers: {
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body,
        duplex: "half",
      };
      const pending = fetch(`${server.url}/v1/models/${id}/upload`, init);
      await waitFor(
        async () => (await listTemp(dataDir)).length === 1,
        "the upload has reached the file part",
      );
      assertEquals(
        (await call(server, "DELETE", `/v1/models/${id}?hard=true`)).status,
        200,
      );
      release();
      const reply = await pending;
      assertEquals(reply.status, 404);
      await reply.body?.cancel();
      assertEquals(await blobsOf(dataDir, id), []);
      assertEquals(await listTemp(dataDir), []);
    });
  });

  test("an upload aborted mid-body leaves no weights and no temporary file", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const boundary = randomBytes(16).toString("hex");
      const head = multipart(
        boundary,
        epochParts(1, randomBytes(2 * 1024 * 1024)),
      ).slice(0, 1024 * 1024);
      const controller = new AbortController();
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) {
            sent = true;
            c.enqueue(head);
          }
          // Then never finish: the client aborts.
          return new Promise(() => {});
        },
      });
      const init: StreamInit = {
        method: "POST",
        headers: {
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body,
        duplex: "half",
        signal: controller.signal,
      };
      const pending = fetch(`${server.url}/v1/models/${id}/upload`, init);
      pending.catch(() => {});
      await waitFor(
        async () => (await listTemp(dataDir)).length === 1,
        "the upload has reached the file part",
      );
      controller.abort();
      await assertRejects(() => pending);
      await waitFor(
        async () => (await listTemp(dataDir)).length === 0,
        "the temporary file is deleted",
      );
      assertEquals(await blobsOf(dataDir, id), []);
      assertEquals((await getDoc(server, id)).has_last_weights, false);
    });
  });
});

describe("persistence", () => {
  test("a new server on the same data directory serves everything stored before", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      const data = randomBytes(500_000);
      let id: string;
      let agentId: string;
      {
        await using server = await serveHub({ dataDir });
        id = await createModel(server);
        await call(server, "POST", `/v1/models/${id}`, {
          type: "metrics",
          metrics: { "0": JSON.stringify({ loss: 0.5 }) },
        });
        const beat = await call(
          server,
          "POST",
          `/v1/agent/heartbeat/models/${id}`,
          {
            agent: "test",
            agentId: null,
          },
        );
        agentId = (beat.body.data as { agentId: string }).agentId;
        const boundary = randomBytes(16).toString("hex");
        const reply = await upload(
          server,
          id,
          multipart(boundary, epochParts(0, data)),
          boundary,
        );
        assertEquals(reply.status, 200);
      }
      await using server = await serveHub({ dataDir });
      const doc = await getDoc(server, id);
      assertEquals(doc.status, "training");
      assertEquals(doc.has_last_weights, true);
      assertEquals((doc.heartbeat as { agentId: string }).agentId, agentId);
      assertEquals(doc.resume, `${server.url}/v1/models/${id}/files/last.pt`);
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(body.data, [{ epoch: 0, metrics: { loss: 0.5 } }]);
      const served = await fetch(doc.resume as string);
      assertEquals(
        sha256(new Uint8Array(await served.arrayBuffer())),
        sha256(data),
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("replacing weights", () => {
  test("a second upload replaces the weights and leaves no old file behind", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      for (const data of [randomBytes(300_000), randomBytes(200_000)]) {
        const boundary = randomBytes(16).toString("hex");
        const reply = await upload(
          server,
          id,
          multipart(boundary, epochParts(1, data)),
          boundary,
        );
        assertEquals(reply.status, 200);
        const served = await fetch(
          `${server.url}/v1/models/${id}/files/last.pt`,
        );
        assertEquals(
          sha256(new Uint8Array(await served.arrayBuffer())),
          sha256(data),
        );
      }
      const last = await weightsFile(dataDir, id, "last");
      await waitFor(
        async () => (await blobsOf(dataDir, id)).length === 1,
        "the replaced weights are deleted",
      );
      assertEquals(await blobsOf(dataDir, id), [basename(last)]);
    });
  });

  test("opening the store collects blobs no document names and keeps those of soft-deleted models", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      let live: string;
      let soft: string;
      const data = randomBytes(20_000);
      {
        await using server = await serveHub({ dataDir });
        live = await createModel(server);
        soft = await createModel(server);
        for (const id of [live, soft]) {
          const boundary = randomBytes(16).toString("hex");
          await upload(
            server,
            id,
            multipart(boundary, epochParts(1, data)),
            boundary,
          );
        }
        assertEquals(
          (await call(server, "DELETE", `/v1/models/${soft}`)).status,
          200,
        );
      }
      // A blob a crash left published but never committed.
      const orphan = join(dataDir, "weights", live, "f".repeat(64));
      await writeFile(orphan, "never committed");
      await using server = await serveHub({ dataDir });
      assertEquals((await getDoc(server, live)).has_last_weights, true);
      assertEquals(await blobsOf(dataDir, live), [sha256(data)]);
      assertEquals(await blobsOf(dataDir, soft), [sha256(data)]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("opening a data directory of the earlier layout moves the weights its documents name to content addresses", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      let id: string;
      const data = randomBytes(50_000);
      {
        await using server = await serveHub({ dataDir });
        id = await createModel(server);
        const boundary = randomBytes(16).toString("hex");
        await upload(
          server,
          id,
          multipart(boundary, epochParts(1, data)),
          boundary,
        );
      }
      // Rewrite the directory as the earlier layout left it after a crash
      // between its two renames: the weights moved aside as `.old`, the
      // document without blob keys, plus files no document names.
      const dir = join(dataDir, "models", id);
      const docPath = join(dir, "model.json");
      const doc = JSON.parse(await readFile(docPath, "utf8"));
      await rename(
        await weightsFile(dataDir, id, "last"),
        join(dir, "last.pt.0123456789ab.old"),
      );
      delete doc.weights.last.blob;
      await writeFile(docPath, JSON.stringify(doc));
      await writeFile(join(dir, "last.pt"), "newer, never acknowledged");
      await writeFile(join(dir, "best.pt"), "best");
      await using server = await serveHub({ dataDir });
      // The store opens (and migrates) before it answers the first request.
      assertEquals((await getDoc(server, id)).has_last_weights, true);
      const served = await fetch(`${server.url}/v1/models/${id}/files/last.pt`);
      assertEquals(
        sha256(new Uint8Array(await served.arrayBuffer())),
        sha256(data),
      );
      assertEquals(served.headers.get("x-checksum-sha256"), sha256(data));
      assertEquals((await readdir(dir)).sort(), ["model.json"]);
      assertEquals(await blobsOf(dataDir, id), [sha256(data)]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("weight files on a server with keys", () => {
  test("weights download with a key or with the URL's token, and not without", async () => {
    await withServer(async (server) => {
      const auth = { "x-api-key": KEY };
      const id = await createModel(server, auth);
      const data = randomBytes(10_000);
      const boundary = randomBytes(16).toString("hex");
      assertEquals(
        (await upload(
          server,
          id,
          multipart(boundary, epochParts(2, data)),
          boundary,
          auth,
        )).status,
        200,
      );
      const doc = await getDoc(server, id, auth);
      const resume = doc.resume as string;
      assertMatch(resume, /\/files\/last\.pt\?token=[0-9a-f]+$/);
      assert(!resume.includes(KEY));
      const byToken = await fetch(resume);
      assertEquals(
        sha256(new Uint8Array(await byToken.arrayBuffer())),
        sha256(data),
      );
      const bare = resume.replace(/\?.*$/, "");
      const byKey = await fetch(bare, { headers: auth });
      assertEquals(byKey.status, 200);
      await byKey.body?.cancel();
      const none = await fetch(bare);
      assertEquals(none.status, 401);
      await none.body?.cancel();
      const badToken = await fetch(`${bare}?token=00`);
      assertEquals(badToken.status, 401);
      await badToken.body?.cancel();
    }, { apiKeys: [KEY] });
  });
});

describe("hub-session serve", () => {
  test("serve prints the listening line first, serves, and exits 0 on SIGTERM", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-main-"));
    const mainPath = join(
      dirname(fileURLToPath(import.meta.url)),
      "..",
      "src",
      "cli",
      "mod.ts",
    );
    const isDeno = "Deno" in globalThis;
    const args = isDeno
      ? ["run", "-A", mainPath, "serve", "--port", "0", "--data", dataDir]
      : [mainPath, "serve", "--port", "0", "--data", dataDir];
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let stdout = "";
      let stderr = "";
      child.stderr.on("data", (chunk: Uint8Array) => {
        stderr += new TextDecoder().decode(chunk);
      });
      const exited = new Promise<number | null>((resolve) =>
        child.on("exit", (code) => resolve(code))
      );
      const firstLine = await new Promise<string>((resolve, reject) => {
        child.stdout.on("data", (chunk: Uint8Array) => {
          stdout += new TextDecoder().decode(chunk);
          const newline = stdout.indexOf("\n");
          if (newline !== -1) resolve(stdout.slice(0, newline));
        });
        child.on(
          "exit",
          () => reject(new Error(`serve exited early: ${stderr}`)),
        );
      });
      const match = /^HUB listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(
        firstLine,
      );
      assert(match, firstLine);
      const reply = await fetch(`${match[1]}/v1/auth`, { method: "POST" });
      assertEquals((await reply.json() as Envelope).success, true);
      // process.kill, not child.kill: Deno's child_process reports a child
      // it signalled itself as killed by the signal even when it exits 0.
      process.kill(child.pid!, "SIGTERM");
      assertEquals(await exited, 0, stderr);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

/** Sends a request's head and the first bytes of its body, then resets. */
async function sendCut(
  server: HubServer,
  head: string,
  body: Uint8Array,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = connect(server.port, "127.0.0.1", () => {
      socket.write(head);
      socket.write(body, () => {
        socket.destroy();
        resolve();
      });
    });
    socket.on("error", reject);
  });
}

describe("aborted requests", () => {
  test("an upload or metrics post cut mid-body reports nothing to onError and leaves no temporary file", async () => {
    const errors: unknown[] = [];
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      const boundary = randomBytes(16).toString("hex");
      const full = multipart(boundary, epochParts(1, randomBytes(1 << 20)));
      const cut = full.subarray(0, 256 * 1024);
      await sendCut(
        server,
        `POST /v1/models/${id}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
          `Content-Type: multipart/form-data; boundary=${boundary}\r\n` +
          `Content-Length: ${full.length}\r\n\r\n`,
        cut,
      );
      const json = encoder.encode(
        JSON.stringify({ type: "metrics", metrics: { "0": '{"a": 1}' } }),
      );
      await sendCut(
        server,
        `POST /v1/models/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
          `Content-Type: application/json\r\n` +
          `Content-Length: ${json.length + 100}\r\n\r\n`,
        json,
      );
      await waitFor(
        async () => (await listTemp(dataDir)).length === 0,
        "the temporary file is deleted",
      );
      const doc = await getDoc(server, id);
      assertEquals(doc.has_last_weights, false);
      assertEquals(doc.epochs_completed, 0);
      assertEquals(await blobsOf(dataDir, id), []);
      // close() waits for the requests in flight, the cut ones included.
      await server.close();
      assertEquals(errors, []);
    }, { onError: (error) => errors.push(error) });
  });

  test("a body that fails mid-read answers 400 Upload aborted or Request aborted, not 500", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    const errors: unknown[] = [];
    try {
      const handle = createHubHandler({
        dataDir,
        onError: (error) => errors.push(error),
      });
      const created = await handle(
        new Request("http://127.0.0.1/v1/models", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(PAYLOAD),
        }),
      );
      const { id } = (await created.json() as Envelope).data as { id: string };
      const failing = (head: Uint8Array): ReadableStream<Uint8Array> => {
        let sent = false;
        return new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent) {
              // As Deno reports a connection that went away.
              const error = new Error(
                "Cannot read request body as underlying resource unavailable",
              );
              error.name = "BadResource";
              controller.error(error);
              return;
            }
            sent = true;
            controller.enqueue(head);
          },
        });
      };
      const boundary = randomBytes(16).toString("hex");
      const uploadInit: StreamInit = {
        method: "POST",
        headers: {
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body: failing(
          multipart(boundary, epochParts(1, randomBytes(100_000))).subarray(
            0,
            50_000,
          ),
        ),
        duplex: "half",
      };
      const upload = await handle(
        new Request(`http://127.0.0.1/v1/models/${id}/upload`, uploadInit),
      );
      assertEquals(upload.status, 400);
      assertMatch(
        (await upload.json() as Envelope).message ?? "",
        /^Upload aborted/,
      );
      const metricsInit: StreamInit = {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: failing(encoder.encode('{"type": "metrics", "metr')),
        duplex: "half",
      };
      const metrics = await handle(
        new Request(`http://127.0.0.1/v1/models/${id}`, metricsInit),
      );
      assertEquals(metrics.status, 400);
      assertMatch(
        (await metrics.json() as Envelope).message ?? "",
        /^Request aborted/,
      );
      assertEquals(errors, []);
      assertEquals(await listTemp(dataDir), []);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("metrics storage", () => {
  test("a torn last line of metrics.jsonl is ignored and cut off before the next post", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      let id: string;
      const post = (server: HubServer, epoch: number) =>
        call(server, "POST", `/v1/models/${id}`, {
          type: "metrics",
          metrics: { [epoch]: JSON.stringify({ loss: epoch / 10 }) },
        });
      {
        await using server = await serveHub({ dataDir });
        id = await createModel(server);
        assertEquals((await post(server, 0)).status, 200);
        assertEquals((await post(server, 1)).status, 200);
      }
      const file = join(dataDir, "models", id, "metrics.jsonl");
      // A crash during an append, before the post was acknowledged.
      await appendFile(file, '{"time":1,"metrics":{"2":{"loss"');
      await using server = await serveHub({ dataDir });
      const listed = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(
        (listed.body.data as { epoch: number }[]).map((m) => m.epoch),
        [0, 1],
      );
      assertEquals((await post(server, 3)).status, 200);
      const after = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(after.body.data, [
        { epoch: 0, metrics: { loss: 0 } },
        { epoch: 1, metrics: { loss: 0.1 } },
        { epoch: 3, metrics: { loss: 0.3 } },
      ]);
      const text = await readFile(file, "utf8");
      assert(text.endsWith("\n"));
      for (const line of text.split("\n").filter((l) => l !== "")) {
        JSON.parse(line);
      }
      assertEquals((await getDoc(server, id)).epochs_completed, 3);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("a model.json that still holds its metrics is migrated to metrics.jsonl", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-server-"));
    try {
      let id: string;
      {
        await using server = await serveHub({ dataDir });
        id = await createModel(server);
      }
      const dir = join(dataDir, "models", id);
      const old = JSON.parse(await readFile(join(dir, "model.json"), "utf8"));
      await writeFile(
        join(dir, "model.json"),
        JSON.stringify({
          ...old,
          version: 1,
          status: "training",
          metrics: { "0": { loss: 1 }, "1": { loss: 0.5 } },
        }),
      );
      await unlink(join(dir, "metrics.jsonl")).catch(() => {});
      await using server = await serveHub({ dataDir });
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(body.data, [
        { epoch: 0, metrics: { loss: 1 } },
        { epoch: 1, metrics: { loss: 0.5 } },
      ]);
      assertEquals((await getDoc(server, id)).epochs_completed, 2);
      const migrated = JSON.parse(
        await readFile(join(dir, "model.json"), "utf8"),
      );
      assertEquals(migrated.metrics, undefined);
      assertEquals(migrated.version, 2);
      const lines = (await readFile(join(dir, "metrics.jsonl"), "utf8"))
        .split("\n").filter((l) => l !== "");
      assertEquals(lines.length, 2);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("re-sending one epoch many times compacts the file and keeps the last value", async () => {
    await withServer(async (server, dataDir) => {
      const id = await createModel(server);
      for (let n = 0; n < 150; n++) {
        const reply = await call(server, "POST", `/v1/models/${id}`, {
          type: "metrics",
          metrics: { "7": JSON.stringify({ loss: n }) },
        });
        assertEquals(reply.status, 200);
      }
      const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
      assertEquals(body.data, [{ epoch: 7, metrics: { loss: 149 } }]);
      const lines = (await readFile(
        join(dataDir, "models", id, "metrics.jsonl"),
        "utf8",
      )).split("\n").filter((l) => l !== "");
      assert(lines.length < 100, `${lines.length} lines`);
      assertEquals((await getDoc(server, id)).epochs_completed, 1);
    });
  });

  test("the store caches a bounded number of models and still finds the others", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-store-"));
    try {
      const store = await FileModelStore.open(dataDir);
      const ids: string[] = [];
      for (let i = 0; i < MAX_CACHED_MODELS + 20; i++) {
        const record = await store.create({
          name: `m${i}`,
          dataset: "",
          architecture: "yolov8n",
          config: STORED_CONFIG,
        }, i);
        ids.push(record.id);
      }
      assertEquals(store.cachedModels, MAX_CACHED_MODELS);
      assertEquals((await store.get(ids[0]!))?.name, "m0");
      assertEquals(store.cachedModels, MAX_CACHED_MODELS);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("pages", () => {
  async function page(
    server: HubServer,
    path: string,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; text: string; headers: Headers }> {
    const response = await fetch(`${server.url}${path}`, {
      headers: {
        accept: "text/html,application/xhtml+xml,*/*;q=0.8",
        ...headers,
      },
    });
    return {
      status: response.status,
      text: await response.text(),
      headers: response.headers,
    };
  }

  test("the model page shows every epoch and escapes every value", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const metrics: Record<string, string> = {};
      for (let epoch = 0; epoch < 60; epoch++) {
        metrics[epoch] = JSON.stringify({
          "train/box_loss": epoch / 100,
          "<script>alert(1)</script>": epoch,
        });
      }
      await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics,
      });
      await call(server, "PATCH", `/v1/models/${id}`, {
        meta: { name: '<img src=x onerror="alert(1)">' },
      });
      const boundary = randomBytes(16).toString("hex");
      await upload(
        server,
        id,
        multipart(boundary, epochParts(59, randomBytes(1000))),
        boundary,
      );
      const { status, text, headers } = await page(server, `/models/${id}`);
      assertEquals(status, 200);
      assertMatch(headers.get("content-type") ?? "", /^text\/html/);
      assertMatch(
        headers.get("content-security-policy") ?? "",
        /default-src 'none'/,
      );
      assert(!/<script>|<img/i.test(text), "no unescaped markup");
      assert(text.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
      assert(
        text.includes("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"),
      );
      assert(text.includes("train/box_loss"));
      const rows = [...text.matchAll(/<tr><th scope="row">(\d+)<\/th>/g)]
        .map((m) => Number(m[1]));
      // Pages count epochs from 1 (epoch key 0 is "epoch 1").
      assertEquals(rows, Array.from({ length: 60 }, (_, i) => i + 1));
      assert(text.includes("60 / 3 epochs"), "epochs completed of configured");
      assert(text.includes(`href="/v1/models/${id}"`));
      assert(text.includes(`href="/v1/models/${id}/files/last.pt"`));
      assert(text.includes("coco8.yaml"));
      assert(text.includes("yolov8n.yaml"));
    });
  });

  test("GET / lists the models for browsers and stays a JSON health reply for clients", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const index = await page(server, "/");
      assertEquals(index.status, 200);
      assert(index.text.includes(`href="/models/${id}"`));
      for (const accept of [undefined, "*/*", "application/json"]) {
        const response = await fetch(`${server.url}/`, {
          headers: accept === undefined ? {} : { accept },
        });
        assertEquals(response.status, 200);
        assertEquals((await response.json() as Envelope).success, true);
      }
      const v1 = await call(server, "GET", "/v1");
      assertEquals(v1.status, 200);
      assertEquals(v1.body.success, true);
      const missing = await page(server, `/models/${"Z".repeat(20)}`);
      assertEquals(missing.status, 404);
      assertMatch(missing.text, /Model not found/);
    });
  });

  test("on a server with keys, pages need the key or a login and show nothing without", async () => {
    await withServer(async (server) => {
      const auth = { "x-api-key": KEY };
      const id = await createModel(server, auth);
      for (const path of [`/models/${id}`, "/"]) {
        const denied = await page(server, path);
        assertEquals(denied.status, 401, path);
        // The login page, which repeats only the requested path.
        assert(denied.text.includes('type="password"'));
        assert(!denied.text.includes("yolov8n"));
        assert(!denied.text.includes("coco8"));
        const allowed = await page(server, path, auth);
        assertEquals(allowed.status, 200, path);
        assert(allowed.text.includes(id));
      }
      const withKey = await page(server, `/models/${id}`, auth);
      assert(!withKey.text.includes(KEY));
      // The JSON health reply carries no model data and needs no key.
      const health = await fetch(`${server.url}/`);
      assertEquals(health.status, 200);
      await health.body?.cancel();
    }, { apiKeys: [KEY] });
  });
});
