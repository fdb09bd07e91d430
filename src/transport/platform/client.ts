/**
 * {@linkcode PlatformClient}: one method per endpoint of the Ultralytics
 * Platform webhook protocol (events, upload URLs, the signed `PUT`), over
 * `fetch` and `node:http`.
 *
 * Every failure becomes a {@linkcode HUBRequestError} (with `status`, the
 * server's message, `retriable` for network errors, 408, 429 and 5xx, and
 * `retryAfter`) or a {@linkcode HUBTimeoutError}; a caller's abort rejects
 * with the signal's reason. A 401 stops the client: every later call rejects
 * at once with the same error, which is logged once. The key travels only in
 * the `Authorization: Bearer` header and never in a URL, log line or error.
 *
 * @module
 */

import {
  HUBConfigError,
  HUBRequestError,
  HUBTimeoutError,
} from "../../common/errors.ts";
import { consoleLogger } from "../../common/logger.ts";
import { AGENT } from "../../common/version.ts";
import { isRetriableStatus, parseRetryAfter } from "../client.ts";
import { isRecord, readCapped } from "../reply.ts";
import { putSignedFile } from "./signed_put.ts";
import type { SignedPutResult } from "./signed_put.ts";
import {
  isPlatformKey,
  jsonSafe,
  PLATFORM_EVENTS_PATH,
  PLATFORM_UPLOAD_PATH,
} from "../../protocol/platform.ts";
import type {
  PlatformEventName,
  PlatformEventReply,
  PlatformTarget,
  UploadUrlReply,
} from "../../protocol/platform.ts";
import type { Logger, ProgressCallback } from "../../protocol/types.ts";

/** Options of the {@linkcode PlatformClient} constructor. */
export interface PlatformClientOptions {
  /** Webhooks root, e.g. `https://platform.ultralytics.com/api/webhooks` (a trailing `/` is removed). */
  webhooksUrl: string;
  /** API key: `ul_` and 40 hex characters. */
  apiKey: string;
  /** `fetch` for the JSON endpoints, e.g. a fault injector in tests. @default {globalThis.fetch} */
  fetch?: typeof fetch | undefined;
  /** Aborts every request of this client. @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Time limit of each request; for uploads the longest time without progress, in ms. @default {30000} */
  timeout?: number | undefined;
  /** `user-agent` header. @default {AGENT} */
  agent?: string | undefined;
  /** Where the one 401 message goes. @default {consoleLogger()} */
  logger?: Logger | undefined;
}

/** Per-call options of {@linkcode PlatformClient} methods. */
export interface PlatformRequestOptions {
  /** Aborts this request. @default {undefined} */
  signal?: AbortSignal | undefined;
  /** Time limit of this attempt in ms. @default {the client's `timeout`} */
  timeout?: number | undefined;
}

const DEFAULT_TIMEOUT = 30_000;
const MAX_REPLY_BYTES = 1024 * 1024;

/**
 * Checks an API key's format without ever echoing it.
 *
 * @param key The candidate key.
 * @returns The key.
 * @throws {HUBConfigError} When it is not `ul_` and 40 hex characters.
 *
 * @example Refuse a HUB key
 * ```ts
 * import { checkPlatformKey } from "./client.ts";
 *
 * try {
 *   checkPlatformKey("a".repeat(42));
 * } catch (error) {
 *   console.assert(!String(error).includes("aaaa"));
 * }
 * ```
 */
export function checkPlatformKey(key: unknown): string {
  if (isPlatformKey(key)) return key;
  const what = typeof key !== "string" || key === ""
    ? "no API key was given"
    : `the API key (${key.length} characters) is not "ul_" followed by 40 hex characters`;
  throw new HUBConfigError(
    `Cannot report to the Ultralytics Platform as ${what}: pass apiKey or set ULTRALYTICS_API_KEY to a key from <platform>/settings`,
  );
}

/**
 * A typed client of the Platform webhook protocol.
 *
 * @example Send an event to a server
 * ```ts
 * import { PlatformClient } from "./client.ts";
 *
 * // A fetch that plays the server, to keep the example self-contained.
 * const fetch = (() =>
 *   Promise.resolve(Response.json({ modelId: "m1", runId: "r1" }))) as unknown as typeof globalThis.fetch;
 * const client = new PlatformClient({
 *   webhooksUrl: "http://127.0.0.1:8080/api/webhooks",
 *   apiKey: "ul_" + "0".repeat(40),
 *   fetch,
 * });
 * const reply = await client.sendEvent("epoch_end", { epoch: 0, metrics: {} }, { modelId: "m1" });
 * console.assert(reply.runId === "r1");
 * ```
 */
export class PlatformClient {
  /** The webhooks root, without trailing slash. */
  readonly webhooksUrl: string;
  /** The `user-agent` sent. */
  readonly agent: string;
  #apiKey: string;
  #fetch: typeof fetch;
  #signal: AbortSignal | undefined;
  #timeout: number;
  #logger: Logger;
  #unauthorized: HUBRequestError | undefined;

