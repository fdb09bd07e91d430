/**
 * A small S3 client: SigV4-signed requests (signed by `aws4fetch`) sent
 * through `node:http`/`node:https`, with request and response bodies
 * streamed.
 *
 * Why not `fetch`: Deno's `fetch` drops an explicit `Content-Length` on a
 * stream body and sends it chunked, which S3 refuses (`411 Length
 * Required`). `node:http` sends the length we give it, on both Deno and Bun,
 * with flat memory (measured for 1 GiB). The body is never hashed for the
 * signature (`UNSIGNED-PAYLOAD`): the blob store hashes what it streams
 * itself and checks the result.
 *
 * Addressing is path-style (`<endpoint>/<bucket>/<key>`) for any endpoint
 * given explicitly (MinIO, Ceph, R2 all take it) and virtual-hosted
 * (`<bucket>.s3.<region>.amazonaws.com`) for AWS itself.
 *
 * A request that cannot reach the server, or a 5xx/503 `SlowDown` answer,
 * rejects with {@linkcode StorageUnavailableError}; any other non-2xx answer
 * rejects with {@linkcode S3Error} carrying S3's error code.
 *
 * Internal to the server.
 *
 * @module
 */

import { AwsV4Signer } from "aws4fetch";
import http from "node:http";
import https from "node:https";
import type { IncomingMessage } from "node:http";
import { Buffer } from "node:buffer";
import { Readable } from "node:stream";
import { StorageUnavailableError } from "../contract.ts";

/** Where the blobs live and how to sign for them. */
export interface S3Config {
  /** Bucket name. */
  bucket: string;
  /** Key prefix inside the bucket, `""` or ending in `/`. @default {""} */
  prefix?: string | undefined;
  /**
   * S3 endpoint, e.g. `http://127.0.0.1:17480`; `undefined` means AWS
   * (`https://s3.<region>.amazonaws.com`, virtual-hosted addressing).
   *
   * @default {undefined}
   */
  endpoint?: string | undefined;
  /** Region for the signature. @default {"us-east-1"} */
  region?: string | undefined;
  /** Access key id. */
  accessKeyId: string;
  /** Secret access key. */
  secretAccessKey: string;
  /** Session token of temporary credentials. @default {undefined} */
  sessionToken?: string | undefined;
  /**
   * Path-style addressing; default: on for an explicit endpoint, off for AWS.
   *
   * @default {endpoint !== undefined}
   */
  pathStyle?: boolean | undefined;
}

/**
 * S3 answered a request with an error other than "unavailable".
 *
 * @example Tell a missing object apart
 * ```ts ignore
 * try {
 *   await client.request("GET", "a/b");
 * } catch (error) {
 *   if (error instanceof S3Error && error.code === "NoSuchKey") console.log("gone");
 * }
 * ```
 */
export class S3Error extends Error {
  /** HTTP status of the answer. */
  readonly status: number;
  /** S3's error code, e.g. `NoSuchKey`, `""` when the answer had none. */
  readonly code: string;

  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param status HTTP status.
   * @param code S3 error code.
   */
  constructor(message: string, status: number, code: string) {
    super(message);
    this.name = "S3Error";
    this.status = status;
    this.code = code;
  }
}

/** A request to send. */
export interface S3Request {
  /** Object key below the configured prefix; `""` for the bucket itself. */
  key: string;
  /** Query parameters (sub-resources such as `uploads`, `partNumber`). */
  query?: Record<string, string> | undefined;
  /** Extra headers (e.g. `range`, `x-amz-copy-source`). */
  headers?: Record<string, string> | undefined;
  /** Body bytes (`Content-Length` is set from them). */
  body?: Uint8Array | undefined;
  /** Aborts the request. */
  signal?: AbortSignal | undefined;
  /** Statuses that are not errors besides 2xx (e.g. 404 for a HEAD). */
  accept?: readonly number[] | undefined;
}

