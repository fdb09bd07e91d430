/**
 * A streaming `multipart/form-data` parser for weight uploads.
 *
 * The body is read chunk by chunk: the delimiter is found with a
 * Boyer-Moore-Horspool scan (or Bun's native `Buffer#indexOf`), file bytes go
 * to a blob writer of the weights store (which hashes them with sha256 in
 * the same pass; the file store batches them to 1 MiB and writes
 * synchronously). Text fields are kept in memory (bounded), including those
 * that follow the file part, such as the `sha256` integrity field. On any
 * failure the writer is aborted: nothing is published.
 *
 * Measured on a 512 MiB upload over loopback (2 cores): Deno's
 * `Buffer#indexOf` is written in JavaScript and takes ~2 s for the scan, the
 * Horspool scan ~50 ms (Bun's native one ~10 ms); an awaited
 * `FileHandle#write` per 1 MiB batch adds ~1 s on Bun 1.4.5 and ~0.6 s on
 * Deno 2.9.6, while `writeSync` of the same batches to the page cache takes
 * ~0.15-0.25 s, so the file store's writer writes batches synchronously
 * (`writeSync`, used here when a writer has it). Both runtimes deliver
 * request bodies in 64 KiB chunks; the hash is updated per 1 MiB batch.
 *
 * Hashing and writing in a worker thread (batches transferred to it and back)
 * was measured and rejected: on 2 cores, curl, the kernel's loopback and the
 * receiving thread already keep both cores busy, and the worker made a
 * 512 MiB upload ~15-20% slower on both runtimes.
 *
 * Over 500 lines on purpose: it is one state machine (`MultipartParser`) with
 * the delimiter search and header parsing it drives; split, each part would
 * only make sense next to the others.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { BlobWriter } from "./storage/contract.ts";

/** A multipart body could not be accepted; `status` is the HTTP answer. */
export class MultipartError extends Error {
  /** HTTP status to answer with: 400 (malformed) or 413 (too large). */
  readonly status: 400 | 413;
  /** The body could not be read to its end (the client went away). */
  readonly aborted: boolean;

  /**
   * Creates an error.
   *
   * @param message What is wrong with the body.
   * @param status HTTP status to answer with.
   * @param options `aborted` when reading the body failed, and its `cause`.
   */
  constructor(
    message: string,
    status: 400 | 413 = 400,
    options: { aborted?: boolean; cause?: unknown } = {},
  ) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "MultipartError";
    this.status = status;
    this.aborted = options.aborted ?? false;
  }
}

/** The file part of an upload, held by a blob writer not yet finished. */
export interface UploadedFile {
  /** The part's field name, e.g. `last.pt`. */
  field: string;
  /** The part's `filename`, when given. */
  filename: string | undefined;
  /** The writer holding the part's bytes: finish or abort it. */
  writer: BlobWriter;
  /** Number of bytes in the part. */
  size: number;
}

/** A blob writer, optionally with a synchronous write for the hot loop. */
export type FileSink = BlobWriter & {
  writeSync?: ((data: Uint8Array) => void) | undefined;
};

/** What {@linkcode parseMultipart} read from a body. */
export interface ParsedMultipart {
  /** Text fields by name (the last value wins for repeated names). */
  fields: Map<string, string>;
  /** The file part, when the body had one. */
  file: UploadedFile | undefined;
  /** Body bytes read in total. */
  bytesRead: number;
}

/** Options of {@linkcode parseMultipart}. */
export interface ParseMultipartOptions {
  /** The boundary from the `Content-Type` header. */
  boundary: string;
  /** Opens the writer of the file part (called once, at its start). */
  createSink: () => Promise<FileSink>;
  /** Largest accepted body in bytes; more is a 413. */
  maxBytes: number;
  /** Aborts reading, e.g. when the client disconnects. */
  signal?: AbortSignal | undefined;
  /** Largest text field in bytes. @default {65536} */
  maxFieldBytes?: number;
}

const MAX_HEADER_BYTES = 16 * 1024;
const MAX_FIELDS = 64;
const CRLF = Buffer.from("\r\n");
const HEADER_END = Buffer.from("\r\n\r\n");
const EMPTY = Buffer.alloc(0);
// Bun's Buffer#indexOf is native (~10 ms per 512 MiB); Deno's is not (~2 s).
const NATIVE_BUFFER_SEARCH = "Bun" in globalThis;

const enum State {
  Preamble,
  AfterBoundary,
  Headers,
  Body,
  End,
}

/**
 * Extracts the boundary of a `multipart/form-data` content type.
 *
 * @param contentType The request's `Content-Type` header.
 * @returns The boundary, or `undefined` when the type is not multipart or has
 * no usable boundary.
 */