  /**
   * Creates a client; nothing is sent until a method is called.
   *
   * @param options Webhooks root, key, `fetch`, signal and timeout.
   * @throws {HUBConfigError} When the key is malformed or would travel in clear text.
   * @throws {TypeError} When the webhooks root is not an http(s) URL.
   */
  constructor(options: PlatformClientOptions) {
    const {
      webhooksUrl,
      apiKey,
      fetch: fetchFn = globalThis.fetch,
      signal,
      timeout = DEFAULT_TIMEOUT,
      agent = AGENT,
      logger = consoleLogger(),
    } = options;
    let url: URL;
    try {
      url = new URL(String(webhooksUrl));
    } catch {
      throw new TypeError(
        "Cannot create the Platform client as 'webhooksUrl' is not a URL: pass e.g. https://platform.ultralytics.com/api/webhooks",
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(
        `Cannot create the Platform client as 'webhooksUrl' must use http or https, got ${url.protocol}`,
      );
    }
    if (url.username !== "" || url.password !== "" || url.search !== "") {
      throw new TypeError(
        "Cannot create the Platform client as 'webhooksUrl' must not carry credentials or a query: pass the key as 'apiKey'",
      );
    }
    this.#apiKey = checkPlatformKey(apiKey);
    const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i.test(
      url.hostname,
    );
    if (url.protocol === "http:" && !loopback) {
      throw new HUBConfigError(
        `Cannot send the API key to ${url.host} over plain HTTP: use https, or a loopback address for a local HUB`,
      );
    }
    if (!(timeout > 0)) {
      throw new RangeError(
        `Cannot create the Platform client as 'timeout' must be a positive number of milliseconds, got ${timeout}`,
      );
    }
    this.webhooksUrl = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
    this.agent = agent;
    this.#fetch = fetchFn;
    this.#signal = signal;
    this.#timeout = timeout;
    this.#logger = logger;
  }

  /** The 401 that stopped this client, if one arrived. */
  get unauthorized(): HUBRequestError | undefined {
    return this.#unauthorized;
  }

  /**
   * Sends one event with `POST <webhooks>/training/metrics`. NaN and
   * ±Infinity anywhere in `data` are sent as `null`.
   *
   * @param event Event name.
   * @param data The event's `data`.
   * @param target `{ modelId }` once known, else `{ project, name }`.
   * @param options Signal and timeout.
   * @returns The reply (every field optional).
   */
  async sendEvent(
    event: PlatformEventName,
    data: unknown,
    target: PlatformTarget,
    options: PlatformRequestOptions = {},
  ): Promise<PlatformEventReply> {
    const body = "modelId" in target
      ? { event, data: jsonSafe(data), modelId: target.modelId }
      : {
        event,
        data: jsonSafe(data),
        project: target.project,
        name: target.name,
      };
    const reply = await this.#post(
      PLATFORM_EVENTS_PATH,
      body,
      `send ${event}`,
      options,
    );
    const out: PlatformEventReply = {};
    if (typeof reply.modelId === "string" && reply.modelId !== "") {
      out.modelId = reply.modelId;
    }
    if (typeof reply.modelSlug === "string") out.modelSlug = reply.modelSlug;
    if (typeof reply.runId === "string" && reply.runId !== "") {
      out.runId = reply.runId;
    }
    if (reply.cancelled === true) out.cancelled = true;
    return out;
  }

