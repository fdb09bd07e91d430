/**
 * The file store against the storage contract (`src/server/storage/
 * contract.ts`): blobs published only when finished and under their sha256,
 * checksum and size refusals, ranges, paged listings; documents listed in
 * pages; metrics read by range and bounded per model.
 *
 * @module
 */

import { describe, test } from "node:test";
import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { createHash, randomFillSync } from "node:crypto";
import { mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_EPOCHS_PER_MODEL } from "../src/protocol/metrics_rules.ts";
import {
  BlobChecksumError,
  ModelLimitError,
} from "../src/server/storage/contract.ts";
import { FileBlobStore } from "../src/server/storage/files/blobs.ts";
import { FileModelStore } from "../src/server/storage/files/models.ts";
import { STORED_CONFIG as CONFIG } from "./support/server.ts";

function random(size: number): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(size);
  randomFillSync(data);
  return data;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "hub-files-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function keys(blobs: FileBlobStore, prefix: string): Promise<string[]> {
  return (await blobs.list(prefix, { limit: 1000 })).items.map((b) => b.key);
}

describe("file blob store", () => {
  test("a blob is invisible while written and published under <prefix><sha256> by finish()", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      const data = random(3 * 1024 * 1024 + 17);
      const writer = await blobs.createWriter("model1/");
      for (let i = 0; i < data.length; i += 65_536) {
        await writer.write(data.subarray(i, i + 65_536));
      }
      assertEquals(await keys(blobs, "model1/"), []);
      const blob = await writer.finish(sha256(data));
      assertEquals(blob, {
        key: `model1/${sha256(data)}`,
        sha256: sha256(data),
        size: data.length,
      });
      assertEquals(await keys(blobs, "model1/"), [blob.key]);
      const read = await blobs.read(blob.key);
      assert(read !== undefined);
      assertEquals(read.size, data.length);
      assertEquals(
        sha256(new Uint8Array(await new Response(read.body).arrayBuffer())),
        sha256(data),
      );
      assertEquals(await readdir(join(dir, ".partial")), []);
    });
  });

  test("a checksum mismatch, a size over maxBytes and abort() publish nothing", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      const data = random(10_000);
      const mismatch = await blobs.createWriter("m/");
      await mismatch.write(data);
      const error = await assertRejects(
        () => mismatch.finish("0".repeat(64)),
        BlobChecksumError,
      );
      assertEquals(error.actual, sha256(data));
      const small = await blobs.createWriter("m/", { maxBytes: 100 });
      await assertRejects(() => small.write(data), RangeError);
      await small.abort();
      const aborted = await blobs.createWriter("m/");
      await aborted.write(data);
      await aborted.abort();
      await aborted.abort(); // twice is harmless
      assertEquals(await keys(blobs, ""), []);
      assertEquals(await readdir(join(dir, ".partial")), []);
    });
  });

  test("the same bytes written twice share one key", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      const data = random(5000);
      const published: string[] = [];
      for (let i = 0; i < 2; i++) {
        const writer = await blobs.createWriter("m/");
        await writer.write(data);
        published.push((await writer.finish()).key);
      }
      assertEquals(published[0], published[1]);
      assertEquals(await keys(blobs, "m/"), [published[0]!]);
    });
  });

  test("read() with a range streams only those bytes and reports the whole size", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      const data = random(2_500_000);
      const writer = await blobs.createWriter("m/");
      await writer.write(data);
      const { key } = await writer.finish();
      const read = await blobs.read(key, {
        range: { start: 1_000_000, end: 2_100_000 },
      });
      assert(read !== undefined);
      assertEquals(read.size, data.length);
      assertEquals(read.range, { start: 1_000_000, end: 2_100_000 });
      const bytes = new Uint8Array(await new Response(read.body).arrayBuffer());
      assertEquals(sha256(bytes), sha256(data.subarray(1_000_000, 2_100_001)));
      await assertRejects(
        () => blobs.read(key, { range: { start: 0, end: data.length } }),
        RangeError,
      );
      assertEquals(await blobs.read("m/missing"), undefined);
    });
  });

  test("list() pages in ascending key order and delete() removes a key", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      const expected: string[] = [];
      for (const prefix of ["a/", "b/"]) {
        for (let i = 0; i < 5; i++) {
          const writer = await blobs.createWriter(prefix);
          await writer.write(random(100));
          expected.push((await writer.finish()).key);
        }
      }
      expected.sort();
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await blobs.list("", { limit: 3, cursor });
        assert(page.items.length <= 3);
        seen.push(...page.items.map((b) => b.key));
        cursor = page.next;
      } while (cursor !== undefined);
      assertEquals(seen, expected);
      assertEquals(
        await keys(blobs, "b/"),
        expected.filter((k) => k.startsWith("b/")),
      );
      await blobs.delete(expected[0]!);
      await blobs.delete(expected[0]!); // a missing key is fine
      assertEquals((await keys(blobs, "")).length, 9);
    });
  });

  test("opening a shared directory keeps another process's upload in progress and deletes stale ones", async () => {
    await withDir(async (dir) => {
      const first = await FileBlobStore.open(dir);
      const data = random(10_000);
      const writer = await first.createWriter("m/");
      await writer.write(data);
      const stale = join(dir, ".partial", "left-by-a-dead-process");
      await writeFile(stale, "old");
      const old = new Date(Date.now() - 2 * 3_600_000);
      await utimes(stale, old, old);
      // A second server process on the same volume starts.
      await FileBlobStore.open(dir, { staleAfterMs: 3_600_000 });
      assertEquals((await readdir(join(dir, ".partial"))).length, 1);
      const blob = await writer.finish(sha256(data));
      assertEquals(await keys(first, "m/"), [blob.key]);
      // The embedded store owns its directory: every leftover goes.
      const other = await first.createWriter("m/");
      await other.write(data);
      await FileBlobStore.open(dir);
      assertEquals(await readdir(join(dir, ".partial")), []);
      await other.abort(); // closes its handle; its file is already gone
    });
  });

  test("bad keys and prefixes are refused with a TypeError", async () => {
    await withDir(async (dir) => {
      const blobs = await FileBlobStore.open(dir);
      for (const key of ["../x", "a/../../x", ".partial/x", "a//b", "a b"]) {
        assertThrows(() => blobs.pathOf(key), TypeError);
      }
      await assertRejects(() => blobs.createWriter("../"), TypeError);
    });
  });
});

