/**
 * The weights store on S3-compatible object storage (AWS S3, Cloudflare R2,
 * MinIO, Ceph's radosgw): a {@linkcode BlobStore} whose blobs are objects
 * `<prefix><key>` in one bucket.
 *
 * ## Writing
 *
 * Bytes are hashed (sha256) as they arrive and copied once into fixed-size
 * parts ({@linkcode S3BlobStoreOptions.partSize}). A blob that ends within
 * the first part is sent with one `PUT` (with `Content-Length`) to its
 * content address `<prefix><sha256>` once its hash is known and checked. A
 * larger blob becomes a multipart upload straight to a key of its own,
 * `<prefix><sha256 unknown yet: "u" + 24 random hex digits>`: parts are sent
 * while the next ones are read (at most
 * {@linkcode S3BlobStoreOptions.concurrency} in flight, so memory stays at
 * `partSize × (concurrency + 1)` whatever the size); `finish()` checks the
 * hash and completes the upload. Such a key never names other bytes either,
 * and the document records it with the sha256. Copying the object to its
 * sha256 afterwards would double the cost of an upload (S3 and Ceph copy the
 * data: measured 2.8 s per GiB here), so the key is not renamed.
 *
 * S3 makes a `PUT` and a `CompleteMultipartUpload` visible atomically, so a
 * key holds all of the bytes or does not exist: a process killed mid-upload
 * leaves at most an incomplete multipart upload (not an object, listed by
 * no reader), never a partial object. `abort()` aborts the multipart upload
 * (S3 then frees its parts). Uploads a crash left behind are aborted when a
 * store opens, once they are older than
 * {@linkcode S3BlobStoreOptions.staleUploadMs} (an S3 lifecycle rule
 * `AbortIncompleteMultipartUpload` does the same on the server side).
 *
 * ## Reading
 *
 * `read()` streams the object's body as S3 sends it; a byte range becomes a
 * `Range` request.
 *
 * Internal to the server.
 *
 * @module
 */

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
import {
  S3Client,
  type S3Config,
  S3Error,
  xmlBlocks,
  xmlText,
} from "./client.ts";
import { S3BlobWriter } from "./writer.ts";

/** Options of {@linkcode openS3BlobStore}. */
export interface S3BlobStoreOptions {
  /**
   * Size of every part of a multipart upload but the last, and the largest
   * blob sent with a single `PUT`. S3 needs at least 5 MiB and allows 10,000
   * parts (so 16 MiB parts carry blobs up to ~156 GiB).
   *
   * @default {16 * 1024 * 1024}
   */
  partSize?: number | undefined;
  /**
   * Parts sent at the same time by one upload.
   *
   * @default {4}
   */
  concurrency?: number | undefined;
  /**
   * Multipart uploads older than this are aborted when the store opens (left
   * by a process that died mid-upload). `Infinity` keeps them.
   *
   * @default {86400000}
   */
  staleUploadMs?: number | undefined;
  /** Aborts opening. @default {undefined} */
  signal?: AbortSignal | undefined;
}

/** Keys as the server uses them (segments of `[A-Za-z0-9._-]`, no leading dot). */
const KEY_PATTERN =
  /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const PREFIX_PATTERN = /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*$/;

function checkKey(key: string, what = "key"): void {
  if (!KEY_PATTERN.test(key)) {
    throw new TypeError(
      `Cannot use blob ${what} "${key}" as it is not "/"-separated segments of [A-Za-z0-9._-] without a leading dot`,
    );
  }
}

/**
 * Opens the weights store in an S3 bucket: checks that the bucket answers
 * and aborts multipart uploads a crash left behind.
 *
 * @param config Bucket, prefix, endpoint, credentials.
 * @param options Part size, concurrency, stale-upload age, signal.
 * @returns The store.
 *
 * @example Open a bucket on a local Ceph gateway
 * ```ts ignore
 * const weights = await openS3BlobStore({
 *   bucket: "hub",
 *   endpoint: "http://127.0.0.1:17480",
 *   accessKeyId: Deno.env.get("AWS_ACCESS_KEY_ID")!,
 *   secretAccessKey: Deno.env.get("AWS_SECRET_ACCESS_KEY")!,
 * });
 * ```
 */