export function getBoundary(contentType: string | null): string | undefined {
  if (contentType === null) return undefined;
  const [type, ...params] = contentType.split(";");
  if (type?.trim().toLowerCase() !== "multipart/form-data") return undefined;
  for (const param of params) {
    const eq = param.indexOf("=");
    if (eq === -1) continue;
    if (param.slice(0, eq).trim().toLowerCase() !== "boundary") continue;
    let value = param.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      value = value.slice(1, -1);
    }
    if (value.length === 0 || value.length > 200) return undefined;
    return value;
  }
  return undefined;
}

/** Finds a fixed byte string: Horspool in JavaScript, or Bun's native scan. */
class Finder {
  readonly pattern: Buffer;
  #skip: Int32Array;

  constructor(pattern: Buffer) {
    this.pattern = pattern;
    const m = pattern.length;
    this.#skip = new Int32Array(256).fill(m);
    for (let j = 0; j < m - 1; j++) this.#skip[pattern[j]!] = m - 1 - j;
  }

  /** Index of the first occurrence in `buf`, or -1. */
  indexOf(buf: Buffer): number {
    if (NATIVE_BUFFER_SEARCH) return buf.indexOf(this.pattern);
    const d = this.pattern;
    const skip = this.#skip;
    const last = d.length - 1;
    const lastByte = d[last]!;
    const n = buf.length;
    let i = last;
    while (i < n) {
      const c = buf[i]!;
      if (c === lastByte) {
        let j = last - 1;
        let k = i - 1;
        while (j >= 0 && buf[k] === d[j]) {
          j--;
          k--;
        }
        if (j < 0) return i - last;
      }
      i += skip[c]!;
    }
    return -1;
  }
}

interface PartInfo {
  name: string;
  filename: string | undefined;
}

function parseDispositionParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /;\s*([^=;\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  for (const match of value.matchAll(re)) {
    const key = match[1]!.toLowerCase();
    const raw = match[2] !== undefined
      ? match[2].replace(/\\(.)/g, "$1")
      : (match[3] ?? "").trim();
    if (key.endsWith("*")) {
      // RFC 5987: charset'lang'percent-encoded
      const parts = raw.split("'");
      if (parts.length === 3) {
        try {
          params.set(key.slice(0, -1), decodeURIComponent(parts[2]!));
        } catch {
          // Keep the plain parameter, if any.
        }
      }
      continue;
    }
    if (!params.has(key)) params.set(key, raw);
  }
  return params;
}

function parsePartHeaders(block: Buffer): PartInfo {
  const text = block.toString("utf8");
  let disposition: string | undefined;
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    if (line.slice(0, colon).trim().toLowerCase() === "content-disposition") {
      disposition = line.slice(colon + 1).trim();
    }
  }
  if (disposition === undefined) {
    throw new MultipartError(
      "Cannot parse the multipart body as a part has no Content-Disposition header",
    );
  }
  const type = disposition.split(";", 1)[0]!.trim().toLowerCase();
  const params = parseDispositionParams(disposition);
  const name = params.get("name");
  if (type !== "form-data" || name === undefined || name === "") {
    throw new MultipartError(
      "Cannot parse the multipart body as a part is not a named form-data field",
    );
  }
  return { name, filename: params.get("filename") };
}

/** Length of the longest suffix of `buf` that is a proper prefix of `delim`. */
function partialDelimiterLength(buf: Buffer, delim: Buffer): number {
  const start = Math.max(0, buf.length - (delim.length - 1));
  let i = buf.indexOf(delim[0]!, start);
  while (i !== -1) {
    const k = buf.length - i;
    if (buf.compare(delim, 0, k, i, buf.length) === 0) return k;
    i = buf.indexOf(delim[0]!, i + 1);
  }
  return 0;
}

class MultipartParser {
  readonly fields = new Map<string, string>();
  file: UploadedFile | undefined;

  #delim: Buffer;
  #finder: Finder;
  #maxFieldBytes: number;
  #isFilePart: (part: PartInfo) => boolean;
  #state: State = State.Preamble;
  // The body is parsed as if it started with CRLF, so that a leading
  // "--boundary" matches the same delimiter as every later one.
  #carry: Buffer = CRLF;
  #part: PartInfo | undefined;
  #fieldChunks: Buffer[] = [];
  #fieldBytes = 0;
  #createSink: () => Promise<FileSink>;
  /** The file part's writer while its bytes arrive. */
  #sink: FileSink | undefined;
  /** The writer to abort on failure, until the caller owns it. */
  #owned: FileSink | undefined;
  /** Writes of a sink without `writeSync`, awaited at the end of a feed. */
  #pending: Promise<void> | undefined;

