/**
 * The weights a commit replaced are deleted after the reply without listing
 * the weights store (one read of the document, one delete), unless the
 * document still names them; on the file store and on a real S3 server.
 */

import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HubStore, type WeightsKind } from "../src/server/store.ts";
import { openFileStorage } from "../src/server/storage/files/mod.ts";
import { openS3BlobStore } from "../src/server/storage/s3/blobs.ts";
import type {
  BlobStore,
  HubStorage,
  ListOptions,
} from "../src/server/storage/contract.ts";
import { haveServices, s3Config } from "./support/services.ts";
import { NEW_MODEL } from "./support/server.ts";
import { waitUntil } from "./support/common.ts";

const MiB = 1024 * 1024;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A weights store that counts the listings asked of it. */
interface CountedBlobStore extends BlobStore {
  /** `list()` calls so far. */
  lists: number;
}

/** Wraps a real blob store, counting `list()` and passing everything on. */
function countLists(inner: BlobStore): CountedBlobStore {
  const counted: CountedBlobStore = {
    kind: inner.kind,
    lists: 0,
    createWriter: (prefix, options) => inner.createWriter(prefix, options),
    read: (key, options) => inner.read(key, options),
    stat: (key, options) => inner.stat(key, options),
    list: (prefix: string, options?: ListOptions) => {
      counted.lists += 1;
      return inner.list(prefix, options);
    },
    delete: (key, options) => inner.delete(key, options),
    close: () => inner.close(),
  };
  return counted;
}

/** Uploads `bytes` as a model's `kind` weights; returns the blob's key. */
async function upload(
  store: HubStore,
  id: string,
  kind: WeightsKind,
  bytes: Uint8Array,
): Promise<string> {
  const writer = await store.createWeightsWriter(id);
  for (let at = 0; at < bytes.byteLength; at += MiB) {
    await writer.write(bytes.subarray(at, at + MiB));
  }
  const record = await store.commitWeights(
    id,
    kind,
    writer,
    sha256(bytes),
    { epoch: 1, uploadedAt: Date.now() },
    Date.now(),
  );
  const key = record?.weights[kind]?.blob;
  assert(key !== undefined, "the document names the upload");
  return key;
}

/** The tests every weights store passes; `open` gives a fresh store. */
function replacedWeightsTests(
  open: () => Promise<{ storage: HubStorage; weights: CountedBlobStore }>,
): void {
  let storage: HubStorage;
  let weights: CountedBlobStore;
  let store: HubStore;

  before(async () => {
    ({ storage, weights } = await open());
    store = await HubStore.open(storage);
  });

  after(async () => {
    await store.settled();
    await storage.models.close();
    await weights.close();
  });

  test("the blob a second upload replaced is gone, without listing the weights", async () => {
    const { id } = await store.create(NEW_MODEL, Date.now());
    const listed = weights.lists;
    const first = await upload(store, id, "last", randomBytes(200_000));
    const second = await upload(store, id, "last", randomBytes(200_000));
    await store.settled();
    assertEquals(await weights.stat(first), undefined, "the replaced blob");
    assert(await weights.stat(second) !== undefined, "the current blob");
    assertEquals(weights.lists, listed, "no listing per upload");
  });

  test("a replaced blob that the document still names stays", async () => {
    const { id } = await store.create(NEW_MODEL, Date.now());
    const shared = randomBytes(150_000);
    const key = await upload(store, id, "last", shared);
    assertEquals(await upload(store, id, "best", shared), key);
    await upload(store, id, "last", randomBytes(150_000));
    await store.settled();
    assert(await weights.stat(key) !== undefined, "best still names it");
    await upload(store, id, "best", randomBytes(150_000));
    await store.settled();
    assertEquals(await weights.stat(key), undefined, "named by none now");
  });
}

describe("replaced weights on the file store", () => {
  let dir: string;
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  replacedWeightsTests(async () => {
    dir = await mkdtemp(join(tmpdir(), "hub-collect-"));
    const storage = await openFileStorage(dir);
    const weights = countLists(storage.weights);
    return { storage: { ...storage, weights }, weights };
  });
});

describe("the periodic sweep on shared backends", () => {
  test("a blob no document names, published after the store opened, is collected by a later sweep; the named one stays", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hub-sweep-"));
    const files = await openFileStorage(dir);
    const stop = new AbortController();
    // A short grace period stands for the 10 minutes of shared backends.
    const storage = { ...files, orphanGraceMs: 300 };
    const store = await HubStore.open(storage, { signal: stop.signal });
    try {
      const { id } = await store.create(NEW_MODEL, Date.now());
      const named = await upload(store, id, "last", randomBytes(100_000));
      // What a process killed between publishing and committing leaves.
      const writer = await files.weights.createWriter(`${id}/`);
      await writer.write(randomBytes(100_000));
      const { key: orphan } = await writer.finish();
      await waitUntil(
        async () => await files.weights.stat(orphan) === undefined,
        "a sweep collects the unnamed blob",
      );
      await store.settled();
      assert(await files.weights.stat(named) !== undefined, "the named blob");
    } finally {
      stop.abort();
      await store.settled();
      await files.models.close();
      await files.weights.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

if (haveServices("Replaced weights on S3", ["s3"])) {
  describe("replaced weights on a real S3 server, one process", () => {
    let dir: string;
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });
    replacedWeightsTests(async () => {
      dir = await mkdtemp(join(tmpdir(), "hub-collect-s3-"));
      const files = await openFileStorage(dir);
      await files.weights.close();
      const weights = countLists(await openS3BlobStore(s3Config()!));
      return {
        storage: { models: files.models, weights, orphanGraceMs: 0 },
        weights,
      };
    });
  });

  describe("replaced weights on a real S3 server shared by processes", () => {
    let dir: string;
    let storage: HubStorage;
    let weights: CountedBlobStore;
    let store: HubStore;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "hub-collect-s3-"));
      const files = await openFileStorage(dir);
      await files.weights.close();
      weights = countLists(
        await openS3BlobStore(s3Config()!, { partSize: 5 * MiB }),
      );
      // The default grace period: another process may be committing.
      storage = { models: files.models, weights };
      store = await HubStore.open(storage);
    });

    after(async () => {
      await store.settled();
      await storage.models.close();
      await weights.close();
      await rm(dir, { recursive: true, force: true });
    });

    test("a replaced blob under a key of its own upload is gone at once", async () => {
      const { id } = await store.create(NEW_MODEL, Date.now());
      const listed = weights.lists;
      const big = randomBytes(6 * MiB);
      const first = await upload(store, id, "last", big);
      assertNotEquals(first, `${id}/${sha256(big)}`, "sent in parts");
      const second = await upload(store, id, "last", randomBytes(200_000));
      await store.settled();
      assertEquals(await weights.stat(first), undefined, "the replaced blob");
      assert(await weights.stat(second) !== undefined, "the current blob");
      assertEquals(weights.lists, listed, "no listing per upload");
    });

    test("a replaced blob at a content address younger than the grace period stays for a sweep", async () => {
      const { id } = await store.create(NEW_MODEL, Date.now());
      const bytes = randomBytes(200_000);
      const first = await upload(store, id, "last", bytes);
      assertEquals(first, `${id}/${sha256(bytes)}`);
      await upload(store, id, "last", randomBytes(200_000));
      await store.settled();
      assert(
        await weights.stat(first) !== undefined,
        "another process may be committing the same bytes",
      );
    });
  });
}