export async function openS3BlobStore(
  config: S3Config,
  options: S3BlobStoreOptions = {},
): Promise<S3BlobStore> {
  const store = new S3BlobStore(new S3Client(config), options);
  try {
    await store.client.request("HEAD", {
      key: "",
      signal: options.signal,
    }).then((answer) => answer.body.cancel());
    await store.abortStaleUploads(options.signal);
  } catch (error) {
    store.close();
    if (error instanceof S3Error && error.status === 404) {
      throw new S3Error(
        `Cannot open S3 bucket "${config.bucket}" at ${store.client.endpoint} as it does not exist: create it first`,
        404,
        "NoSuchBucket",
      );
    }
    throw error;
  }
  return store;
}

/**
 * Blobs in an S3 bucket. See the module documentation.
 *
 * @example Write and read a blob
 * ```ts ignore
 * const writer = await weights.createWriter("model/");
 * await writer.write(new TextEncoder().encode("bytes"));
 * const blob = await writer.finish();
 * const read = await weights.read(blob.key);
 * ```
 */
export class S3BlobStore implements BlobStore {
  /** Short name for logs. */
  readonly kind = "s3";
  /** The signed-request client (shared with tests and tools). */
  readonly client: S3Client;
  #partSize: number;
  #concurrency: number;
  #staleUploadMs: number;

