/**
 * The storage contract (src/server/storage/contract.ts), checked on every
 * implementation with the same tests: model documents + metrics on files
 * and on PostgreSQL, weights on files and on S3 (real servers; see
 * tests/support/services.ts).
 */

import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BlobChecksumError,
  type BlobStore,
  ModelLimitError,
  type ModelStore,
} from "../src/server/storage/contract.ts";
import {
  MAX_EPOCHS_PER_MODEL,
  MAX_METRIC_NAMES_PER_MODEL,
} from "../src/protocol/metrics_rules.ts";
import { FileBlobStore } from "../src/server/storage/files/blobs.ts";
import { FileModelStore } from "../src/server/storage/files/models.ts";
import { openPostgresModelStore } from "../src/server/storage/postgres/store.ts";
import { openS3BlobStore } from "../src/server/storage/s3/blobs.ts";
import {
  createTestDatabase,
  haveServices,
  s3Config,
} from "./support/services.ts";
import { NEW_MODEL as init } from "./support/server.ts";

interface Opened<T> {
  store: T;
  dispose(): Promise<void>;
}

type Factory<T> = () => Promise<Opened<T>>;

async function tempDir(): Promise<string> {
  return await mkdtemp(join(tmpdir(), "hub-contract-"));
}

const modelStores: [string, Factory<ModelStore>][] = [[
  "files",
  async () => {
    const dir = await tempDir();
    const store = await FileModelStore.open(dir);
    return {
      store,
      async dispose() {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
]];
if (haveServices("Storage contract on PostgreSQL", ["postgres"])) {
  modelStores.push(["postgres", async () => {
    const db = await createTestDatabase();
    const store = await openPostgresModelStore(db.url);
    return {
      store,
      async dispose() {
        await store.close();
        await db.drop();
      },
    };
  }]);
}

const blobStores: [string, Factory<BlobStore>][] = [[
  "files",
  async () => {
    const dir = await tempDir();
    const store = await FileBlobStore.open(dir);
    return {
      store,
      async dispose() {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
]];
if (haveServices("Storage contract on S3", ["s3"])) {
  blobStores.push(["s3", async () => {
    const store = await openS3BlobStore(s3Config()!, {
      partSize: 5 * 1024 * 1024,
    });
    return {
      store,
      async dispose() {
        for (;;) {
          const page = await store.list("");
          for (const item of page.items) await store.delete(item.key);
          if (page.next === undefined) break;
        }
        await store.close();
      },
    };
  }]);
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

for (const [name, open] of modelStores) {
  describe(`ModelStore contract: ${name}`, () => {
    let opened: Opened<ModelStore>;
    let store: ModelStore;

    before(async () => {
      opened = await open();
      store = opened.store;
    });
    after(async () => await opened.dispose());

    test("create() makes a new model that get() returns; unknown ids are undefined", async () => {
      const record = await store.create(init, 1000);
      assert(/^[A-Za-z0-9]{20}$/.test(record.id));
      assertEquals(record.status, "new");
      assertEquals(record.createdAt, 1000);
      assertEquals(await store.get(record.id), record);
      assertEquals(await store.get("AAAAAAAAAAAAAAAAAAAA"), undefined);
      assertEquals(await store.get("../../etc"), undefined);
    });

    test("concurrent update()s of one model keep every change", async () => {
      const { id } = await store.create(init, 1000);
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.update(id, (r) => {
            r.extra[`k${i}`] = i;
          }, 2000 + i)),
      );
      const record = await store.get(id);
      assertEquals(Object.keys(record!.extra).length, 20);
    });

    test("an update() whose change throws writes nothing", async () => {
      const { id } = await store.create(init, 1000);
      await assertRejects(
        () =>
          store.update(id, (r) => {
            r.name = "changed";
            throw new RangeError("no");
          }, 2000),
        RangeError,
      );
      assertEquals((await store.get(id))?.name, init.name);
      assertEquals(
        await store.update("AAAAAAAAAAAAAAAAAAAA", () => 1, 1),
        undefined,
      );
    });

    test("upsertMetrics() replaces a re-sent epoch and starts training", async () => {
      const { id } = await store.create(init, 1000);
      const after = await store.upsertMetrics(
        id,
        new Map([[0, { loss: 2 }], [1, { loss: 1.5 }]]),
        2000,
      );
      assertEquals(after?.status, "training");
      await store.upsertMetrics(
        id,
        new Map([[1, { loss: 1, map: null }]]),
        3000,
      );
      assertEquals(await store.listMetrics(id), [
        { epoch: 0, metrics: { loss: 2 } },
        { epoch: 1, metrics: { loss: 1, map: null } },
      ]);
      assertEquals(
        await store.listMetrics(id, { afterEpoch: 0, limit: 5 }),
        [{ epoch: 1, metrics: { loss: 1, map: null } }],
      );
      assertEquals(await store.epochCount(id), 2);
      assertEquals(
        await store.upsertMetrics("AAAAAAAAAAAAAAAAAAAA", new Map(), 1),
        undefined,
      );
      assertEquals(await store.listMetrics("AAAAAAAAAAAAAAAAAAAA"), undefined);
    });

    test("delete(): soft hides the model but get({ includeDeleted }) sees it; hard removes it", async () => {
      const soft = await store.create(init, 1000);
      assertEquals(await store.delete(soft.id, false, 2000), true);
      assertEquals(await store.get(soft.id), undefined);
      assertEquals(
        (await store.get(soft.id, { includeDeleted: true }))?.id,
        soft.id,
      );
      assertEquals(await store.delete(soft.id, false, 3000), false);
      const hard = await store.create(init, 1000);
      await store.upsertMetrics(hard.id, new Map([[0, { loss: 1 }]]), 1500);
      assertEquals(await store.delete(hard.id, true, 2000), true);
      assertEquals(
        await store.get(hard.id, { includeDeleted: true }),
        undefined,
      );
      assertEquals(await store.epochCount(hard.id), 0);
    });

    test("upsertMetrics() refuses a model's epoch beyond the bound, storing nothing", async () => {
      const model = await store.create(init, 1000);
      const full = new Map<number, { loss: number }>();
      for (let e = 0; e < MAX_EPOCHS_PER_MODEL; e++) full.set(e, { loss: e });
      assert(await store.upsertMetrics(model.id, full, 1500));
      const error = await assertRejects(
        () =>
          store.upsertMetrics(
            model.id,
            new Map([[1, { loss: 0 }], [MAX_EPOCHS_PER_MODEL, { loss: 0 }]]),
            2000,
          ),
        ModelLimitError,
      );
      assert(
        error.message.includes(`more than ${MAX_EPOCHS_PER_MODEL} epochs`),
      );
      assertEquals(await store.epochCount(model.id), MAX_EPOCHS_PER_MODEL);
      const kept = await store.listMetrics(model.id, {
        afterEpoch: 0,
        limit: 1,
      });
      assertEquals(kept, [{ epoch: 1, metrics: { loss: 1 } }]);
      // Re-sending a stored epoch adds none, so it is still accepted.
      assert(
        await store.upsertMetrics(model.id, new Map([[0, { loss: 9 }]]), 2500),
      );
    });

    test("upsertMetrics() refuses more distinct metric names than the bound, storing nothing", async () => {
      const model = await store.create(init, 1000);
      const half = MAX_METRIC_NAMES_PER_MODEL / 2;
      const names = (from: number, count: number) =>
        Object.fromEntries(
          Array.from({ length: count }, (_, i) => [`m${from + i}`, i]),
        );
      await store.upsertMetrics(model.id, new Map([[0, names(0, half)]]), 1500);
      await store.upsertMetrics(
        model.id,
        new Map([[1, names(half, half)]]),
        1600,
      );
      const error = await assertRejects(
        () =>
          store.upsertMetrics(
            model.id,
            new Map([[2, { ...names(0, 3), extra: 1 }]]),
            2000,
          ),
        ModelLimitError,
      );
      assert(
        error.message.includes(
          `more than ${MAX_METRIC_NAMES_PER_MODEL} distinct metric names`,
        ),
      );
      assertEquals(await store.epochCount(model.id), 2);
      // Names the model already holds are accepted in any epoch.
      assert(
        await store.upsertMetrics(model.id, new Map([[2, names(7, 9)]]), 2500),
      );
      assertEquals(await store.epochCount(model.id), 3);
    });

    test("listIds() pages through live models in ascending order", async () => {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listIds({ limit: 2, cursor });
        assert(page.items.length <= 2);
        seen.push(...page.items);
        cursor = page.next;
      } while (cursor !== undefined);
      assertEquals(seen, [...seen].sort());
      assertEquals(new Set(seen).size, seen.length);
      for (const id of seen) assert(await store.get(id) !== undefined);
    });
  });
}

for (const [name, open] of blobStores) {
  describe(`BlobStore contract: ${name}`, () => {
    let opened: Opened<BlobStore>;
    let store: BlobStore;

    before(async () => {
      opened = await open();
      store = opened.store;
    });
    after(async () => await opened.dispose());

    test("finish() publishes the bytes under <prefix><sha256>, nothing before", async () => {
      const bytes = randomBytes(7 * 1024 * 1024 + 3);
      const writer = await store.createWriter("modelA/");
      for (let i = 0; i < bytes.byteLength; i += 1024 * 1024) {
        await writer.write(bytes.subarray(i, i + 1024 * 1024));
      }
      assertEquals(writer.size, bytes.byteLength);
      assertEquals((await store.list("modelA/")).items, []);
      const blob = await writer.finish(sha256(bytes));
      assertEquals(blob.sha256, sha256(bytes));
      assert(blob.key.startsWith("modelA/"));
      if (name === "files") assertEquals(blob.key, `modelA/${sha256(bytes)}`);
      assertEquals((await store.stat(blob.key))?.size, bytes.byteLength);
      const read = await store.read(blob.key);
      assert(read !== undefined);
      assertEquals(read.size, bytes.byteLength);
      const back = new Uint8Array(await new Response(read.body).arrayBuffer());
      assertEquals(sha256(back), sha256(bytes));
    });

    test("read() with a range returns those bytes only", async () => {
      const bytes = randomBytes(100_000);
      const writer = await store.createWriter("modelB/");
      await writer.write(bytes);
      const blob = await writer.finish();
      const read = await store.read(blob.key, {
        range: { start: 10, end: 19 },
      });
      assertEquals(read?.range, { start: 10, end: 19 });
      assertEquals(read?.size, 100_000);
      assertEquals(
        new Uint8Array(await new Response(read!.body).arrayBuffer()),
        new Uint8Array(bytes.subarray(10, 20)),
      );
      assertEquals(await store.read("modelB/missing"), undefined);
      assertEquals(await store.stat("modelB/missing"), undefined);
    });

    test("a checksum mismatch rejects and publishes nothing; abort() drops the bytes", async () => {
      const writer = await store.createWriter("modelC/");
      await writer.write(randomBytes(1000));
      await assertRejects(
        () => writer.finish("0".repeat(64)),
        BlobChecksumError,
      );
      await writer.abort();
      const other = await store.createWriter("modelC/");
      await other.write(randomBytes(6 * 1024 * 1024));
      await other.abort();
      await other.abort();
      assertEquals((await store.list("modelC/")).items, []);
    });

    test("delete() removes a blob; deleting a missing key succeeds", async () => {
      const writer = await store.createWriter("modelD/");
      await writer.write(randomBytes(10));
      const blob = await writer.finish();
      await store.delete(blob.key);
      await store.delete(blob.key);
      assertEquals(await store.stat(blob.key), undefined);
    });
  });
}