  /**
   * Asks for a signed upload URL with `POST <webhooks>/models/upload`.
   *
   * @param filename File name to store, e.g. `best.pt`.
   * @param target `{ modelId }` once known, else `{ project, name }`.
   * @param runId The run's id, when known.
   * @param options Signal and timeout.
   * @returns The signed URL and storage path.
   */
  async requestUpload(
    filename: string,
    target: PlatformTarget,
    runId: string | undefined,
    options: PlatformRequestOptions = {},
  ): Promise<UploadUrlReply> {
    const path = PLATFORM_UPLOAD_PATH;
    const reply = await this.#post(
      path,
      {
        filename,
        ...target,
        ...(runId === undefined ? {} : { runId }),
      },
      "get an upload URL",
      options,
    );
    if (
      typeof reply.uploadUrl !== "string" || typeof reply.gcsPath !== "string"
    ) {
      throw new HUBRequestError(
        `Cannot get an upload URL as the reply has no 'uploadUrl' and 'gcsPath': check that ${this.webhooksUrl} is a Platform webhooks root`,
        { method: "POST", path, status: 200, retriable: false },
      );
    }
    return {
      uploadUrl: reply.uploadUrl,
      gcsPath: reply.gcsPath,
      ...(typeof reply.uploadPath === "string"
        ? { uploadPath: reply.uploadPath }
        : {}),
    };
  }

  /**
   * Streams a file to a signed URL (see {@linkcode putSignedFile}).
   *
   * @param uploadUrl The signed URL.
   * @param file Path of the file.
   * @param options Signal, stall timeout and progress.
   * @returns Bytes and sha256 sent.
   */
  putFile(
    uploadUrl: string,
    file: string,
    options: PlatformRequestOptions & {
      onProgress?: ProgressCallback | undefined;
    } = {},
  ): Promise<SignedPutResult> {
    this.#stopIfUnauthorized();
    const signals = [options.signal, this.#signal].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    return putSignedFile(uploadUrl, file, {
      timeout: options.timeout ?? this.#timeout,
      agent: this.agent,
      signal: signals.length <= 1 ? signals[0] : AbortSignal.any(signals),
      onProgress: options.onProgress,
    });
  }

  #stopIfUnauthorized(): void {
    if (this.#unauthorized !== undefined) throw this.#unauthorized;
  }

  async #post(
    path: string,
    json: unknown,
    action: string,
    options: PlatformRequestOptions,
  ): Promise<Record<string, unknown>> {
    this.#stopIfUnauthorized();
    const { signal: callerSignal, timeout = this.#timeout } = options;
    callerSignal?.throwIfAborted();
    this.#signal?.throwIfAborted();
    const timeoutError = new HUBTimeoutError(
      `Cannot ${action} as POST ${path} got no reply within ${timeout} ms: retry later or raise 'timeout'`,
      { timeout },
    );
    const timer = new AbortController();
    const handle = setTimeout(() => timer.abort(timeoutError), timeout);
    const signal = AbortSignal.any(
      [timer.signal, callerSignal, this.#signal].filter(
        (s): s is AbortSignal => s !== undefined,
      ),
    );
    try {
      let response: Response;
      let text: string;
      try {
        response = await this.#fetch(`${this.webhooksUrl}${path}`, {
          method: "POST",
          headers: {
            accept: "application/json",
            "content-type": "application/json",
            "user-agent": this.agent,
            authorization: `Bearer ${this.#apiKey}`,
          },
          body: JSON.stringify(json),
          signal,
          // Not followed: fetch would carry the Bearer key to the new host.
          redirect: "manual",
        });
        text = await readCapped(response, () => {
          throw new HUBRequestError(
            `Cannot read the reply as it exceeds ${MAX_REPLY_BYTES} bytes: check the Platform URL`,
            {
              method: "POST",
              path,
              status: response.status,
              retriable: false,
            },
          );
        }, MAX_REPLY_BYTES);
      } catch (error) {
        if (callerSignal?.aborted) throw callerSignal.reason;
        if (this.#signal?.aborted) throw this.#signal.reason;
        if (timer.signal.aborted) throw timeoutError;
        if (error instanceof HUBRequestError) throw error;
        throw new HUBRequestError(
          `Cannot ${action} as POST ${path} failed on the network (${
            error instanceof Error ? error.message : String(error)
          }): check that ${this.webhooksUrl} is reachable, or retry later`,
          { method: "POST", path, retriable: true, cause: error },
        );
      }
      return this.#parse(response, text, path, action);
    } finally {
      clearTimeout(handle);
    }
  }

  #parse(
    response: Response,
    text: string,
    path: string,
    action: string,
  ): Record<string, unknown> {
    const status = response.status;
    let parsed: unknown;
    try {
      parsed = text.trim() === "" ? {} : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const message = isRecord(parsed)
      ? typeof parsed.message === "string"
        ? parsed.message
        : typeof parsed.error === "string"
        ? parsed.error
        : undefined
      : undefined;
    const safe = message?.split(this.#apiKey).join("***");
    if (
      response.type === "opaqueredirect" || (status >= 300 && status < 400)
    ) {
      throw new HUBRequestError(
        `Cannot ${action} as the server redirected POST ${path}: set the Platform URL to the server's final address (redirects are not followed, so the key stays with the server it was meant for)`,
        { method: "POST", path, status: status || undefined, retriable: false },
      );
    }
    if (!response.ok) {
      const error = new HUBRequestError(
        `Cannot ${action} as the server answered ${status}${
          safe === undefined ? "" : `: ${safe}`
        }${hintFor(status)}`,
        {
          method: "POST",
          path,
          status,
          serverMessage: safe,
          retryAfter: parseRetryAfter(response.headers),
          retriable: isRetriableStatus(status),
        },
      );
      if (status === 401) {
        this.#unauthorized = new HUBRequestError(
          `Cannot report to the Ultralytics Platform as ${this.webhooksUrl} refused the API key (401${
            safe === undefined ? "" : `: ${safe}`
          }): nothing more is sent for this run; check ULTRALYTICS_API_KEY or the apiKey option`,
          {
            method: "POST",
            path,
            status,
            serverMessage: safe,
            retriable: false,
            reported: true,
          },
        );
        this.#logger.error(this.#unauthorized.message);
        throw this.#unauthorized;
      }
      throw error;
    }
    if (!isRecord(parsed)) {
      throw new HUBRequestError(
        `Cannot ${action} as the reply of POST ${path} is not a JSON object: check that ${this.webhooksUrl} is a Platform webhooks root`,
        { method: "POST", path, status, retriable: status >= 500 },
      );
    }
    return parsed;
  }
}

function hintFor(status: number): string {
  if (status === 403) return ": the key may not write to this project";
  if (status === 404) return ": check the project and the Platform URL";
  if (status === 429) return ": the server asks to slow down; retry later";
  if (status >= 500) return ": the server failed; retry later";
  return "";
}