describe("file model store", () => {
  test("listIds() pages in ascending order without soft-deleted models", async () => {
    await withDir(async (dir) => {
      const store = await FileModelStore.open(dir);
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const record = await store.create({
          name: `m${i}`,
          dataset: "",
          architecture: "yolov8n",
          config: CONFIG,
        }, i);
        ids.push(record.id);
      }
      assert(await store.delete(ids[3]!, false, 10));
      const live = ids.filter((_, i) => i !== 3).sort();
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listIds({ limit: 2, cursor });
        seen.push(...page.items);
        cursor = page.next;
      } while (cursor !== undefined);
      assertEquals(seen, live);
    });
  });

  test("listMetrics() reads a range of epochs, and a model past its epoch bound refuses more", async () => {
    await withDir(async (dir) => {
      const store = await FileModelStore.open(dir);
      const { id } = await store.create({
        name: "m",
        dataset: "",
        architecture: "yolov8n",
        config: CONFIG,
      }, 0);
      const batch = new Map<number, Record<string, number>>();
      for (let epoch = 0; epoch < MAX_EPOCHS_PER_MODEL; epoch++) {
        batch.set(epoch, { loss: epoch });
      }
      await store.upsertMetrics(id, batch, 1);
      const range = await store.listMetrics(id, { afterEpoch: 4, limit: 3 });
      assertEquals(range?.map((e) => e.epoch), [5, 6, 7]);
      await assertRejects(
        () =>
          store.upsertMetrics(
            id,
            new Map([[MAX_EPOCHS_PER_MODEL, { loss: 1 }]]),
            2,
          ),
        ModelLimitError,
      );
      // A stored epoch may still be replaced.
      await store.upsertMetrics(id, new Map([[0, { loss: -1 }]]), 3);
      assertEquals(await store.epochCount(id), MAX_EPOCHS_PER_MODEL);
      assertEquals(
        (await store.listMetrics(id, { limit: 1 }))?.[0]?.metrics.loss,
        -1,
      );
    });
  });
});