/** An answer whose body has not been read yet. */
export interface S3Response {
  /** HTTP status. */
  status: number;
  /** Response headers, lowercase names. */
  headers: Record<string, string | string[] | undefined>;
  /** The body, streamed; read it or cancel it. */
  body: ReadableStream<Uint8Array>;
  /** Reads the whole body as text (for the small XML answers). */
  text(): Promise<string>;
}

/** Seconds a client is told to wait when S3 cannot be reached. */
const RETRY_AFTER_SECONDS = 2;

/** Encodes a key for a URL path, keeping `/` (S3's own rule). */
function encodeKey(key: string): string {
  return key.split("/").map((part) =>
    encodeURIComponent(part).replace(
      /[!'()*]/g,
      (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
    )
  ).join("/");
}

/** The text of the first `<tag>` in an XML answer, `undefined` if none. */
export function xmlText(xml: string, tag: string): string | undefined {
  const match = new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml);
  return match?.[1] === undefined ? undefined : decodeXml(match[1]);
}

/** Every `<tag>...</tag>` block of an XML answer. */
export function xmlBlocks(xml: string, tag: string): string[] {
  return [...xml.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))]
    .map((m) => m[1] ?? "");
}

function decodeXml(text: string): string {
  return text.replace(
    /&(lt|gt|quot|apos|amp);/g,
    (_, name: string) =>
      ({ lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" })[name] ?? "",
  );
}

/** Escapes text for an XML request body. */
export function escapeXml(text: string): string {
  return text.replace(
    /[<>&"']/g,
    (c) =>
      ({
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        '"': "&quot;",
        "'": "&apos;",
      })[
        c
      ] ?? c,
  );
}

/**
 * Signs and sends S3 requests; answers are streamed.
 *
 * @example Read an object's size
 * ```ts ignore
 * const client = new S3Client({ bucket: "hub", endpoint: "http://127.0.0.1:17480", accessKeyId, secretAccessKey });
 * const head = await client.request({ key: "a/b", accept: [404] }, "HEAD");
 * ```
 */
export class S3Client {
  /** Bucket name. */
  readonly bucket: string;
  /** Key prefix inside the bucket. */
  readonly prefix: string;
  #base: URL;
  #pathStyle: boolean;
  #region: string;
  #accessKeyId: string;
  #secretAccessKey: string;
  #sessionToken: string | undefined;
  #agent: http.Agent;
  #cache = new Map<string, ArrayBuffer>();

  /**
   * Creates a client; sends nothing.
   *
   * @param config Bucket, endpoint, credentials.
   */
  constructor(config: S3Config) {
    const {
      bucket,
      prefix = "",
      endpoint,
      region = "us-east-1",
      accessKeyId,
      secretAccessKey,
      sessionToken,
      pathStyle = endpoint !== undefined,
    } = config;
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw new TypeError(
        `Cannot use S3 bucket "${bucket}" as it is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-')`,
      );
    }
    if (prefix !== "" && !prefix.endsWith("/")) {
      throw new TypeError(
        `Cannot use S3 key prefix "${prefix}" as it does not end with "/"`,
      );
    }
    if (accessKeyId === "" || secretAccessKey === "") {
      throw new TypeError(
        "Cannot sign S3 requests as the access key id or the secret access key is empty: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
      );
    }
    const root = endpoint ?? `https://s3.${region}.amazonaws.com`;
    let base: URL;
    try {
      base = new URL(root);
    } catch {
      throw new TypeError(
        `Cannot use S3 endpoint "${root}" as it is not a URL: give e.g. http://127.0.0.1:9000`,
      );
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new TypeError(
        `Cannot use S3 endpoint "${root}" as it is not http: or https:`,
      );
    }
    if (!pathStyle) base.hostname = `${bucket}.${base.hostname}`;
    this.bucket = bucket;
    this.prefix = prefix;
    this.#base = base;
    this.#pathStyle = pathStyle;
    this.#region = region;
    this.#accessKeyId = accessKeyId;
    this.#secretAccessKey = secretAccessKey;
    this.#sessionToken = sessionToken;
    const Agent = base.protocol === "https:" ? https.Agent : http.Agent;
    this.#agent = new Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** The endpoint, for messages (never carries credentials). */
  get endpoint(): string {
    return this.#base.origin;
  }

  /** The URL of a key (below the prefix), without query. */
  #url(key: string, query: Record<string, string> | undefined): URL {
    const object = key === "" ? "" : encodeKey(this.prefix + key);
    const url = new URL(this.#base.href);
    url.pathname = this.#pathStyle ? `/${this.bucket}/${object}` : `/${object}`;
    for (const [name, value] of Object.entries(query ?? {})) {
      url.searchParams.set(name, value);
    }
    return url;
  }

  /**
   * Sends one request whose body is given whole (or none).
   *
   * @param method HTTP method.
   * @param request Key, query, headers, body.
   * @returns The answer; its body must be read or cancelled.
   */
  request(method: string, request: S3Request): Promise<S3Response> {
    return this.#send(method, request, request.body);
  }

  async #send(
    method: string,
    request: S3Request,
    body: Uint8Array | undefined,
  ): Promise<S3Response> {
    const { key, query, headers = {}, signal, accept = [] } = request;
    signal?.throwIfAborted();
    const url = this.#url(key, query);
    const length = body?.byteLength ?? 0;
    const signer = new AwsV4Signer({
      method,
      url: url.href,
      headers: {
        ...headers,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
      },
      accessKeyId: this.#accessKeyId,
      secretAccessKey: this.#secretAccessKey,
      ...(this.#sessionToken === undefined
        ? {}
        : { sessionToken: this.#sessionToken }),
      service: "s3",
      region: this.#region,
      cache: this.#cache,
    });
    const signed = await signer.sign();
    const outgoing: Record<string, string> = {};
    signed.headers.forEach((value, name) => {
      outgoing[name] = value;
    });
    if (body !== undefined || method === "PUT" || method === "POST") {
      outgoing["content-length"] = String(length);
    }
    const transport = url.protocol === "https:" ? https : http;
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = transport.request(url, {
        method,
        headers: outgoing,
        agent: this.#agent,
        signal,
      }, resolve);
      req.on("error", (error: Error) => {
        reject(
          signal?.aborted ? signal.reason : new StorageUnavailableError(
            `Cannot reach S3 at ${this.endpoint}: ${error.message}`,
            { retryAfterSeconds: RETRY_AFTER_SECONDS, cause: error },
          ),
        );
      });
      if (body === undefined) req.end();
      else req.end(body);
    });
    const status = response.statusCode ?? 0;
    const answer: S3Response = {
      status,
      headers: response.headers,
      body: Readable.toWeb(response) as ReadableStream<Uint8Array>,
      text: async () => {
        const chunks: Buffer[] = [];
        for await (const chunk of response) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks).toString("utf8");
      },
    };
    if ((status >= 200 && status < 300) || accept.includes(status)) {
      return answer;
    }
    const xml = method === "HEAD" ? "" : await answer.text().catch(() => "");
    const code = xmlText(xml, "Code") ?? "";
    const what = `S3 ${method} of "${key === "" ? this.bucket : key}"`;
    if (status >= 500 || code === "SlowDown") {
      throw new StorageUnavailableError(
        `Cannot complete ${what} as S3 at ${this.endpoint} answered ${status}${
          code === "" ? "" : ` ${code}`
        }`,
        { retryAfterSeconds: RETRY_AFTER_SECONDS },
      );
    }
    const hint = status === 403
      ? ": check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"
      : code === "NoSuchBucket"
      ? `: create bucket "${this.bucket}" first`
      : "";
    throw new S3Error(
      `${what} failed with ${status}${code === "" ? "" : ` ${code}`}${hint}`,
      status,
      code,
    );
  }

  /** Closes idle connections. */
  close(): void {
    this.#agent.destroy();
  }
}
