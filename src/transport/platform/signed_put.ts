/**
 * One streamed `PUT` of a file to a signed URL with an exact
 * `Content-Length`, no auth header, progress, a stall timeout and a sha256 of
 * the bytes sent.
 *
 * Why `node:http` and not `fetch`: Deno drops an explicit `Content-Length` on
 * a stream body and sends it chunked, and object stores answer a chunked
 * signed `PUT` with 411; a `Blob` body would keep the length but both
 * runtimes buffer a file `Blob` whole. `node:http` streams a file with the
 * length we set, with flat memory, on Deno and Bun alike.
 *
 * @module
 */

import { request as httpRequest } from "node:http";
import type { ClientRequest, IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { open } from "node:fs/promises";
import { createHash } from "node:crypto";
import { HUBRequestError, HUBTimeoutError } from "../../common/errors.ts";
import { isRetriableStatus, parseRetryAfter } from "../client.ts";
import type { ProgressCallback } from "../../protocol/types.ts";

/** Options of {@linkcode putSignedFile}. */
export interface SignedPutOptions {
  /** Aborts the upload; it then rejects with the signal's reason. @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Longest time without progress (no chunk taken, no reply), in milliseconds. @default {30000} */
  timeout?: number | undefined;
  /** Receives `{ loaded, total }` in body bytes handed to the network. @default {undefined} */
  onProgress?: ProgressCallback | undefined;
  /** `user-agent` header. @default {undefined} */
  agent?: string | undefined;
  /** Bytes per read. @default {1048576} */
  chunkSize?: number | undefined;
}

/** What {@linkcode putSignedFile} sent and what the store answered. */
export interface SignedPutResult {
  /** Bytes sent (the `Content-Length`). */
  size: number;
  /** sha256 of the bytes sent, lowercase hex. */
  sha256: string;
  /** The reply's status. */
  status: number;
  /** The reply's `x-checksum-sha256` header, when the store sent one. */
  storedSha256: string | undefined;
}

const MAX_REPLY_BYTES = 64 * 1024;

/**
 * Sends a file with one streamed `PUT` to a signed URL: `Content-Type:
 * application/octet-stream`, the file's exact `Content-Length`, no
 * credentials. The URL (which carries the signature) never appears in an
 * error: errors name its host only.
 *
 * @param url The signed upload URL (`http:` or `https:`).
 * @param file Path of the file to send.
 * @param options Signal, stall timeout and progress.
 * @returns Bytes and sha256 sent, and the reply's status.
 * @throws {HUBRequestError} When the store refuses (retriable for 408, 429
 * and 5xx) or the network fails (retriable).
 * @throws {HUBTimeoutError} When nothing moves for `timeout` ms.
 *
 * @example Send a file to a local store
 * ```ts
 * import { putSignedFile } from "./signed_put.ts";
 * import { createServer } from "node:http";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "put-"));
 * await writeFile(join(dir, "w.pt"), "weights");
 * let length = "";
 * const server = createServer((req, res) => {
 *   length = req.headers["content-length"] ?? "";
 *   req.resume();
 *   req.on("end", () => res.end());
 * });
 * await new Promise<void>((go) => server.listen(0, "127.0.0.1", go));
 * const { port } = server.address() as { port: number };
 * const sent = await putSignedFile(`http://127.0.0.1:${port}/up?sig=x`, join(dir, "w.pt"));
 * console.assert(sent.size === 7 && length === "7");
 * await new Promise((go) => server.close(go));
 * await rm(dir, { recursive: true });
 * ```
 */
export async function putSignedFile(
  url: string,
  file: string,
  options: SignedPutOptions = {},
): Promise<SignedPutResult> {
  const {
    signal,
    timeout = 30_000,
    onProgress,
    agent,
    chunkSize = 1024 * 1024,
  } = options;
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new TypeError(
      "Cannot upload to the signed URL as it is not a URL: check the upload-URL reply",
    );
  }
  if (target.protocol !== "http:" && target.protocol !== "https:") {
    throw new TypeError(
      `Cannot upload to the signed URL as it uses ${target.protocol}: only http and https are supported`,
    );
  }
  if (!(timeout > 0)) {
    throw new RangeError(
      `Cannot upload with a timeout of ${timeout}: pass a positive number of milliseconds`,
    );
  }
  signal?.throwIfAborted();
  const where = `PUT ${target.host} (signed upload URL)`;
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    return await send(handle, size);
  } finally {
    await handle.close().catch(() => {});
  }

  function send(
    handle: Awaited<ReturnType<typeof open>>,
    size: number,
  ): Promise<SignedPutResult> {
    return new Promise<SignedPutResult>((resolve, reject) => {
      const hash = createHash("sha256");
      let loaded = 0;
      let settled = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (error: unknown, result?: SignedPutResult): void => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error !== undefined) {
          req.destroy();
          reject(error);
        } else resolve(result!);
      };
      const arm = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        timer = setTimeout(() =>
          finish(
            new HUBTimeoutError(
              `Cannot upload the weights as ${where} made no progress for ${timeout} ms: retry later or raise 'timeout'`,
              { timeout },
            ),
          ), timeout);
      };
      const networkError = (error: unknown): HUBRequestError =>
        new HUBRequestError(
          `Cannot upload the weights as ${where} failed on the network (${
            error instanceof Error ? error.message : String(error)
          }): retry later`,
          { method: "PUT", path: "/", retriable: true, cause: error },
        );
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-length": String(size),
      };
      if (agent !== undefined) headers["user-agent"] = agent;
      const requestFn = target.protocol === "https:"
        ? httpsRequest
        : httpRequest;
      const req: ClientRequest = requestFn(target, { method: "PUT", headers });
      const onAbort = (): void => finish(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      arm();
      req.on("error", (error) => finish(networkError(error)));
      req.on("response", (response: IncomingMessage) => {
        arm();
        const chunks: Uint8Array[] = [];
        let got = 0;
        response.on("data", (chunk: Uint8Array) => {
          arm();
          if (got < MAX_REPLY_BYTES) chunks.push(chunk);
          got += chunk.byteLength;
        });
        response.on("error", (error) => finish(networkError(error)));
        response.on("end", () => {
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            if (loaded !== size) {
              finish(
                new HUBRequestError(
                  `Cannot upload the weights as ${where} answered ${status} before the whole file was sent (${loaded} of ${size} bytes): retry the upload`,
                  { method: "PUT", path: "/", status, retriable: true },
                ),
              );
              return;
            }
            const stored = response.headers["x-checksum-sha256"];
            finish(undefined, {
              size,
              sha256: digest,
              status,
              storedSha256: typeof stored === "string" ? stored : undefined,
            });
            return;
          }
          const text = new TextDecoder().decode(concat(chunks)).slice(0, 300);
          const headersIn = new Headers();
          for (const [name, value] of Object.entries(response.headers)) {
            if (typeof value === "string") headersIn.set(name, value);
          }
          finish(
            new HUBRequestError(
              `Cannot upload the weights as ${where} answered ${status}${
                messageOf(text)
              }${
                status === 403
                  ? ": the signed URL expired or was used; ask for a new one"
                  : ""
              }`,
              {
                method: "PUT",
                path: "/",
                status,
                serverMessage: messageOf(text).slice(2) || undefined,
                retryAfter: parseRetryAfter(headersIn),
                retriable: isRetriableStatus(status),
              },
            ),
          );
        });
      });
      let digest = "";
      void (async () => {
        let position = 0;
        const buffer = new Uint8Array(Math.max(1, Math.min(chunkSize, size)));
        while (position < size && !settled) {
          const { bytesRead } = await handle.read(
            buffer,
            0,
            Math.min(buffer.byteLength, size - position),
            position,
          );
          if (bytesRead === 0) {
            throw new HUBRequestError(
              `Cannot upload the weights as the file shrank while it was sent (${position} of ${size} bytes): upload a file that is not being written`,
              { method: "PUT", path: "/", retriable: true },
            );
          }
          const chunk = buffer.slice(0, bytesRead);
          position += bytesRead;
          hash.update(chunk);
          const ok = req.write(chunk);
          loaded += bytesRead;
          arm();
          try {
            onProgress?.({ loaded, total: size });
          } catch {
            // A broken progress callback must not break the upload.
          }
          if (!ok && !settled) {
            await new Promise<void>((go) => {
              const done = (): void => {
                req.off("drain", done);
                req.off("close", done);
                go();
              };
              req.on("drain", done);
              req.on("close", done);
            });
          }
        }
        digest = hash.digest("hex");
        if (!settled) req.end();
      })().catch((error) => finish(error));
    });
  }
}

function messageOf(text: string): string {
  const trimmed = text.trim();
  if (trimmed === "") return "";
  try {
    const parsed = JSON.parse(trimmed) as Record<string, unknown>;
    for (const key of ["message", "error"]) {
      if (typeof parsed[key] === "string") return `: ${parsed[key]}`;
    }
  } catch {
    // not JSON
  }
  return /^\s*</.test(trimmed) ? "" : `: ${trimmed.split("\n")[0]}`;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const size = chunks.reduce((n, c) => n + c.byteLength, 0);
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
