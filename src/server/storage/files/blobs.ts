/**
 * Weights as files: the {@linkcode BlobStore} of the embedded HUB.
 *
 * Layout under the store's root:
 *
 * ```
 * <model id>/<sha256>   one immutable file per stored content (its key)
 * .partial/             writers in progress (emptied when the store opens)
 * ```
 *
 * A writer streams into `.partial/<random>`, hashing in the same pass (bytes
 * are batched to 1 MiB and written with `writeSync`, as the multipart parser
 * measured fastest on both runtimes). `finish()` fsyncs the file, renames it
 * to its content address and fsyncs the directory (and, when the directory
 * was just created, its parent), so a published key survives a crash and
 * holds all of its bytes or does not exist.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  rm,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import type {
  BlobInfo,
  BlobRead,
  BlobReadOptions,
  BlobStore,
  BlobWriter,
  BlobWriterOptions,
  CallOptions,
  ListOptions,
  Page,
} from "../contract.ts";
import { createFileStream } from "./fs.ts";
import { FileBlobWriter } from "./blob_writer.ts";

const PARTIAL_DIR = ".partial";
const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

function isNotFound(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ENOENT";
}

/**
 * Checks a key or prefix: `/`-separated segments of `[A-Za-z0-9._-]`, none
 * starting with a dot (which also rules out `..` and the partial directory).
 */
function checkKey(key: string, what: "key" | "prefix"): void {
  const segments = key.split("/");
  if (what === "prefix" && segments.at(-1) === "") segments.pop();
  if (
    (what === "key" && segments.length === 0) ||
    !segments.every((segment) => SEGMENT.test(segment))
  ) {
    throw new TypeError(
      `Cannot use ${
        JSON.stringify(key)
      } as a blob ${what}: use /-separated segments of [A-Za-z0-9._-] not starting with a dot`,
    );
  }
}

/**
 * Blobs as files under one directory.
 *
 * @example Store and read back a blob
 * ```ts
 * import { FileBlobStore } from "./blobs.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const root = await mkdtemp(join(tmpdir(), "blobs-"));
 * const blobs = await FileBlobStore.open(root);
 * const writer = await blobs.createWriter("model1/");
 * await writer.write(new TextEncoder().encode("weights"));
 * const blob = await writer.finish();
 * const read = await blobs.read(blob.key);
 * console.log(await new Response(read?.body).text()); // "weights"
 * await rm(root, { recursive: true, force: true });
 * ```
 */
export class FileBlobStore implements BlobStore {
  /** The directory holding the blobs. */
  readonly root: string;
  readonly kind = "files";
  #partial: string;

  private constructor(root: string) {
    this.root = root;
    this.#partial = join(root, PARTIAL_DIR);
  }

