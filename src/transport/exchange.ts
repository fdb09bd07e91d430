/**
 * One exchange with a HUB: build the request, send it under a time limit,
 * read the reply's envelope, and turn every failure into a typed error that
 * never carries a credential. `HUBClient` calls it once per
 * endpoint method.
 *
 * @module
 */

import {
  HUBConfigError,
  HUBRequestError,
  HUBTimeoutError,
} from "../common/errors.ts";
import { granted } from "../common/permissions.ts";
import { CHECKSUM_MISMATCH } from "../protocol/upload.ts";
import { INSTANCE_HEADER } from "../protocol/instance.ts";
import type { HUBError } from "../common/errors.ts";
import { redact } from "../common/redact.ts";
import type { MultipartBody } from "./multipart_body.ts";
import { hintFor, isRetriableStatus, parseRetryAfter } from "./http_status.ts";
import {
  isRecord,
  MAX_RESPONSE_BYTES,
  readCapped,
  redirectError,
} from "./reply.ts";
import type { RequestOptions } from "./client.ts";

/** What a client needs for an exchange. */
export interface ExchangeContext {
  /** API root without trailing slash. */
  apiRoot: string;
  /** Agent name sent as `user-agent`. */
  agent: string;
  /** API key, sent as `x-api-key`. */
  apiKey: string | undefined;
  /** ID token, sent as `authorization: Bearer` without an API key. */
  idToken: string | undefined;
  /** `fetch` to use. */
  fetch: typeof fetch;
  /** Aborts every request of the client. */
  signal: AbortSignal | undefined;
  /** Default time limit in milliseconds. */
  timeout: number;
  /** Receives the HUB's instance id from each reply that names it. */
  onInstance?: ((id: string) => void) | undefined;
}

/** A reply's envelope. */
export interface Envelope {
  success: boolean;
  data: unknown;
  message: string | undefined;
}

/** One request of the protocol. */
export interface Call {
  method: string;
  /** Path without query string: used in errors. */
  path: string;
  query?: string | undefined;
  /** What the call does, for messages: "get the model". */
  action: string;
  json?: unknown | undefined;
  upload?: { body: MultipartBody; contentType: string; contentLength: number };
  /** A 2xx reply with an empty body counts as success (no data needed). */
  emptyOk?: boolean | undefined;
  /** Return `success: false` replies (and 401/403) instead of throwing. */
  acceptRefusal?: boolean | undefined;
}

/**
 * Checks a time limit.
 *
 * @param value The limit.
 * @param where What it is for, for messages.
 * @returns The limit.
 * @throws {RangeError} When it is not a positive number.
 */
export function checkTimeout(value: unknown, where: string): number {
  if (typeof value !== "number" || Number.isNaN(value) || value <= 0) {
    throw new RangeError(
      `Cannot use ${where} as 'timeout' must be a positive number of milliseconds, got ${
        String(value)
      }`,
    );
  }
  return value;
}

/**
 * Removes the context's credentials (and query strings) from a text.
 *
 * @param ctx The client's context.
 * @param text The text.
 * @returns The cleaned text.
 */
export function redactFor(ctx: ExchangeContext, text: string): string {
  return redact(text, [ctx.apiKey, ctx.idToken]);
}

/**
 * The error for a reply that is not what the protocol promises.
 *
 * @param ctx The client's context.
 * @param method The request's method.
 * @param path The request's path.
 * @param action What the call does.
 * @param what What is wrong with the reply.
 * @param status The reply's status.
 * @returns The error.
 */
export function badReply(
  ctx: ExchangeContext,
  method: string,
  path: string,
  action: string,
  what: string,
  status = 200,
): HUBRequestError {
  return new HUBRequestError(
    redactFor(
      ctx,
      `Cannot ${action} as the server's reply ${what}: check that ${ctx.apiRoot} is a HUB server`,
    ),
    { method, path: redactFor(ctx, path), status, retriable: status >= 500 },
  );
}

/**
 * Sends one request of the protocol and reads its envelope: time limit (for
 * uploads: without progress), no redirects, a size cap, and every failure as
 * a typed error without credentials.
 *
 * @param ctx The client's context.
 * @param call What to send.
 * @param options The caller's signal and time limit.
 * @returns The reply's envelope.
 */
