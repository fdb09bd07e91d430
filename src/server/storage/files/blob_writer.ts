/**
 * One blob being written to the file store (`blobs.ts`, whose module
 * documentation describes the layout): bytes batched to 1 MiB, hashed and
 * written with `writeSync`, synced in the background while the upload goes
 * on, and published by `finish()` with a rename and directory syncs.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { writeSync } from "node:fs";
import { type FileHandle, mkdir, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import {
  BlobChecksumError,
  type BlobWriter,
  type StoredBlob,
} from "../contract.ts";
import { crashPoint } from "../crash_point.ts";
import { syncDir } from "./fs.ts";
import type { FileBlobStore } from "./blobs.ts";

const BATCH_BYTES = 1 << 20;
/** Chunks this large are hashed and written as they are, not batched. */
const DIRECT_BYTES = 256 << 10;
/**
 * Bytes after which a background `fdatasync` starts while the upload goes
 * on. Measured here: syncing a 1 GiB file at its end took ~260 ms; with a
 * sync started every 32 MiB during the writes, the last one took ~13 ms, so
 * the disk's writeback overlaps the network instead of following it.
 */
const SYNC_EVERY_BYTES = 32 << 20;

/**
 * A writer into `.partial/`, published by a rename to its content address;
 * {@linkcode FileBlobStore.createWriter} makes it.
 */
export class FileBlobWriter implements BlobWriter {
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
    if (data.length >= DIRECT_BYTES) {
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