  constructor(
    boundary: string,
    createSink: () => Promise<FileSink>,
    maxFieldBytes: number,
    isFilePart: (part: PartInfo) => boolean,
  ) {
    this.#delim = Buffer.from(`\r\n--${boundary}`, "latin1");
    this.#finder = new Finder(this.#delim);
    this.#createSink = createSink;
    this.#maxFieldBytes = maxFieldBytes;
    this.#isFilePart = isFilePart;
  }

  get done(): boolean {
    return this.#state === State.End;
  }

  async feed(chunk: Buffer): Promise<void> {
    let buf = chunk;
    if (this.#carry.length > 0) {
      const carry = this.#carry;
      this.#carry = EMPTY;
      const dl = this.#delim.length;
      if (this.#state === State.Body && chunk.length >= dl) {
        // Look for a delimiter that starts in the carried bytes without
        // copying the whole chunk.
        const junction = Buffer.concat([carry, chunk.subarray(0, dl - 1)]);
        const idx = this.#finder.indexOf(junction);
        if (idx !== -1 && idx < carry.length) {
          this.#emit(junction.subarray(0, idx));
          await this.#endPart();
          buf = chunk.subarray(idx + dl - carry.length);
          this.#state = State.AfterBoundary;
        } else {
          this.#emit(carry);
        }
      } else {
        buf = Buffer.concat([carry, chunk]);
      }
    }
    await this.#process(buf);
    await this.#drain();
  }

  async #drain(): Promise<void> {
    const pending = this.#pending;
    this.#pending = undefined;
    await pending;
  }

  async #process(input: Buffer): Promise<void> {
    let buf = input;
    const delim = this.#delim;
    for (;;) {
      switch (this.#state) {
        case State.Preamble: {
          const idx = this.#finder.indexOf(buf);
          if (idx === -1) {
            const keep = partialDelimiterLength(buf, delim);
            this.#carry = Buffer.from(buf.subarray(buf.length - keep));
            return;
          }
          buf = buf.subarray(idx + delim.length);
          this.#state = State.AfterBoundary;
          break;
        }
        case State.AfterBoundary: {
          let i = 0;
          while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
          if (buf.length - i < 2) {
            this.#carry = Buffer.from(buf.subarray(i));
            return;
          }
          if (buf[i] === 0x2d && buf[i + 1] === 0x2d && i === 0) {
            this.#state = State.End;
            return;
          }
          if (buf[i] !== 0x0d || buf[i + 1] !== 0x0a) {
            throw new MultipartError(
              "Cannot parse the multipart body as a boundary is not followed by a line break",
            );
          }
          buf = buf.subarray(i + 2);
          this.#state = State.Headers;
          break;
        }
        case State.Headers: {
          if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) {
            throw new MultipartError(
              "Cannot parse the multipart body as a part has no headers",
            );
          }
          const idx = buf.subarray(0, MAX_HEADER_BYTES + HEADER_END.length)
            .indexOf(HEADER_END);
          if (idx === -1) {
            if (buf.length > MAX_HEADER_BYTES) {
              throw new MultipartError(
                "Cannot parse the multipart body as a part's headers exceed 16 KiB",
              );
            }
            this.#carry = Buffer.from(buf);
            return;
          }
          await this.#startPart(parsePartHeaders(buf.subarray(0, idx)));
          buf = buf.subarray(idx + HEADER_END.length);
          this.#state = State.Body;
          break;
        }
        case State.Body: {
          const idx = this.#finder.indexOf(buf);
          if (idx === -1) {
            const keep = partialDelimiterLength(buf, delim);
            this.#emit(buf.subarray(0, buf.length - keep));
            this.#carry = keep === 0
              ? EMPTY
              : Buffer.from(buf.subarray(buf.length - keep));
            return;
          }
          this.#emit(buf.subarray(0, idx));
          await this.#endPart();
          buf = buf.subarray(idx + delim.length);
          this.#state = State.AfterBoundary;
          break;
        }
        case State.End:
          return;
      }
    }
  }

  async #startPart(part: PartInfo): Promise<void> {
    this.#part = part;
    if (this.#isFilePart(part)) {
      if (this.file !== undefined || this.#sink !== undefined) {
        throw new MultipartError(
          `Cannot accept the upload as it has more than one file part: "${part.name}"`,
        );
      }
      this.#sink = await this.#createSink();
      this.#owned = this.#sink;
    } else {
      if (this.fields.size >= MAX_FIELDS) {
        throw new MultipartError(
          `Cannot accept the upload as it has more than ${MAX_FIELDS} fields`,
        );
      }
      this.#fieldChunks = [];
      this.#fieldBytes = 0;
    }
  }

  #emit(data: Buffer): void {
    if (data.length === 0) return;
    if (this.#part === undefined) return;
    const sink = this.#sink;
    if (sink !== undefined) {
      if (sink.writeSync !== undefined) {
        sink.writeSync(data);
      } else {
        const previous = this.#pending ?? Promise.resolve();
        this.#pending = previous.then(() => sink.write(data));
      }
      return;
    }
    this.#fieldBytes += data.length;
    if (this.#fieldBytes > this.#maxFieldBytes) {
      throw new MultipartError(
        `Cannot accept the field "${this.#part.name}" as it exceeds ${this.#maxFieldBytes} bytes`,
      );
    }
    this.#fieldChunks.push(Buffer.from(data));
  }

  async #endPart(): Promise<void> {
    const part = this.#part;
    if (part === undefined) return;
    this.#part = undefined;
    const sink = this.#sink;
    if (sink !== undefined) {
      this.#sink = undefined;
      await this.#drain();
      this.file = {
        field: part.name,
        filename: part.filename,
        writer: sink,
        size: sink.size,
      };
      return;
    }
    this.fields.set(
      part.name,
      Buffer.concat(this.#fieldChunks).toString("utf8"),
    );
    this.#fieldChunks = [];
  }

  /** Aborts the file part's writer (which never rejects). */
  async discard(): Promise<void> {
    const sink = this.#owned;
    this.#sink = undefined;
    this.#owned = undefined;
    this.file = undefined;
    await this.#pending?.catch(() => {});
    this.#pending = undefined;
    await sink?.abort();
  }
}