export async function exchange(
  ctx: ExchangeContext,
  call: Call,
  options: RequestOptions,
): Promise<Envelope> {
  const { signal: callerSignal, timeout = ctx.timeout } = options ?? {};
  if (callerSignal !== undefined && !(callerSignal instanceof AbortSignal)) {
    throw new TypeError(
      `Cannot ${call.action} as 'signal' is not an AbortSignal`,
    );
  }
  checkTimeout(timeout, call.action);
  callerSignal?.throwIfAborted();
  ctx.signal?.throwIfAborted();

  const { method, path, action } = call;
  if (ctx.fetch === globalThis.fetch) {
    const host = new URL(ctx.apiRoot).host;
    if (!granted({ name: "net", host }, "network access")) {
      throw new HUBConfigError(
        `Cannot ${action} as Deno's net permission for ${host} is not granted (the library never prompts for it): run with --allow-net`,
      );
    }
  }
  const safePath = redactFor(ctx, path);
  const timer = new AbortController();
  const upload = call.upload;
  const timeoutError = new HUBTimeoutError(
    upload === undefined
      ? `Cannot ${action} as ${method} ${safePath} got no reply within ${timeout} ms: retry later or raise 'timeout'`
      : `Cannot ${action} as ${method} ${safePath} made no progress for ${timeout} ms: retry later or raise 'timeout'`,
    { timeout },
  );
  let handle: ReturnType<typeof setTimeout> | undefined;
  const arm = (): void => {
    if (handle !== undefined) clearTimeout(handle);
    if (Number.isFinite(timeout) && !timer.signal.aborted) {
      handle = setTimeout(() => timer.abort(timeoutError), timeout);
    }
  };
  const signals = [timer.signal];
  if (callerSignal !== undefined) signals.push(callerSignal);
  if (ctx.signal !== undefined) signals.push(ctx.signal);
  const signal = signals.length === 1 ? timer.signal : AbortSignal.any(signals);

  const headers: Record<string, string> = {
    accept: "application/json",
    "user-agent": ctx.agent,
  };
  if (ctx.apiKey !== undefined) headers["x-api-key"] = ctx.apiKey;
  else if (ctx.idToken !== undefined) {
    headers.authorization = `Bearer ${ctx.idToken}`;
  }
  let body: BodyInit | undefined;
  if (call.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(call.json);
  } else if (upload !== undefined) {
    headers["content-type"] = upload.contentType;
    headers["content-length"] = String(upload.contentLength);
    body = upload.body.stream;
  }
  // Redirects are not followed: fetch would carry x-api-key to the new host.
  const init: RequestInit & { duplex?: "half" } = {
    method,
    headers,
    signal,
    redirect: "manual",
  };
  if (body !== undefined) init.body = body;
  if (upload !== undefined) init.duplex = "half";

  // Uploads re-arm the timer on every body chunk: a stall, not a size, times out.
  let stallWatch: ReturnType<typeof setInterval> | undefined;
  if (upload !== undefined && Number.isFinite(timeout)) {
    let last = -1;
    const probe = (): void => {
      const current = upload.body.loaded();
      if (current !== last) {
        last = current;
        arm();
      }
    };
    stallWatch = setInterval(
      probe,
      Math.max(10, Math.min(1000, timeout / 4)),
    );
  }
  arm();
  const failed = (error: unknown): unknown => {
    if (callerSignal?.aborted) return callerSignal.reason;
    if (ctx.signal?.aborted) return ctx.signal.reason;
    if (timer.signal.aborted) return timeoutError;
    const bodyError = upload?.body.error();
    if (bodyError !== undefined) return bodyError;
    return new HUBRequestError(
      redactFor(
        ctx,
        `Cannot ${action} as ${method} ${path} failed on the network (${
          error instanceof Error ? error.message : String(error)
        }): check that ${ctx.apiRoot} is reachable, or retry later`,
      ),
      { method, path: safePath, retriable: true, cause: error },
    );
  };
  try {
    let response: Response;
    let text: string;
    try {
      response = await ctx.fetch(
        `${ctx.apiRoot}${path}${call.query ?? ""}`,
        init,
      );
      const instance = response.headers.get(INSTANCE_HEADER);
      if (instance !== null && instance !== "") ctx.onInstance?.(instance);
      if (
        response.type === "opaqueredirect" ||
        (response.status >= 300 && response.status < 400)
      ) {
        await response.body?.cancel().catch(() => {});
        throw redirectError(response, method, safePath, action, ctx.apiRoot);
      }
      text = await readCapped(response, () => {
        throw new HUBRequestError(
          `Cannot ${action} as the reply of ${method} ${safePath} exceeds ${MAX_RESPONSE_BYTES} bytes: check that ${ctx.apiRoot} is a HUB server`,
          {
            method,
            path: safePath,
            status: response.status,
            retriable: false,
          },
        );
      });
    } catch (error) {
      if (error instanceof HUBRequestError) throw error;
      throw failed(error);
    }
    return parseReply(ctx, call, safePath, response, text);
  } finally {
    if (handle !== undefined) clearTimeout(handle);
    if (stallWatch !== undefined) clearInterval(stallWatch);
  }
}

