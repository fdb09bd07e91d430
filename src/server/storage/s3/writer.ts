/**
 * One blob being written to an S3 bucket: {@linkcode S3BlobWriter}, which the
 * store of `blobs.ts` creates (its module documentation describes the
 * upload). The bytes
 * are hashed as they arrive, sent as one `PUT` or as the parts of a
 * multipart upload (several in flight, their buffers reused), and published
 * by `finish()` under a key unique to the upload.
 *
 * Internal to the server.
 *
 * @module
 */

import { createHash, randomBytes } from "node:crypto";
import type { Hash } from "node:crypto";
import {
  BlobChecksumError,
  type BlobWriter,
  type StoredBlob,
} from "../contract.ts";
import { escapeXml, type S3Client, S3Error, xmlText } from "./client.ts";

/** Waits for a promise and ignores its rejection (it is reported elsewhere). */
async function settle(promise: Promise<unknown>): Promise<void> {
  await promise.then(() => {}, () => {});
}

/** How an {@linkcode S3BlobWriter} uploads. */
export interface WriterSettings {
  partSize: number;
  concurrency: number;
  maxBytes: number;
  signal: AbortSignal | undefined;
}

/**
 * One blob being written to S3: a single `PUT` when it fits in one part,
 * else a multipart upload whose parts are sent while the bytes arrive.
 */