/** Whether a part is the upload's file: it has a filename or a `.pt` name. */
function defaultIsFilePart(part: PartInfo): boolean {
  return part.filename !== undefined || part.name.endsWith(".pt");
}

/** Size of the buffer a byte stream is read into. */
const READ_BUFFER_BYTES = 1 << 20;

/**
 * Reads a body as chunks, into one reused 1 MiB buffer where the stream is a
 * byte stream (Deno's request bodies), else as the stream hands them out
 * (Bun's are not byte streams). A chunk is valid until the next `read()`.
 *
 * Measured on Deno 2.9.6, 1 GiB sent with `curl -T` to a `Deno.serve` that
 * reads and hashes the body: 0.74-0.82 s with a BYOB reader against
 * 0.97-1.06 s with the default reader (64 KiB chunks, a new buffer each,
 * ~300 ms more of the thread's time in allocation and collection).
 */
class BodyReader {
  #default: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #byob: ReadableStreamBYOBReader | undefined;
  #iterator: AsyncIterator<Uint8Array> | undefined;
  #buffer: ArrayBuffer | undefined;

  constructor(body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>) {
    if (!(body instanceof ReadableStream)) {
      this.#iterator = isNodeReadable(body)
        ? nodeChunks(body)
        : body[Symbol.asyncIterator]();
      return;
    }
    try {
      this.#byob = body.getReader({ mode: "byob" });
      this.#buffer = new ArrayBuffer(READ_BUFFER_BYTES);
    } catch {
      // Not a byte stream.
      this.#default = body.getReader();
    }
  }

  /** The next chunk, or `undefined` at the end. */
  async read(): Promise<Uint8Array | undefined> {
    if (this.#iterator !== undefined) {
      const { done, value } = await this.#iterator.next();
      return done ? undefined : value;
    }
    if (this.#default !== undefined) {
      const { done, value } = await this.#default.read();
      return done ? undefined : value;
    }
    const { done, value } = await this.#byob!.read(
      new Uint8Array(this.#buffer!),
    );
    if (value !== undefined) this.#buffer = value.buffer as ArrayBuffer;
    return done ? undefined : value;
  }

