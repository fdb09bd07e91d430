/**
 * File-system helpers of the file store: durable writes (fsync of file and
 * directory) and streamed reads.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { type FileHandle, open, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { crashPoint } from "../crash_point.ts";

/** Bytes read per chunk when streaming a file. */
const FILE_CHUNK_BYTES = 1 << 20;

/**
 * Makes a directory's entries (renames, creations, deletions) durable.
 * File systems that cannot fsync a directory (`EINVAL`, `EISDIR`, `EPERM`)
 * are tolerated: there a rename is as durable as the platform makes it.
 *
 * @param dir The directory.
 * @returns When the entries are on disk.
 */
export async function syncDir(dir: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(dir, "r");
  } catch (error) {
    if (isUnsupported(error)) return;
    throw error;
  }
  try {
    await handle.sync();
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  } finally {
    await handle.close();
  }
}

function isUnsupported(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "EINVAL" || code === "EISDIR" || code === "EPERM" ||
    code === "ENOTSUP";
}

/**
 * Atomically replaces a file: a temporary file beside it is written and
 * synced, renamed over the target, and the directory synced. A reader, or a
 * crash at any instant, sees the old content or the new one; when the
 * promise resolves the new one is durable.
 *
 * @param target The file to replace.
 * @param text Its new content.
 * @param options `document` marks the crash points of a model document.
 * @returns When the new content is durable.
 */
export async function writeAtomic(
  target: string,
  text: string,
  options: { document?: boolean } = {},
): Promise<void> {
  const temp = `${target}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await open(temp, "wx");
  try {
    await handle.writeFile(text, "utf8");
    await handle.datasync();
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw error;
  }
  await handle.close();
  if (options.document === true) await crashPoint("document-synced");
  try {
    await rename(temp, target);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  if (options.document === true) await crashPoint("document-renamed");
  await syncDir(dirname(target));
}

/**
 * Appends text to a file and syncs it before returning.
 *
 * @param path The file (created when missing).
 * @param text The text.
 * @param options `mayCreate`: the file may not exist yet, so its directory
 * is synced too (skipped otherwise: one syscall less per append).
 * @returns When the text is durable.
 */
export async function appendSynced(
  path: string,
  text: string,
  options: { mayCreate?: boolean } = {},
): Promise<void> {
  const handle = await open(path, "a");
  try {
    await handle.appendFile(text, "utf8");
    await handle.datasync();
  } finally {
    await handle.close();
  }
  if (options.mayCreate === true) await syncDir(dirname(path));
}

/**
 * Streams bytes `[start, end)` of an open file, closing it at the end, on
 * error and on cancel.
 *
 * @param handle The open file.
 * @param start First byte.
 * @param end One past the last byte.
 * @returns The stream.
 */
export function createFileStream(
  handle: FileHandle,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  let position = start;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await handle.close().catch(() => {});
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller): Promise<void> {
      try {
        const want = Math.min(FILE_CHUNK_BYTES, end - position);
        if (want <= 0) {
          await close();
          controller.close();
          return;
        }
        const chunk = new Uint8Array(want);
        const { bytesRead } = await handle.read(chunk, 0, want, position);
        if (bytesRead === 0) {
          await close();
          controller.close();
          return;
        }
        position += bytesRead;
        controller.enqueue(
          bytesRead === want ? chunk : chunk.subarray(0, bytesRead),
        );
      } catch (error) {
        await close();
        controller.error(error);
      }
    },
    async cancel(): Promise<void> {
      await close();
    },
  }, { highWaterMark: 0 });
}
