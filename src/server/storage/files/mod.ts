/**
 * The embedded storage of the local HUB: documents, metrics and weights as
 * files under one data directory.
 *
 * ```
 * models/<id>/model.json, metrics.jsonl   FileModelStore
 * weights/<id>/<sha256>                   FileBlobStore (keys `<id>/<sha256>`)
 * ```
 *
 * Data directories of earlier versions kept weights as `models/<id>/last.pt`
 * and `best.pt` (and `*.old` files moved aside by an interrupted commit).
 * Opening such a directory moves the file whose sha256 is the one the
 * document records to its content address and records the key; files that
 * match no document are deleted. A document whose file is missing keeps its
 * weights entry without a key (served as not found).
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rename, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { HubStorage } from "../contract.ts";
import type { WeightsKind } from "../records.ts";
import { FileBlobStore } from "./blobs.ts";
import { syncDir } from "./fs.ts";
import { FileModelStore } from "./models.ts";

export { FileBlobStore } from "./blobs.ts";
export { FileModelStore } from "./models.ts";

/** The file store's two halves, typed as themselves. */
export interface FileStorage extends HubStorage {
  /** Documents and metrics under `<dataDir>/models`. */
  models: FileModelStore;
  /** Weights under `<dataDir>/weights`. */
  weights: FileBlobStore;
}

/**
 * Opens (and creates) the file store of a data directory, migrating weights
 * of the earlier layout.
 *
 * @param dataDir The data directory.
 * @returns Documents+metrics and weights, with no grace period for the
 * collector (one process owns the directory).
 */
export async function openFileStorage(dataDir: string): Promise<FileStorage> {
  const models = await FileModelStore.open(dataDir);
  const weights = await FileBlobStore.open(join(dataDir, "weights"));
  await migrateLegacyWeights(models, weights);
  return { models, weights, orphanGraceMs: 0 };
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Uint8Array);
  }
  return hash.digest("hex");
}

const LEGACY = /^(last|best)\.pt(\.[0-9a-f]+\.old)?$/;

/** Moves `models/<id>/{last,best}.pt[.*.old]` to content addresses. */
async function migrateLegacyWeights(
  models: FileModelStore,
  weights: FileBlobStore,
): Promise<void> {
  let ids: string[];
  try {
    ids = await readdir(join(models.dataDir, "models"));
  } catch {
    return;
  }
  for (const id of ids) {
    let dir: string;
    let files: string[];
    try {
      dir = models.modelDir(id);
      files = (await readdir(dir)).filter((file) => LEGACY.test(file));
    } catch {
      continue;
    }
    const record = await models.get(id, { includeDeleted: true });
    const keys: Partial<Record<WeightsKind, string>> = {};
    for (const kind of ["last", "best"] as const) {
      const info = record?.weights[kind];
      if (info === undefined || info.blob !== undefined) continue;
      const key = `${id}/${info.sha256}`;
      if (await weights.stat(key) !== undefined) {
        // Moved by a migration a crash interrupted before the document.
        keys[kind] = key;
        continue;
      }
      for (const file of files.filter((f) => f.startsWith(`${kind}.`))) {
        const path = join(dir, file);
        if (await sha256File(path) !== info.sha256) continue;
        const target = weights.pathOf(key);
        await mkdir(dirname(target), { recursive: true });
        await rename(path, target);
        await syncDir(dirname(target));
        await syncDir(weights.root);
        keys[kind] = key;
        break;
      }
    }
    if (Object.keys(keys).length > 0) {
      // The document is the commit point here too: until it names the
      // keys, the moved files are unreferenced blobs of a known content.
      await models.annotate(id, (r) => {
        for (const kind of ["last", "best"] as const) {
          const key = keys[kind];
          const info = r.weights[kind];
          if (key !== undefined && info !== undefined) info.blob = key;
        }
      });
    }
    if (files.length === 0) continue;
    for (const file of await readdir(dir)) {
      if (LEGACY.test(file)) await unlink(join(dir, file)).catch(() => {});
    }
    await syncDir(dir);
  }
}
