import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import { appendFileSync, truncateSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { serveHub } from "../src/server/mod.ts";
import type { HubServer } from "../src/server/mod.ts";
import { HUBClient } from "../src/transport/client.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import { createMultipartUpload } from "../src/transport/multipart_body.ts";
import { HUBError } from "../src/common/errors.ts";
import type { Logger, UploadProgress } from "../src/protocol/types.ts";

const payload = createModelPayload("yolov8n.yaml", {
  data: "coco8.yaml",
  epochs: 3,
});

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function pattern(size: number, seed = 7): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, info() {}, warn: (m) => warnings.push(m), error() {} };
}

/** What `promise` rejects with; fails the test when it resolves. */
function rejection(promise: Promise<unknown>): Promise<unknown> {
  return assertRejects(() => promise);
}

describe("uploadModel() against the local HUB", () => {
  let dir: string;
  let server: HubServer;
  let client: HUBClient;
  let logger: ReturnType<typeof recordingLogger>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hub-upload-"));
    server = await serveHub({ port: 0, dataDir: join(dir, "data") });
    logger = recordingLogger();
    client = new HUBClient({ apiRoot: server.url, logger });
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function stored(id: string, name: string): Promise<Uint8Array> {
    const response = await fetch(`${server.url}/v1/models/${id}/files/${name}`);
    assertEquals(response.status, 200);
    return new Uint8Array(await response.arrayBuffer());
  }

  test("the server parses the body back byte for byte and agrees on the sha256", async () => {
    const id = await client.createModel(payload);
    const bytes = pattern(3 * 1024 * 1024 + 12_345);
    const file = join(dir, "last.pt");
    await writeFile(file, bytes);
    const result = await client.uploadModel(id, {
      epoch: 4,
      file,
      type: "epoch",
      isBest: false,
    });
    assertEquals(result, { size: bytes.byteLength, sha256: sha256(bytes) });
    assertEquals(await stored(id, "last.pt"), bytes);
  });

  test("a large upload through the runtime's own fetch (chunks released once sent) arrives intact", async () => {
    const id = await client.createModel(payload);
    // Well beyond the read-ahead, so that released chunks are really detached.
    const bytes = pattern(24 * 1024 * 1024 + 7);
    const file = join(dir, "large.pt");
    await writeFile(file, bytes);
    const result = await client.uploadModel(id, {
      epoch: 1,
      file,
      type: "final",
      map: 0.1,
    });
    assertEquals(result, { size: bytes.byteLength, sha256: sha256(bytes) });
    assertEquals(sha256(await stored(id, "best.pt")), sha256(bytes));
  });

  test("progress starts at 0, only grows, and reaches the total exactly once at the end", async () => {
    const id = await client.createModel(payload);
    const bytes = pattern(2_500_000);
    const file = join(dir, "progress.pt");
    await writeFile(file, bytes);
    const events: UploadProgress[] = [];
    const result = await client.uploadModel(id, {
      epoch: 9,
      file,
      type: "final",
      map: 0.5,
      onProgress: (p) => events.push({ ...p }),
    });
    const settledAt = events.length;
    await new Promise((resolve) => setTimeout(resolve, 20));
    assertEquals(
      events.length,
      settledAt,
      "no event after the promise settled",
    );
    assertEquals(result.size, bytes.byteLength);
    const total = events[0]?.total;
    assert(total !== undefined && total > bytes.byteLength);
    assertEquals(events[0]?.loaded, 0);
    for (let i = 1; i < events.length; i++) {
      assertEquals(events[i]?.total, total);
      assert(events[i]!.loaded >= events[i - 1]!.loaded);
    }
    assertEquals(events.filter((e) => e.loaded === total).length, 1);
    assertEquals(events.at(-1)?.loaded, total);
    assert(events.length >= 4, "several intermediate events for 2.5 MB");
  });

  test("a throwing onProgress is reported once and does not break the upload", async () => {
    const id = await client.createModel(payload);
    const bytes = pattern(3_000_000, 3);
    const file = join(dir, "throwing.pt");
    await writeFile(file, bytes);
    const before = logger.warnings.length;
    let calls = 0;
    const result = await client.uploadModel(id, {
      epoch: 1,
      file,
      type: "epoch",
      onProgress: () => {
        calls++;
        throw new Error("bar exploded");
      },
    });
    assertEquals(result.sha256, sha256(bytes));
    assert(calls > 2);
    const warnings = logger.warnings.slice(before);
    assertEquals(warnings.length, 1);
    assertMatch(warnings[0] ?? "", /bar exploded/);
  });

  test("a 0-byte file uploads as an empty part", async () => {
    const id = await client.createModel(payload);
    const file = join(dir, "empty.pt");
    await writeFile(file, new Uint8Array(0));
    const events: UploadProgress[] = [];
    const result = await client.uploadModel(id, {
      epoch: 0,
      file,
      type: "epoch",
      onProgress: (p) => events.push({ ...p }),
    });
    assertEquals(result, { size: 0, sha256: sha256(new Uint8Array(0)) });
    assertEquals((await stored(id, "last.pt")).byteLength, 0);
    assertEquals(events.at(-1)?.loaded, events.at(-1)?.total);
  });

  test("a missing file fails before anything is sent, naming the path and what to do", async () => {
    let calls = 0;
    const counting = new HUBClient({
      apiRoot: server.url,
      fetch: ((...args: Parameters<typeof fetch>) => {
        calls++;
        return fetch(...args);
      }) as typeof fetch,
    });
    const file = join(dir, "nope", "best.pt");
    const error = await rejection(
      counting.uploadModel("a".repeat(20), { epoch: 1, file, type: "final" }),
    );
    assert(error instanceof HUBError);
    assert(error.message.includes(file));
    assertMatch(error.message, /does not exist: check the path/);
    assertEquals(calls, 0);
  });

  test("a file that grows during the upload is sent as it was when the upload started", async () => {
    const id = await client.createModel(payload);
    const bytes = pattern(4 * 1024 * 1024, 11);
    const file = join(dir, "growing.pt");
    await writeFile(file, bytes);
    let grown = false;
    const result = await client.uploadModel(id, {
      epoch: 2,
      file,
      type: "epoch",
      onProgress: () => {
        if (grown) return;
        grown = true;
        appendFileSync(file, pattern(1024 * 1024, 5));
      },
    });
    assert(grown);
    assertEquals(result, { size: bytes.byteLength, sha256: sha256(bytes) });
    assertEquals(await stored(id, "last.pt"), bytes);
  });

  test("a file that shrinks during the upload fails with a HUBError and stores nothing", async () => {
    const id = await client.createModel(payload);
    const file = join(dir, "shrinking.pt");
    await writeFile(file, pattern(8 * 1024 * 1024, 13));
    let cut = false;
    const error = await rejection(client.uploadModel(id, {
      epoch: 2,
      file,
      type: "epoch",
      onProgress: () => {
        if (cut) return;
        cut = true;
        truncateSync(file, 1024);
      },
    }));
    assert(error instanceof HUBError, String(error));
    assertMatch(error.message, /shrank from 8388608 to \d+ bytes/);
    assertEquals((await client.getModel(id)).has_last_weights, false);
  });

  test("an abort mid-upload rejects with the reason and leaves no weights", async () => {
    const id = await client.createModel(payload);
    const file = join(dir, "aborted.pt");
    await writeFile(file, pattern(8 * 1024 * 1024, 17));
    const controller = new AbortController();
    const reason = new Error("user stopped");
    const error = await rejection(client.uploadModel(id, {
      epoch: 3,
      file,
      type: "epoch",
      signal: controller.signal,
      onProgress: ({ loaded }) => {
        if (loaded > 2 * 1024 * 1024) controller.abort(reason);
      },
    }));
    assertStrictEquals(error, reason);
    assertEquals((await client.getModel(id)).has_last_weights, false);
  });

  test("a body corrupted in transit is refused with a retriable Checksum mismatch", async () => {
    const id = await client.createModel(payload);
    const bytes = pattern(100_000, 19);
    const file = join(dir, "corrupt.pt");
    await writeFile(file, bytes);
    let flipped = false;
    const corrupt = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        if (!flipped && chunk.byteLength > 50_000) {
          flipped = true;
          const copy = chunk.slice();
          copy[1000] = copy[1000]! ^ 0xff;
          controller.enqueue(copy);
        } else controller.enqueue(chunk);
      },
    });
    // Flip one bit of the file part between the client and the network.
    const bad = new HUBClient({
      apiRoot: server.url,
      fetch: ((input: string | URL | Request, init?: RequestInit) => {
        const body = init?.body as ReadableStream<Uint8Array>;
        return fetch(input, { ...init, body: body.pipeThrough(corrupt) });
      }) as typeof fetch,
    });
    const error = await rejection(
      bad.uploadModel(id, { epoch: 1, file, type: "epoch" }),
    );
    assert(flipped);
    assertEquals((error as { status?: number }).status, 400);
    assertEquals((error as { retriable?: boolean }).retriable, true);
    assertMatch((error as Error).message, /Checksum mismatch/);
    assertEquals((await client.getModel(id)).has_last_weights, false);
  });
});