function parseReply(
  ctx: ExchangeContext,
  call: Call,
  path: string,
  response: Response,
  text: string,
): Envelope {
  const { method, action } = call;
  const status = response.status;
  let parsed: unknown;
  let malformed: string | undefined;
  if (text.trim() !== "") {
    try {
      parsed = JSON.parse(text);
    } catch {
      malformed = /^\s*</.test(text)
        ? "is an HTML page, not JSON"
        : "is not valid JSON (truncated or malformed)";
    }
  }
  const message = isRecord(parsed) && typeof parsed.message === "string"
    ? parsed.message
    : undefined;
  if (!response.ok) {
    if (call.acceptRefusal && (status === 401 || status === 403)) {
      return { success: false, data: undefined, message };
    }
    const checksum = status === 400 && message !== undefined &&
      message.startsWith(CHECKSUM_MISMATCH);
    const retriable = isRetriableStatus(status) || checksum;
    const retryAfter = parseRetryAfter(response.headers);
    const detail = message !== undefined
      ? `: ${message}`
      : malformed !== undefined
      ? ` with a reply that ${malformed}`
      : "";
    return fail(
      refusal(
        ctx,
        `Cannot ${action} as the server answered ${status}${detail}${
          checksum
            ? ": the file was corrupted in transit; retry"
            : hintFor(status)
        }`,
        { method, path, status, message, retryAfter, retriable },
      ),
    );
  }
  if (malformed !== undefined) {
    return fail(badReply(ctx, method, path, action, malformed, status));
  }
  if (parsed === undefined) {
    if (call.emptyOk === true) {
      return { success: true, data: undefined, message: undefined };
    }
    return fail(badReply(ctx, method, path, action, "is empty", status));
  }
  if (!isRecord(parsed) || typeof parsed.success !== "boolean") {
    return fail(
      badReply(
        ctx,
        method,
        path,
        action,
        "is not a HUB envelope ({ success, data, message })",
        status,
      ),
    );
  }
  if (!parsed.success) {
    if (call.acceptRefusal) {
      return { success: false, data: parsed.data, message };
    }
    return fail(
      refusal(
        ctx,
        `Cannot ${action} as the server answered ${status} with success false${
          message === undefined ? "" : `: ${message}`
        }`,
        { method, path, status, message, retriable: false },
      ),
    );
  }
  return { success: true, data: parsed.data, message };
}

/** The error for a reply that refuses the request, its texts redacted. */
function refusal(
  ctx: ExchangeContext,
  text: string,
  reply: {
    method: string;
    path: string;
    status: number;
    message: string | undefined;
    retryAfter?: number | undefined;
    retriable: boolean;
  },
): HUBRequestError {
  const { message, ...details } = reply;
  return new HUBRequestError(redactFor(ctx, text), {
    ...details,
    serverMessage: message === undefined ? undefined : redactFor(ctx, message),
  });
}

function fail(error: HUBError): never {
  throw error;
}
