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

import { Buffer } from "node:buffer";
import { createHash, type Hash, randomBytes } from "node:crypto";
import { writeSync } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  BlobChecksumError,
  type BlobInfo,
  type BlobRead,
  type BlobReadOptions,
  type BlobStore,
  type BlobWriter,
  type BlobWriterOptions,
  type CallOptions,
  type ListOptions,
  type Page,
  type StoredBlob,
} from "../contract.ts";
import { crashPoint } from "../crash_point.ts";
import { createFileStream, syncDir } from "./fs.ts";

const BATCH_BYTES = 1 << 20;
/**
 * Bytes after which a background `fdatasync` starts while the upload goes
 * on. Measured here: syncing a 1 GiB file at its end took ~260 ms; with a
 * sync started every 32 MiB during the writes, the last one took ~13 ms, so
 * the disk's writeback overlaps the network instead of following it.
 */
const SYNC_EVERY_BYTES = 32 << 20;
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

/** A writer into `.partial/`, published by a rename. */
class FileBlobWriter implements BlobWriter {
  #store: FileBlobStore;
  #prefix: string;
  #path: string;
  #handle: FileHandle | undefined;
  #fd: number;
  #hash: Hash = createHash("sha256");
  #size = 0;
  #maxBytes: number;
  #buffer: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
  #length = 0;
  #closed = false;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  #syncError: unknown;
  /** Called once the writer is finished or aborted (drops listeners). */
  onClose: (() => void) | undefined;

  constructor(
    store: FileBlobStore,
    prefix: string,
    path: string,
    handle: FileHandle,
    maxBytes: number,
  ) {
    this.#store = store;
    this.#prefix = prefix;
    this.#path = path;
    this.#handle = handle;
    this.#fd = handle.fd;
    this.#maxBytes = maxBytes;
  }

  get size(): number {
    return this.#size;
  }

  write(chunk: Uint8Array): Promise<void> {
    try {
      this.writeSync(chunk);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * {@linkcode write} without the promise, for the multipart parser's hot
   * loop. Throws what `write` would reject with.
   */
  writeSync(data: Uint8Array): void {
    if (this.#closed) {
      throw new Error("Cannot write to a blob writer that is closed");
    }
    if (data.length === 0) return;
    if (this.#size + data.length > this.#maxBytes) {
      throw new RangeError(
        `Cannot store the blob as it exceeds ${this.#maxBytes} bytes`,
      );
    }
    this.#size += data.length;
    if (data.length >= BATCH_BYTES) {
      this.#flush();
      this.#writeAll(data);
      return;
    }
    let offset = 0;
    while (offset < data.length) {
      const n = Math.min(BATCH_BYTES - this.#length, data.length - offset);
      this.#buffer.set(data.subarray(offset, offset + n), this.#length);
      this.#length += n;
      offset += n;
      if (this.#length === BATCH_BYTES) this.#flush();
    }
  }

  async finish(expectedSha256?: string): Promise<StoredBlob> {
    if (this.#closed) {
      throw new Error("Cannot finish a blob writer that is closed");
    }
    let published = false;
    try {
      this.#flush();
      const sha256 = this.#hash.digest("hex");
      if (expectedSha256 !== undefined && expectedSha256 !== sha256) {
        throw new BlobChecksumError(sha256, expectedSha256);
      }
      const handle = this.#handle!;
      await this.#syncing;
      if (this.#syncError !== undefined) throw this.#syncError;
      await handle.datasync();
      await handle.close();
      this.#handle = undefined;
      this.#closed = true;
      await crashPoint("blob-synced");
      const key = `${this.#prefix}${sha256}`;
      const target = this.#store.pathOf(key);
      const dir = dirname(target);
      const created = await mkdir(dir, { recursive: true });
      // Same content under the same name: the rename replaces identical
      // bytes and refreshes the time (what a collector's grace looks at).
      await rename(this.#path, target);
      published = true;
      await crashPoint("blob-renamed");
      await syncDir(dir);
      if (created !== undefined) {
        // Directories created just now: make their entries durable too.
        for (
          let d = dirname(dir);
          d.length >= this.#store.root.length;
          d = dirname(d)
        ) {
          await syncDir(d);
          if (d === this.#store.root || d === dirname(d)) break;
        }
      }
      await crashPoint("blob-published");
      this.onClose?.();
      return { key, sha256, size: this.#size };
    } catch (error) {
      if (!published) await this.abort();
      throw error;
    }
  }

  async abort(): Promise<void> {
    this.#closed = true;
    this.onClose?.();
    await this.#syncing;
    const handle = this.#handle;
    this.#handle = undefined;
    try {
      await handle?.close();
    } catch {
      // Already closed or broken: the file is deleted below.
    }
    try {
      await unlink(this.#path);
    } catch {
      // Already gone (published or never created).
    }
  }

  #flush(): void {
    if (this.#length === 0) return;
    this.#writeAll(this.#buffer.subarray(0, this.#length));
    this.#length = 0;
  }

  #writeAll(data: Uint8Array): void {
    this.#hash.update(data);
    let offset = 0;
    while (offset < data.length) {
      const written = writeSync(
        this.#fd,
        data,
        offset,
        data.length - offset,
      );
      if (written <= 0) throw new Error("Cannot write the blob to disk");
      offset += written;
    }
    this.#unsynced += data.length;
    if (this.#unsynced >= SYNC_EVERY_BYTES && this.#syncing === undefined) {
      this.#unsynced = 0;
      const handle = this.#handle;
      if (handle === undefined) return;
      this.#syncing = handle.datasync().catch((error) => {
        this.#syncError ??= error;
      }).finally(() => {
        this.#syncing = undefined;
      });
    }
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