describe("createMultipartUpload()", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hub-multipart-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("writes the fields, then the file part, then sha256, with an exact Content-Length", async () => {
    const bytes = pattern(1_500_000, 23);
    const file = join(dir, "w.pt");
    await writeFile(file, bytes);
    const upload = await createMultipartUpload({
      file,
      partName: "best.pt",
      fields: [["epoch", "7"], ["type", "final"], ["map", "0.25"]],
      chunkSize: 64 * 1024,
    });
    const body = upload.body();
    const raw = new Uint8Array(await new Response(body.stream).arrayBuffer());
    body.finish();
    assertEquals(raw.byteLength, upload.contentLength);
    assertEquals(upload.fileSize, bytes.byteLength);
    const text = new TextDecoder("latin1").decode(raw);
    const names = [
      ...text.matchAll(/Content-Disposition: form-data; name="([^"]+)"/g),
    ]
      .map((m) => m[1]);
    assertEquals(names, ["epoch", "type", "map", "best.pt", "sha256"]);
    assertMatch(text, /name="best.pt"; filename="best.pt"\r\n/);
    const form = await new Response(raw, {
      headers: { "content-type": upload.contentType },
    }).formData();
    assertEquals(form.get("epoch"), "7");
    assertEquals(form.get("map"), "0.25");
    assertEquals(form.get("sha256"), sha256(bytes));
    assertEquals(body.sha256(), sha256(bytes));
    const part = form.get("best.pt");
    assert(part instanceof Blob);
    assertEquals(new Uint8Array(await part.arrayBuffer()), bytes);
  });

  test("each body() is a fresh stream with the same bytes", async () => {
    const file = join(dir, "twice.pt");
    await writeFile(file, pattern(70_000, 29));
    const upload = await createMultipartUpload({ file, partName: "last.pt" });
    const read = async () => {
      const body = upload.body();
      const out = new Uint8Array(await new Response(body.stream).arrayBuffer());
      body.finish();
      return out;
    };
    const a = await read();
    const b = await read();
    assertEquals(a, b);
  });

  test("without a checksum field the body ends right after the file part", async () => {
    const file = join(dir, "nosum.pt");
    await writeFile(file, pattern(1000));
    const upload = await createMultipartUpload({
      file,
      partName: "last.pt",
      checksumField: false,
    });
    const body = upload.body();
    const text = await new Response(body.stream).text();
    body.finish();
    assert(!text.includes('name="sha256"'));
    assertEquals(body.sha256(), undefined);
  });

  test("a directory and bad options are refused up front", async () => {
    assertMatch(
      String(
        await assertRejects(() =>
          createMultipartUpload({ file: dir, partName: "last.pt" })
        ),
      ),
      /not a regular file/,
    );
    await assertRejects(
      () => createMultipartUpload({ file: join(dir, "x"), partName: 'a"b' }),
      TypeError,
    );
    await assertRejects(
      () =>
        createMultipartUpload({
          file: join(dir, "x"),
          partName: "a",
          chunkSize: 0,
        }),
      RangeError,
    );
  });
});
