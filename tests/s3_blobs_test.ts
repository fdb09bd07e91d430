import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import {
  openS3BlobStore,
  type S3BlobStore,
} from "../src/server/storage/s3/blobs.ts";
import { S3Error } from "../src/server/storage/s3/client.ts";
import {
  BlobChecksumError,
  StorageUnavailableError,
} from "../src/server/storage/contract.ts";
import { haveServices, s3Config } from "./support/services.ts";
import { waitUntil } from "./support/common.ts";
import { closedPort } from "./support/server.ts";

const MiB = 1024 * 1024;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function readAll(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    size += chunk.byteLength;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Writes `bytes` in chunks of varying size, as a request body arrives. */
async function writeInChunks(
  writer: { write(chunk: Uint8Array): Promise<void> },
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  let step = 1;
  while (offset < bytes.byteLength) {
    const size = Math.min(
      64 * 1024 + (step++ * 7919) % 200_000,
      bytes.byteLength - offset,
    );
    await writer.write(bytes.subarray(offset, offset + size));
    offset += size;
  }
}

if (haveServices("S3 blob store", ["s3"])) {
  describe("S3 blob store on a real S3 server", () => {
    let store: S3BlobStore;

    before(async () => {
      store = await openS3BlobStore(s3Config()!, { partSize: 5 * MiB });
    });

    after(async () => {
      for (;;) {
        const page = await store.list("");
        for (const item of page.items) await store.delete(item.key);
        if (page.next === undefined) break;
      }
      await store.close();
    });

    test("a small blob is stored with one PUT under <prefix><sha256> and read back", async () => {
      const bytes = randomBytes(300_000);
      const writer = await store.createWriter("modelA/");
      await writeInChunks(writer, bytes);
      assertEquals(writer.size, bytes.byteLength);
      const blob = await writer.finish(sha256(bytes));
      assertEquals(blob, {
        key: `modelA/${sha256(bytes)}`,
        sha256: sha256(bytes),
        size: bytes.byteLength,
      });
      const read = await store.read(blob.key);
      assert(read !== undefined);
      assertEquals(read.size, bytes.byteLength);
      assertEquals(sha256(await readAll(read.body)), sha256(bytes));
      const stat = await store.stat(blob.key);
      assertEquals(stat?.size, bytes.byteLength);
      assert(Number.isFinite(stat?.modifiedAt));
    });

    test("a blob above the part size goes up in parts and appears under its key only when finished", async () => {
      const bytes = randomBytes(12 * MiB + 12345);
      const writer = await store.createWriter("modelB/");
      await writeInChunks(writer, bytes);
      // Parts are up, nothing is visible.
      assertEquals((await store.list("modelB/")).items, []);
      await waitUntil(
        async () => (await store.pendingUploads()).length === 1,
        "the multipart upload is listed",
      );
      const blob = await writer.finish(sha256(bytes));
      assertEquals(blob.size, bytes.byteLength);
      assertEquals(blob.sha256, sha256(bytes));
      // Published where it was uploaded: a key of its own, not renamed.
      assert(/^modelB\/u[0-9a-f]{24}$/.test(blob.key), blob.key);
      const read = await store.read(blob.key);
      assert(read !== undefined);
      assertEquals(sha256(await readAll(read.body)), sha256(bytes));
      assertEquals((await store.list("modelB/")).items.map((i) => i.key), [
        blob.key,
      ]);
      // No multipart upload left behind.
      assertEquals(await store.pendingUploads(), []);
    });

    test("a checksum mismatch publishes nothing and aborts the multipart upload", async () => {
      const bytes = randomBytes(6 * MiB);
      const writer = await store.createWriter("modelC/");
      await writeInChunks(writer, bytes);
      const error = await assertRejects(
        () => writer.finish("0".repeat(64)),
        BlobChecksumError,
      );
      assertEquals(error.actual, sha256(bytes));
      assertEquals(await store.stat(`modelC/${sha256(bytes)}`), undefined);
      assertEquals(await store.pendingUploads(), []);
      await writer.abort(); // safe more than once
    });

    test("abort() mid-upload leaves no multipart upload and no object", async () => {
      const writer = await store.createWriter("modelD/");
      await writer.write(randomBytes(11 * MiB));
      await waitUntil(
        async () => (await store.pendingUploads()).length === 1,
        "the multipart upload is listed",
      );
      await writer.abort();
      assertEquals(await store.pendingUploads(), []);
      assertEquals((await store.list("modelD/")).items, []);
      await assertRejects(() => writer.write(new Uint8Array(1)), TypeError);
    });

    test("aborting the writer's signal aborts the upload", async () => {
      const controller = new AbortController();
      const writer = await store.createWriter("modelE/", {
        signal: controller.signal,
      });
      await writer.write(randomBytes(6 * MiB));
      controller.abort(new Error("client went away"));
      await assertRejects(() => writer.finish());
      await writer.abort();
      assertEquals(await store.pendingUploads(), []);
    });

    test("a write beyond maxBytes rejects with a RangeError and publishes nothing", async () => {
      const writer = await store.createWriter("modelF/", { maxBytes: 1000 });
      await writer.write(new Uint8Array(600));
      await assertRejects(() => writer.write(new Uint8Array(600)), RangeError);
      assertEquals((await store.list("modelF/")).items, []);
    });

    test("read() with a range streams only those bytes and reports the whole size", async () => {
      const bytes = randomBytes(7 * MiB);
      const writer = await store.createWriter("modelG/");
      await writeInChunks(writer, bytes);
      const blob = await writer.finish();
      const read = await store.read(blob.key, {
        range: { start: 5 * MiB - 10, end: 5 * MiB + 9 },
      });
      assert(read !== undefined);
      assertEquals(read.size, bytes.byteLength);
      assertEquals(read.range, { start: 5 * MiB - 10, end: 5 * MiB + 9 });
      assertEquals(
        await readAll(read.body),
        new Uint8Array(bytes.subarray(5 * MiB - 10, 5 * MiB + 10)),
      );
      await assertRejects(
        () =>
          store.read(blob.key, { range: { start: 8 * MiB, end: 8 * MiB + 1 } }),
        RangeError,
      );
      assertEquals(await store.read("modelG/missing"), undefined);
    });

    test("the same bytes written twice share one key", async () => {
      const bytes = randomBytes(1000);
      const first = await store.createWriter("modelH/");
      const second = await store.createWriter("modelH/");
      await first.write(bytes);
      await second.write(bytes);
      const [a, b] = await Promise.all([first.finish(), second.finish()]);
      assertEquals(a.key, b.key);
      assertEquals((await store.list("modelH/")).items.length, 1);
    });

    test("list() pages in ascending key order", async () => {
      const keys: string[] = [];
      for (let i = 0; i < 5; i++) {
        const writer = await store.createWriter("modelI/");
        await writer.write(randomBytes(100));
        keys.push((await writer.finish()).key);
      }
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.list("modelI/", { limit: 2, cursor });
        assert(page.items.length <= 2);
        seen.push(...page.items.map((i) => i.key));
        cursor = page.next;
      } while (cursor !== undefined);
      assertEquals(seen, keys.sort());
    });

    test("abortStaleUploads() aborts multipart uploads a dead process left", async () => {
      const writer = await store.createWriter("modelJ/");
      await writer.write(randomBytes(5 * MiB)); // one part up, never finished
      await waitUntil(
        async () => (await store.pendingUploads()).length === 1,
        "the multipart upload is listed",
      );
      // A second store on the same bucket and prefix sweeps it.
      assertEquals(await store.abortStaleUploads(undefined, 0), 1);
      assertEquals(await store.pendingUploads(), []);
      await writer.abort();
    });

    test("bad keys and prefixes are refused with a TypeError", async () => {
      await assertRejects(() => store.createWriter("../x/"), TypeError);
      await assertRejects(() => store.createWriter("noslash"), TypeError);
      await assertRejects(() => store.read(".hidden/x"), TypeError);
    });
  });

  describe("S3 blob store faults", () => {
    test("an unreachable endpoint rejects with StorageUnavailableError", async () => {
      const port = await closedPort();
      const error = await assertRejects(
        () =>
          openS3BlobStore({
            ...s3Config()!,
            endpoint: `http://127.0.0.1:${port}`,
          }),
        StorageUnavailableError,
      );
      assertStringIncludes(error.message, `127.0.0.1:${port}`);
      assert(error.retryAfterSeconds >= 1);
    });

    test("a wrong secret is refused with 403 and a hint, never echoing the secret", async () => {
      const config = {
        ...s3Config()!,
        secretAccessKey: "wrong-secret-value-123",
      };
      const error = await assertRejects(
        () => openS3BlobStore(config),
        S3Error,
      );
      assertEquals(error.status, 403);
      assertStringIncludes(error.message, "AWS_SECRET_ACCESS_KEY");
      assert(!error.message.includes("wrong-secret-value-123"));
    });

    test("a missing bucket is named in the error", async () => {
      const error = await assertRejects(
        () =>
          openS3BlobStore({ ...s3Config()!, bucket: "no-such-bucket-here" }),
        S3Error,
      );
      assertStringIncludes(error.message, "no-such-bucket-here");
      assertInstanceOf(error, S3Error);
    });
  });
}