  /**
   * Wraps a client; sends nothing (see {@linkcode openS3BlobStore}).
   *
   * @param client The S3 client.
   * @param options Part size, concurrency, stale-upload age.
   */
  constructor(client: S3Client, options: S3BlobStoreOptions = {}) {
    const {
      partSize = 16 * 1024 * 1024,
      concurrency = 4,
      staleUploadMs = 86_400_000,
    } = options;
    if (!Number.isSafeInteger(partSize) || partSize < 5 * 1024 * 1024) {
      throw new RangeError(
        `Cannot use S3 part size ${partSize} as S3 needs at least 5 MiB (5242880) per part`,
      );
    }
    if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
      throw new RangeError(
        `Cannot send ${concurrency} parts at a time: give a positive integer`,
      );
    }
    this.client = client;
    this.#partSize = partSize;
    this.#concurrency = concurrency;
    this.#staleUploadMs = staleUploadMs;
  }

  /**
   * Starts writing a blob that will be published under `<prefix><sha256>`.
   *
   * @param prefix Key prefix, e.g. `<model id>/`.
   * @param options Size limit, signal.
   * @returns The writer.
   */
  createWriter(
    prefix: string,
    options: BlobWriterOptions = {},
  ): Promise<BlobWriter> {
    if (!PREFIX_PATTERN.test(prefix)) {
      return Promise.reject(
        new TypeError(
          `Cannot write blobs under "${prefix}" as it is not "/"-separated segments of [A-Za-z0-9._-] ending in "/"`,
        ),
      );
    }
    options.signal?.throwIfAborted();
    return Promise.resolve(
      new S3BlobWriter(this.client, prefix, {
        partSize: this.#partSize,
        concurrency: this.#concurrency,
        maxBytes: options.maxBytes ?? Infinity,
        signal: options.signal,
      }),
    );
  }

  /**
   * Opens a blob for reading, streamed.
   *
   * @param key The blob's key.
   * @param options Byte range, signal.
   * @returns The read, or `undefined` when no blob has the key.
   */
  async read(
    key: string,
    options: BlobReadOptions = {},
  ): Promise<BlobRead | undefined> {
    checkKey(key);
    const { range, signal } = options;
    if (
      range !== undefined && !(range.start >= 0 && range.end >= range.start)
    ) {
      throw new RangeError(
        `Cannot read bytes ${range.start}-${range.end} of "${key}": give 0 <= start <= end`,
      );
    }
    const answer = await this.client.request("GET", {
      key,
      signal,
      headers: range === undefined
        ? undefined
        : { range: `bytes=${range.start}-${range.end}` },
      accept: [404, 416],
    });
    if (answer.status === 404) {
      await answer.body.cancel();
      return undefined;
    }
    if (answer.status === 416) {
      await answer.body.cancel();
      throw new RangeError(
        `Cannot read bytes ${range?.start}-${range?.end} of "${key}" as they are outside the blob`,
      );
    }
    const length = Number(answer.headers["content-length"]);
    const contentRange = /\/(\d+)$/.exec(
      String(answer.headers["content-range"] ?? ""),
    );
    const size = contentRange ? Number(contentRange[1]) : length;
    if (range !== undefined && range.end >= size) {
      await answer.body.cancel();
      throw new RangeError(
        `Cannot read bytes ${range.start}-${range.end} of "${key}" as it has ${size} bytes`,
      );
    }
    return {
      body: answer.body,
      size,
      range: range ?? { start: 0, end: size - 1 },
    };
  }

  /**
   * Describes a blob.
   *
   * @param key The blob's key.
   * @param options Signal.
   * @returns Its size and time, or `undefined` when no blob has the key.
   */
  async stat(
    key: string,
    options: CallOptions = {},
  ): Promise<BlobInfo | undefined> {
    checkKey(key);
    const answer = await this.client.request("HEAD", {
      key,
      signal: options.signal,
      accept: [404],
    });
    await answer.body.cancel();
    if (answer.status === 404) return undefined;
    return {
      key,
      size: Number(answer.headers["content-length"]),
      modifiedAt: Date.parse(String(answer.headers["last-modified"])),
    };
  }

  /**
   * Lists blobs whose key starts with `prefix`, in ascending key order.
   *
   * @param prefix Key prefix.
   * @param options Page size, cursor, signal.
   * @returns One page of blobs.
   */
  async list(
    prefix: string,
    options: ListOptions = {},
  ): Promise<Page<BlobInfo>> {
    const { limit = 100, cursor, signal } = options;
    const query: Record<string, string> = {
      "list-type": "2",
      prefix: this.client.prefix + prefix,
      "max-keys": String(Math.max(1, Math.min(1000, limit))),
    };
    if (cursor !== undefined) query["continuation-token"] = cursor;
    const answer = await this.client.request("GET", { key: "", query, signal });
    const xml = await answer.text();
    const items: BlobInfo[] = [];
    for (const block of xmlBlocks(xml, "Contents")) {
      const key = (xmlText(block, "Key") ?? "").slice(
        this.client.prefix.length,
      );
      items.push({
        key,
        size: Number(xmlText(block, "Size")),
        modifiedAt: Date.parse(xmlText(block, "LastModified") ?? ""),
      });
    }
    const next = xmlText(xml, "IsTruncated") === "true"
      ? xmlText(xml, "NextContinuationToken")
      : undefined;
    return { items, next };
  }

  /**
   * Deletes a blob; deleting a missing key succeeds.
   *
   * @param key The blob's key.
   * @param options Signal.
   * @returns When the blob is gone.
   */
  async delete(key: string, options: CallOptions = {}): Promise<void> {
    checkKey(key);
    const answer = await this.client.request("DELETE", {
      key,
      signal: options.signal,
      accept: [404],
    });
    await answer.body.cancel();
  }

  /**
   * Lists the multipart uploads in progress below the store's prefix (of
   * writers that have not finished, or left by a crash).
   *
   * @param signal Aborts the listing.
   * @returns Key and start time of each upload.
   */
  async pendingUploads(
    signal?: AbortSignal,
  ): Promise<{ key: string; uploadId: string; initiatedAt: number }[]> {
    const out: { key: string; uploadId: string; initiatedAt: number }[] = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const query: Record<string, string> = {
        uploads: "",
        prefix: this.client.prefix,
      };
      if (keyMarker !== undefined) query["key-marker"] = keyMarker;
      if (idMarker !== undefined) query["upload-id-marker"] = idMarker;
      const answer = await this.client.request("GET", {
        key: "",
        query,
        signal,
      });
      const xml = await answer.text();
      for (const block of xmlBlocks(xml, "Upload")) {
        out.push({
          key: (xmlText(block, "Key") ?? "").slice(this.client.prefix.length),
          uploadId: xmlText(block, "UploadId") ?? "",
          initiatedAt: Date.parse(xmlText(block, "Initiated") ?? ""),
        });
      }
      if (xmlText(xml, "IsTruncated") !== "true") return out;
      keyMarker = xmlText(xml, "NextKeyMarker");
      idMarker = xmlText(xml, "NextUploadIdMarker");
    }
  }

  /**
   * Aborts multipart uploads older than the stale-upload age (default: the
   * store's option).
   *
   * @param signal Aborts the sweep.
   * @param olderThanMs Age beyond which an upload is considered dead.
   * @returns How many uploads were aborted.
   */
  async abortStaleUploads(
    signal?: AbortSignal,
    olderThanMs: number = this.#staleUploadMs,
  ): Promise<number> {
    if (olderThanMs === Infinity) return 0;
    const cutoff = Date.now() - olderThanMs;
    let aborted = 0;
    for (const upload of await this.pendingUploads(signal)) {
      if (!(upload.initiatedAt <= cutoff)) continue;
      const answer = await this.client.request("DELETE", {
        key: upload.key,
        query: { uploadId: upload.uploadId },
        signal,
        accept: [404],
      });
      await answer.body.cancel();
      aborted++;
    }
    return aborted;
  }

  /**
   * Closes idle connections.
   *
   * @returns When done.
   */
  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }
}
