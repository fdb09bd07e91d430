/**
 * The per-request time limit of the local HUB: a request whose response
 * (status and headers) is not ready within `requestTimeout` is answered
 * `503` with `Retry-After`, and the work left behind is told through an
 * `AbortSignal`, so that a storage call waiting on a lock, a slow disk or an
 * unreachable object store stops instead of holding the request's memory
 * for ever.
 *
 * What the limit counts: the time the server works on a request until its
 * `Response` exists. Not counted: the time a request body takes to arrive
 * (an upload's bytes, a JSON body), which the connection's idle timeout
 * bounds, and the streaming of a response body once it started (a weights
 * download, a page's live event stream). An upload's commit, after its body
 * arrived, is counted.
 *
 * Written here rather than taken from `hono/timeout`: that middleware races
 * the handler against a timer and throws a fixed exception, but the handler
 * it gives up on gets no signal (its database query keeps waiting), it
 * counts the time an upload's body takes to arrive (a 1 GiB upload on a
 * slow link would be cut off), and its reply cannot be the protocol's JSON
 * envelope for API routes and an HTML page for a browser's page.
 *
 * A timed-out write was either committed or not, never half-written (each
 * storage write is one transaction, one statement or one atomic rename); the
 * reply says the server cannot tell which, and a client retries. Metrics,
 * PATCH, heartbeats and uploads are upserts a retry repeats harmlessly; a
 * retried `POST /v1/models` may leave one unused extra model, a retried
 * export is recorded twice, and a retried `DELETE` may answer 404.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { fail, wantsHtml } from "./reply.ts";
import { markup } from "./web/html.ts";
import { PAGE_HEADERS, renderDocument } from "./web/layout.ts";

/** Default time limit of one request: 30 seconds. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Seconds a timed-out client is told to wait before it retries. */
export const TIMEOUT_RETRY_AFTER_SECONDS = 1;

/**
 * The reason a request's signal is aborted with when its time is up; a
 * handler that rejects with it has already been answered.
 */
export class RequestTimeoutError extends Error {
  /**
   * @param timeoutMs The limit that passed.
   */
  constructor(timeoutMs: number) {
    super(`The request did not complete within ${timeoutMs} ms`);
    this.name = "RequestTimeoutError";
  }
}

/** The clock of one request. */
class Deadline {
  readonly #controller = new AbortController();
  readonly #expired = Promise.withResolvers<void>();
  readonly #timeoutMs: number;
  #remaining: number;
  #startedAt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #pauses = 0;
  #done = false;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.#remaining = timeoutMs;
    this.#start();
  }

  /** Aborted with a {@linkcode RequestTimeoutError} when time is up. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Resolves when time is up. */
  get expired(): Promise<void> {
    return this.#expired.promise;
  }

  /** Stops the clock until the returned function is called. */
  pause(): () => void {
    if (this.#done) return () => {};
    if (this.#pauses++ === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#remaining -= performance.now() - this.#startedAt;
    }
    let resumed = false;
    return () => {
      if (resumed) return;
      resumed = true;
      if (--this.#pauses === 0 && !this.#done) this.#start();
    };
  }

  /** The response is ready: the clock stops for good, unaborted. */
  finish(): void {
    this.#done = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #start(): void {
    this.#startedAt = performance.now();
    this.#timer = setTimeout(
      () => this.#expire(),
      Math.max(0, this.#remaining),
    );
  }

  /** The limit, in milliseconds. */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** Tells the work left behind that its time is up (after the reply). */
  abort(): void {
    this.#controller.abort(new RequestTimeoutError(this.#timeoutMs));
  }

  #expire(): void {
    if (this.#done) return;
    this.#done = true;
    this.#timer = undefined;
    this.#expired.resolve();
  }
}

const deadlines = new WeakMap<Request, Deadline>();

/**
 * The signal that tells a request's work its time is up.
 *
 * @param request The request (as the route sees it).
 * @returns The signal, or `undefined` outside the time limit's middleware.
 */
export function requestSignal(request: Request): AbortSignal | undefined {
  return deadlines.get(request)?.signal;
}

/**
 * Stops a request's clock while the server waits for its body to arrive.
 *
 * @param request The request.
 * @returns Restarts the clock with the time that was left (call once).
 */
export function pauseDeadline(request: Request): () => void {
  return deadlines.get(request)?.pause() ?? (() => {});
}

/**
 * Gives a request that replaces another (e.g. with its body buffered) the
 * same clock.
 *
 * @param from The request the middleware saw.
 * @param to Its replacement.
 */
export function shareDeadline(from: Request, to: Request): void {
  const deadline = deadlines.get(from);
  if (deadline !== undefined) deadlines.set(to, deadline);
}

/**
 * The reply of a request whose time is up, for the error handler: whatever
 * the work left behind throws afterwards (the abort's reason, a cancelled
 * query) was already answered with it.
 *
 * @param request The request.
 * @returns The 503 reply, or `undefined` while the request has time.
 */
export function timedOutReply(request: Request): Response | undefined {
  const deadline = deadlines.get(request);
  return deadline?.signal.aborted === true
    ? timeoutReply(request, deadline.timeoutMs)
    : undefined;
}

function timeoutReply(request: Request, timeoutMs: number): Response {
  const path = new URL(request.url).pathname;
  const message =
    `The HUB could not answer within ${timeoutMs} ms; the request may or may not have taken effect: retry it`;
  const headers = { "retry-after": String(TIMEOUT_RETRY_AFTER_SECONDS) };
  if (
    !path.startsWith("/v1") && !path.startsWith("/api/") && wantsHtml(request)
  ) {
    const page = renderDocument({
      title: "Try again · Local HUB",
      body: markup`<div class="card"><h1>Try again</h1>
<p role="alert">The HUB could not prepare this page within ${
        timeoutMs / 1000
      } s. Reload in a moment.</p></div>`,
    });
    return new Response(page.value, {
      status: 503,
      headers: { ...PAGE_HEADERS, ...headers },
    });
  }
  return fail(503, message, headers);
}

/**
 * The middleware of the time limit (mount it first). A request not answered
 * within `timeoutMs` (not counting the time its body takes to arrive) gets
 * `503` with `Retry-After`: the JSON envelope, or a short HTML page for a
 * browser asking for a page. Its signal ({@linkcode requestSignal}) is then
 * aborted with a {@linkcode RequestTimeoutError}.
 *
 * @param timeoutMs Milliseconds to produce a response.
 * @returns The middleware.
 */
export function requestDeadline(timeoutMs: number): MiddlewareHandler {
  return async (c, next) => {
    const request = c.req.raw;
    // A request made through the app for another one (the Platform's upload)
    // already runs on that one's clock.
    if (deadlines.has(request)) return await next();
    const deadline = new Deadline(timeoutMs);
    deadlines.set(request, deadline);
    const work = next();
    // A handler finishing after the reply was sent is still followed to
    // its end, so that nothing it rejects with goes unhandled.
    work.catch(() => {});
    const late = await Promise.race([
      work.then(() => false, () => false),
      deadline.expired.then(() => true),
    ]);
    if (!late) {
      deadline.finish();
      await work;
      return;
    }
    c.res = timeoutReply(request, timeoutMs);
    deadline.abort();
  };
}