  /**
   * Opens (and creates) a blob directory; writers a crash interrupted are
   * deleted.
   *
   * @param root The directory.
   * @param options `staleAfterMs`: when several processes share the
   * directory (a shared volume), only partial files untouched for this long
   * are deleted, so that one process opening does not delete the uploads
   * another is receiving. Default `0`: this process owns the directory and
   * every partial file is a leftover.
   * @returns The store.
   */
  static async open(
    root: string,
    options: { staleAfterMs?: number | undefined } = {},
  ): Promise<FileBlobStore> {
    const { staleAfterMs = 0 } = options;
    const store = new FileBlobStore(root);
    await mkdir(root, { recursive: true });
    if (staleAfterMs <= 0) {
      await rm(store.#partial, { recursive: true, force: true });
    } else {
      const cutoff = Date.now() - staleAfterMs;
      let names: string[] = [];
      try {
        names = await readdir(store.#partial);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      for (const name of names) {
        const path = join(store.#partial, name);
        const info = await stat(path).catch(() => undefined);
        if (info !== undefined && info.mtimeMs < cutoff) {
          await rm(path, { force: true, recursive: true });
        }
      }
    }
    await mkdir(store.#partial, { recursive: true });
    return store;
  }

  /**
   * The file of a key (checked).
   *
   * @param key The blob's key.
   * @returns The absolute path.
   */
  pathOf(key: string): string {
    checkKey(key, "key");
    return join(this.root, ...key.split("/"));
  }

  /**
   * Starts a blob (see {@linkcode BlobStore.createWriter}).
   *
   * @param prefix Key prefix, e.g. `<model id>/`.
   * @param options Size limit, signal.
   * @returns The writer; its `writeSync` skips the promise per chunk.
   */
  async createWriter(
    prefix: string,
    options: BlobWriterOptions = {},
  ): Promise<BlobWriter & { writeSync(data: Uint8Array): void }> {
    const { maxBytes = Infinity, signal } = options;
    signal?.throwIfAborted();
    checkKey(prefix === "" ? "x" : prefix, "prefix");
    const path = join(this.#partial, randomBytes(12).toString("hex"));
    const handle = await open(path, "wx");
    const writer = new FileBlobWriter(this, prefix, path, handle, maxBytes);
    if (signal !== undefined) {
      const onAbort = (): void => void writer.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      writer.onClose = () => signal.removeEventListener("abort", onAbort);
    }
    return writer;
  }

  /**
   * Opens a blob (see {@linkcode BlobStore.read}).
   *
   * @param key The blob's key.
   * @param options Byte range, signal.
   * @returns The read, or `undefined` when the key does not exist.
   */
  async read(
    key: string,
    options: BlobReadOptions = {},
  ): Promise<BlobRead | undefined> {
    options.signal?.throwIfAborted();
    const path = this.pathOf(key);
    let handle: FileHandle;
    try {
      handle = await open(path, "r");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    const { size } = await handle.stat();
    const range = options.range ?? { start: 0, end: size - 1 };
    if (
      range.start < 0 || range.start > range.end + 1 || range.end >= size
    ) {
      await handle.close();
      throw new RangeError(
        `Cannot read bytes ${range.start}-${range.end} of a ${size}-byte blob`,
      );
    }
    return {
      body: createFileStream(handle, range.start, range.end + 1),
      size,
      range,
      localPath: path,
    };
  }

  /**
   * Describes a blob (see {@linkcode BlobStore.stat}).
   *
   * @param key The blob's key.
   * @returns Size and time, or `undefined`.
   */
  async stat(
    key: string,
    _options?: CallOptions,
  ): Promise<BlobInfo | undefined> {
    try {
      const info = await stat(this.pathOf(key));
      return { key, size: info.size, modifiedAt: info.mtimeMs };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /**
   * Lists blobs under a prefix (see {@linkcode BlobStore.list}). The cursor
   * is the last key of the previous page.
   *
   * @param prefix Key prefix.
   * @param options Page size, cursor.
   * @returns One page.
   */
  async list(
    prefix: string,
    options: ListOptions = {},
  ): Promise<Page<BlobInfo>> {
    const { limit = 100, cursor } = options;
    options.signal?.throwIfAborted();
    if (prefix !== "") checkKey(prefix, "prefix");
    // Walk from the deepest directory the prefix names fully.
    const slash = prefix.lastIndexOf("/");
    const base = prefix.slice(0, slash + 1);
    const keys: string[] = [];
    const walk = async (dirKey: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(join(this.root, ...dirKey.split("/")), {
          withFileTypes: true,
        });
      } catch (error) {
        if (isNotFound(error)) return;
        throw error;
      }
      for (const entry of entries) {
        if (entry.name.startsWith(".")) continue;
        const key = `${dirKey}${entry.name}`;
        if (entry.isDirectory()) {
          if (
            `${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)
          ) await walk(`${key}/`);
        } else if (key.startsWith(prefix)) keys.push(key);
      }
    };
    await walk(base);
    keys.sort();
    const start = cursor === undefined
      ? 0
      : keys.findIndex((key) => key > cursor);
    const chosen = start === -1 ? [] : keys.slice(start, start + limit);
    const items: BlobInfo[] = [];
    for (const key of chosen) {
      const info = await this.stat(key);
      if (info !== undefined) items.push(info);
    }
    const more = start !== -1 && start + limit < keys.length;
    return { items, next: more ? chosen.at(-1) : undefined };
  }

  /**
   * Deletes a blob, and its directory once empty (see
   * {@linkcode BlobStore.delete}).
   *
   * @param key The blob's key.
   * @returns When the blob is gone.
   */
  async delete(key: string, _options?: CallOptions): Promise<void> {
    const path = this.pathOf(key);
    try {
      await unlink(path);
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    const dir = dirname(path);
    if (dir !== this.root) {
      await rmdir(dir).catch(() => {}); // only when empty
    }
  }

  /** Nothing to release. @returns At once. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