export class S3BlobWriter implements BlobWriter {
  #client: S3Client;
  #prefix: string;
  #settings: WriterSettings;
  #hash: Hash = createHash("sha256");
  #size = 0;
  /** The part being filled: bytes are copied once, into it. */
  #part: Uint8Array | undefined;
  /** Part buffers whose upload finished, reused by the next parts. */
  #free: Uint8Array[] = [];
  #pendingBytes = 0;
  #uploadKey: string;
  #uploadId: Promise<string> | undefined;
  #parts: { number: number; etag: string }[] = [];
  #nextPart = 1;
  #inFlight: Promise<void>[] = [];
  #failure: unknown;
  #state: "open" | "finishing" | "done" | "aborted" = "open";
  #aborting: Promise<void> | undefined;
  #internal = new AbortController();
  #signal: AbortSignal;
  #onAbort = (): void => {
    void this.abort();
  };

  constructor(client: S3Client, prefix: string, settings: WriterSettings) {
    this.#client = client;
    this.#prefix = prefix;
    this.#uploadKey = `${prefix}u${randomBytes(12).toString("hex")}`;
    this.#settings = settings;
    this.#signal = settings.signal === undefined
      ? this.#internal.signal
      : AbortSignal.any([settings.signal, this.#internal.signal]);
    settings.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  get size(): number {
    return this.#size;
  }

  #checkOpen(): void {
    if (this.#state !== "open") {
      throw new TypeError(
        `Cannot write to a blob writer that is ${this.#state}`,
      );
    }
    if (this.#failure !== undefined) throw this.#failure;
    this.#signal.throwIfAborted();
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#checkOpen();
    if (this.#size + chunk.byteLength > this.#settings.maxBytes) {
      const error = new RangeError(
        `Cannot store more than ${this.#settings.maxBytes} bytes in one blob`,
      );
      await this.abort();
      throw error;
    }
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
    // Copied once, into the part being filled (the caller may reuse its
    // chunk once this resolves); a full part is sent while the next fills.
    let offset = 0;
    while (offset < chunk.byteLength) {
      this.#part ??= this.#free.pop() ??
        new Uint8Array(this.#settings.partSize);
      const take = Math.min(
        chunk.byteLength - offset,
        this.#settings.partSize - this.#pendingBytes,
      );
      this.#part.set(
        chunk.subarray(offset, offset + take),
        this.#pendingBytes,
      );
      this.#pendingBytes += take;
      offset += take;
      if (this.#pendingBytes === this.#settings.partSize) {
        await this.#sendPart(this.#take());
      }
    }
  }

  /** Takes the bytes of the part being filled. */
  #take(): Uint8Array {
    const part = (this.#part ?? new Uint8Array(0)).subarray(
      0,
      this.#pendingBytes,
    );
    this.#part = undefined;
    this.#pendingBytes = 0;
    return part;
  }

  #start(): Promise<string> {
    this.#uploadId ??= (async () => {
      // Not aborted by the signal: an upload S3 started must be known to
      // be aborted.
      const answer = await this.#client.request("POST", {
        key: this.#uploadKey,
        query: { uploads: "" },
      });
      const id = xmlText(await answer.text(), "UploadId");
      if (id === undefined) {
        throw new S3Error(
          "S3 did not return an UploadId when a multipart upload was started",
          answer.status,
          "",
        );
      }
      return id;
    })();
    return this.#uploadId;
  }

  /** Sends one part; waits first while `concurrency` parts are in flight. */
  async #sendPart(body: Uint8Array): Promise<void> {
    while (this.#inFlight.length >= this.#settings.concurrency) {
      await settle(this.#inFlight[0]!);
      this.#inFlight.shift();
      if (this.#failure !== undefined) throw this.#failure;
    }
    const number = this.#nextPart++;
    const sent = (async () => {
      const uploadId = await this.#start();
      const answer = await this.#client.request("PUT", {
        key: this.#uploadKey,
        query: { partNumber: String(number), uploadId },
        body,
        signal: this.#signal,
      });
      await answer.body.cancel();
      const etag = String(answer.headers.etag ?? "");
      this.#parts.push({ number, etag });
      // The whole buffer the part was cut from goes back to the pool.
      if (body.buffer.byteLength === this.#settings.partSize) {
        this.#free.push(new Uint8Array(body.buffer));
      }
    })().catch((error: unknown) => {
      this.#failure ??= error;
    });
    this.#inFlight.push(sent);
  }

  async finish(expectedSha256?: string): Promise<StoredBlob> {
    this.#checkOpen();
    this.#state = "finishing";
    try {
      const sha256 = this.#hash.digest("hex");
      if (expectedSha256 !== undefined && expectedSha256 !== sha256) {
        throw new BlobChecksumError(sha256, expectedSha256);
      }
      let key = `${this.#prefix}${sha256}`;
      if (this.#uploadId === undefined) {
        // Small blob: one PUT with its length, straight to the final key.
        const answer = await this.#client.request("PUT", {
          key,
          body: this.#take(),
          signal: this.#signal,
        });
        await answer.body.cancel();
      } else {
        if (this.#pendingBytes > 0) {
          await this.#sendPart(this.#take());
        }
        await Promise.all(this.#inFlight);
        this.#inFlight = [];
        if (this.#failure !== undefined) throw this.#failure;
        await this.#complete(await this.#uploadId);
        key = this.#uploadKey;
      }
      this.#state = "done";
      this.#release();
      return { key, sha256, size: this.#size };
    } catch (error) {
      await this.abort();
      throw error;
    }
  }

  async #complete(uploadId: string): Promise<void> {
    const parts = [...this.#parts].sort((a, b) => a.number - b.number)
      .map((p) =>
        `<Part><PartNumber>${p.number}</PartNumber><ETag>${
          escapeXml(p.etag)
        }</ETag></Part>`
      ).join("");
    const answer = await this.#client.request("POST", {
      key: this.#uploadKey,
      query: { uploadId },
      body: new TextEncoder().encode(
        `<CompleteMultipartUpload>${parts}</CompleteMultipartUpload>`,
      ),
      signal: this.#signal,
    });
    // S3 may answer 200 and put the error in the body.
    const xml = await answer.text();
    const code = xmlText(xml, "Code");
    if (code !== undefined) {
      throw new S3Error(
        `S3 could not complete the multipart upload: ${code} ${
          xmlText(xml, "Message") ?? ""
        }`,
        answer.status,
        code,
      );
    }
  }

  #release(): void {
    this.#part = undefined;
    this.#free = [];
    this.#pendingBytes = 0;
    this.#settings.signal?.removeEventListener("abort", this.#onAbort);
  }

  abort(): Promise<void> {
    if (this.#state === "done") return Promise.resolve();
    // Every caller waits for the same cleanup (the signal's listener may
    // have started it).
    this.#aborting ??= this.#abort();
    return this.#aborting;
  }

  async #abort(): Promise<void> {
    this.#state = "aborted";
    this.#release();
    this.#internal.abort(new Error("The blob writer was aborted"));
    await Promise.all(this.#inFlight.map(settle));
    this.#inFlight = [];
    const uploadId = this.#uploadId === undefined
      ? undefined
      : await this.#uploadId.catch(() => undefined);
    if (uploadId === undefined) return;
    // Without the signal: the abort must reach S3 even when the caller's
    // request was aborted. Best effort: a dead upload is swept at the next
    // open otherwise.
    await this.#client.request("DELETE", {
      key: this.#uploadKey,
      query: { uploadId },
      accept: [404],
    }).then((a) => a.body.cancel(), () => {});
  }
}