  async cancel(reason?: unknown): Promise<void> {
    if (this.#iterator !== undefined) {
      // A Node stream's iterator destroys the stream on return().
      await this.#iterator.return?.();
      return;
    }
    await (this.#default ?? this.#byob!).cancel(reason);
  }

  releaseLock(): void {
    if (this.#iterator === undefined) {
      (this.#default ?? this.#byob!).releaseLock();
    }
  }
}

/** The part of a Node.js readable stream that {@linkcode nodeChunks} uses. */
interface NodeReadable {
  on(event: string, listener: (...args: never[]) => void): unknown;
  off(event: string, listener: (...args: never[]) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  destroy(error?: Error): unknown;
}

function isNodeReadable(body: unknown): body is NodeReadable {
  const b = body as Partial<NodeReadable>;
  return typeof b.on === "function" && typeof b.pause === "function" &&
    typeof b.resume === "function" && typeof b.destroy === "function";
}

/** Bytes a Node.js stream may have waiting before it is paused. */
const QUEUE_BYTES = 1 << 20;

/**
 * A Node.js readable stream's chunks as they arrive (`data` events), one at
 * a time: the stream is paused while 1 MiB waits to be taken. Its async
 * iterator would instead join what was buffered into a new buffer on each
 * step (`read()`), a copy and an allocation of every byte.
 */
function nodeChunks(stream: NodeReadable): AsyncIterator<Uint8Array> {
  const queue: Uint8Array[] = [];
  let queued = 0;
  let paused = false;
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const onData = (chunk: Uint8Array): void => {
    queue.push(chunk);
    queued += chunk.byteLength;
    if (queued >= QUEUE_BYTES && !paused) {
      paused = true;
      stream.pause();
    }
    wake?.();
  };
  const onEnd = (): void => {
    ended = true;
    wake?.();
  };
  const onError = (error: unknown): void => {
    failure ??= error ?? new Error("The request body broke off");
    wake?.();
  };
  const onClose = (): void => {
    // Closed before its end: the connection went away.
    if (!ended) onError(new Error("The request body broke off"));
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("error", onError);
  stream.on("close", onClose);
  const detach = (): void => {
    stream.off("data", onData);
    stream.off("end", onEnd);
    stream.off("error", onError);
    stream.off("close", onClose);
  };
  return {
    async next(): Promise<IteratorResult<Uint8Array>> {
      for (;;) {
        const chunk = queue.shift();
        if (chunk !== undefined) {
          queued -= chunk.byteLength;
          if (paused && queued < QUEUE_BYTES / 2) {
            paused = false;
            stream.resume();
          }
          return { done: false, value: chunk };
        }
        if (failure !== undefined) {
          detach();
          throw failure;
        }
        if (ended) {
          detach();
          return { done: true, value: undefined };
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    },
    return(): Promise<IteratorResult<Uint8Array>> {
      detach();
      stream.destroy();
      return Promise.resolve({ done: true, value: undefined });
    },
  };
}

/**
 * Parses a `multipart/form-data` body as a stream.
 *
 * The file part (a part with a `filename`, or named `*.pt`) is written to a
 * writer from `createSink` (hashed on the way); text fields are collected,
 * including those after the file part. On success the caller owns the
 * writer (`file.writer`) and must finish or abort it; on failure it is
 * already aborted and a {@linkcode MultipartError} (400/413), the abort
 * reason or the I/O error is thrown.
 *
 * @param body The request body.
 * @param options Boundary, writer factory, size limit and signal.
 * @returns The fields, the file part and the number of bytes read.
 */
export async function parseMultipart(
  body: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  options: ParseMultipartOptions,
): Promise<ParsedMultipart> {
  const { boundary, createSink, maxBytes, signal, maxFieldBytes = 65_536 } =
    options;
  const parser = new MultipartParser(
    boundary,
    createSink,
    maxFieldBytes,
    defaultIsFilePart,
  );
  const reader = new BodyReader(body);
  const onAbort = (): void => {
    reader.cancel(signal?.reason).catch(() => {});
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  let bytesRead = 0;
  let ok = false;
  try {
    signal?.throwIfAborted();
    for (;;) {
      let chunk: Uint8Array | undefined;
      try {
        chunk = await reader.read();
      } catch (error) {
        signal?.throwIfAborted();
        throw new MultipartError(
          `Cannot read the request body as the connection failed: ${
            (error as Error)?.message ?? String(error)
          }`,
          400,
          { aborted: true, cause: error },
        );
      }
      signal?.throwIfAborted();
      if (chunk === undefined) break;
      const value = chunk;
      bytesRead += value.byteLength;
      if (bytesRead > maxBytes) {
        throw new MultipartError(
          `Cannot accept the upload as the body exceeds the limit of ${maxBytes} bytes`,
          413,
        );
      }
      if (parser.done) continue; // epilogue: count and discard
      await parser.feed(
        Buffer.from(value.buffer, value.byteOffset, value.byteLength),
      );
    }
    if (!parser.done) {
      throw new MultipartError(
        "Cannot parse the multipart body as it ended before the closing boundary",
      );
    }
    ok = true;
    return { fields: parser.fields, file: parser.file, bytesRead };
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!ok) {
      reader.cancel().catch(() => {});
      await parser.discard();
    } else {
      reader.releaseLock();
    }
  }
}
