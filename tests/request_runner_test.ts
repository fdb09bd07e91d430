// The request runner: retry budgets, Retry-After, deadlines, abort and
// settle(), error classification and wording, then the same against the
// local HUB. Over 500 lines because it is one test per rule (23 of them).
import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertNotMatch,
  assertRejects,
  assertStrictEquals,
  assertThrows,
} from "@std/assert";
import { delay } from "@std/async/delay";
import net from "node:net";
import process from "node:process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_BUDGETS,
  describeError,
  isRetriableError,
  RequestRunner,
} from "../src/session/request_runner.ts";
import type { RequestRunnerOptions } from "../src/session/request_runner.ts";
import { HUBClient } from "../src/transport/client.ts";
import { HUBRequestError, HUBTimeoutError } from "../src/common/errors.ts";
import type { Logger } from "../src/protocol/types.ts";
import { serveHub } from "../src/server/mod.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";

interface RecordingLogger extends Logger {
  lines: { info: string[]; warn: string[]; error: string[] };
}

function recordingLogger(): RecordingLogger {
  const lines = {
    info: [] as string[],
    warn: [] as string[],
    error: [] as string[],
  };
  return {
    lines,
    info: (message) => lines.info.push(message),
    warn: (message) => lines.warn.push(message),
    error: (message) => lines.error.push(message),
  };
}

function queueWith(
  logger: Logger,
  options: Partial<RequestRunnerOptions> = {},
): RequestRunner {
  return new RequestRunner({
    logger,
    backoff: { minTimeout: 1, maxTimeout: 5 },
    ...options,
  });
}

function requestError(
  status: number | undefined,
  serverMessage: string,
  init: { retriable?: boolean; retryAfter?: number } = {},
): HUBRequestError {
  const retriable = init.retriable ??
    (status === undefined ||
      [408, 429, 500, 502, 503, 504].includes(status));
  return new HUBRequestError(`Cannot upload metrics: ${serverMessage}`, {
    method: "POST",
    path: "/v1/models/abc",
    status,
    serverMessage,
    retryAfter: init.retryAfter,
    retriable,
  });
}

function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}

/** A loopback URL on which nothing listens. */
async function closedPortUrl(path: string): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve())
  );
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}${path}`;
}

describe("RequestRunner", () => {
  test("run() resolves with the result, tracks the request and counts the success", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    let release: (value: string) => void = () => {};
    const pending = queue.run(
      "metrics",
      "metrics upload",
      () =>
        new Promise<string>((resolve) => {
          release = resolve;
        }),
    );
    assertEquals(queue.pending, 1);
    release("done");
    assertEquals(await pending, "done");
    await queue.settle();
    assertEquals(queue.pending, 0);
    assertEquals(queue.stats, { retries: {}, failed: 0, succeeded: 1 });
    assertEquals(logger.lines, { info: [], warn: [], error: [] });
  });

  test("run() retries a 503 and logs the retry as a warning with the server's message", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    let calls = 0;
    const result = await queue.run(
      "metrics",
      "metrics upload of epoch 3",
      ({ attempt }) => {
        calls++;
        if (attempt === 1) {
          return Promise.reject(requestError(503, "Service unavailable"));
        }
        return Promise.resolve("sent");
      },
    );
    assertEquals(result, "sent");
    assertEquals(calls, 2);
    assertEquals(queue.stats.retries, { "503": 1 });
    assertEquals(queue.stats.succeeded, 1);
    assertEquals(logger.lines.warn.length, 1);
    assertMatch(
      logger.lines.warn[0] ?? "",
      /^Metrics upload of epoch 3 failed \(HTTP 503: Service unavailable\): retrying, attempt 2 of 3$/,
    );
    assertEquals(logger.lines.error.length, 0);
  });

  test("run() fails fast on a 400 and logs the server's message once", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    const refused = requestError(400, "Epoch must be a number");
    let calls = 0;
    const error = await queue.run("metrics", "metrics upload", () => {
      calls++;
      return Promise.reject(refused);
    }).catch((e) => e);
    assertEquals(error, refused);
    assertEquals(calls, 1);
    assertEquals(logger.lines.warn.length, 0);
    assertEquals(logger.lines.error.length, 1);
    assertMatch(
      logger.lines.error[0] ?? "",
      /^Metrics upload failed: HTTP 400: Epoch must be a number; the server refused/,
    );
    assertEquals(queue.stats, { retries: {}, failed: 1, succeeded: 0 });
  });

  test("run() tells the user to check the API key on a 401", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    await assertRejects(
      () =>
        queue.run(
          "other",
          "loading the model",
          () => Promise.reject(requestError(401, "Invalid API key")),
        ),
      HUBRequestError,
    );
    assertMatch(logger.lines.error[0] ?? "", /check the API key/);
  });

  test("run() rejects with the last attempt's HUBError when the kind's attempts are spent", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    let calls = 0;
    const last = requestError(502, "Bad gateway");
    const error = await queue.run("metrics", "metrics upload", () => {
      calls++;
      return Promise.reject(last);
    }).catch((e) => e);
    assertEquals(calls, DEFAULT_BUDGETS.metrics.maxAttempts);
    // Not std's RetryError: the caller gets the library's own error family.
    assertStrictEquals(error, last);
    assertEquals(logger.lines.warn.length, 2);
    assertEquals(logger.lines.error.length, 1);
    assertMatch(
      logger.lines.error[0] ?? "",
      /^Metrics upload failed after 3 attempts: HTTP 502: Bad gateway; /,
    );
    assertEquals(queue.stats, {
      retries: { "502": 2 },
      failed: 1,
      succeeded: 0,
    });
  });

  test("run() honours per-kind budgets from the options and per-call overrides", async () => {
    const queue = queueWith(recordingLogger(), {
      budgets: { checkpoint: { maxAttempts: 2 } },
    });
    let calls = 0;
    const failing = () => {
      calls++;
      return Promise.reject(requestError(500, "Internal error"));
    };
    await assertRejects(
      () => queue.run("checkpoint", "checkpoint upload", failing),
      HUBRequestError,
    );
    assertEquals(calls, 2);
    calls = 0;
    await assertRejects(
      () =>
        queue.run("checkpoint", "checkpoint upload", failing, {
          budget: { maxAttempts: 4 },
        }),
      HUBRequestError,
    );
    assertEquals(calls, 4);
    calls = 0;
    await assertRejects(
      () => queue.run("heartbeat", "heartbeat", failing),
      HUBRequestError,
    );
    assertEquals(calls, 1);
  });

  test("run() waits at least as long as the Retry-After hint says", async () => {
    const hint = 50;
    const queue = queueWith(recordingLogger());
    let calls = 0;
    const start = performance.now();
    await queue.run("metrics", "metrics upload", () => {
      if (++calls === 1) {
        return Promise.reject(
          requestError(429, "Rate limit reached", { retryAfter: hint }),
        );
      }
      return Promise.resolve();
    });
    const elapsed = performance.now() - start;
    assertEquals(calls, 2);
    // Timers have millisecond granularity: allow 1 ms of rounding.
    assert(elapsed >= hint - 1, `waited only ${elapsed} ms`);
    assertEquals(queue.stats.retries, { "429": 1 });
  });

  test("run() rejects with a HUBTimeoutError when the server's Retry-After would pass the deadline", async () => {
    const logger = recordingLogger();
    const queue = new RequestRunner({
      logger,
      backoff: { minTimeout: 1, maxTimeout: 1, jitter: 0 },
      budgets: { final: { deadline: 100 } },
    });
    const last = requestError(503, "Service unavailable", {
      retryAfter: 1_000,
    });
    let calls = 0;
    const error = await queue.run("final", "final upload", () => {
      calls++;
      return Promise.reject(last);
    }).catch((e) => e);
    assertEquals(calls, 1);
    assert(error instanceof HUBTimeoutError);
    assertEquals(error.cause, last);
    assertEquals(logger.lines.error.length, 1);
    assertMatch(logger.lines.error[0] ?? "", /did not answer in time/);
  });

  test("run() aborts a stalled attempt after the attempt timeout and retries it", async () => {
    const queue = queueWith(recordingLogger(), {
      budgets: { final: { attemptTimeout: 10 } },
    });
    const signals: AbortSignal[] = [];
    const result = await queue.run(
      "final",
      "final upload",
      ({ attempt, signal }) => {
        signals.push(signal);
        return attempt === 1 ? waitForAbort(signal) : Promise.resolve("ok");
      },
    );
    assertEquals(result, "ok");
    assertEquals(signals[0]?.aborted, true);
    assert(signals[0]?.reason instanceof HUBTimeoutError);
    assertEquals(queue.stats.retries, { timeout: 1 });
  });

  test("run() retries real network errors from the client and never logs the query string", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger, {
      budgets: { other: { maxAttempts: 2 } },
    });
    const url = await closedPortUrl("/v1/models/abc?api_key=SECRET123");
    // What a transport makes of fetch's network error: the runtimes put the
    // URL, query string included, in the message or its cause.
    const error = await queue.run(
      "other",
      "loading the model",
      ({ signal }) =>
        fetch(url, { signal }).catch((cause: Error) => {
          throw new HUBRequestError(
            `Cannot load the model: ${cause.message} ${
              (cause.cause as Error | undefined)?.message ?? ""
            }`,
            { method: "GET", path: "/v1/models/abc", retriable: true, cause },
          );
        }),
    ).catch((e) => e);
    assertInstanceOf(error, HUBRequestError);
    assertEquals(error.status, undefined);
    assert(isRetriableError(error));
    assertEquals(queue.stats.retries, { network: 1 });
    const lines = [...logger.lines.warn, ...logger.lines.error];
    assertEquals(lines.length, 2);
    for (const line of lines) {
      assertNotMatch(line, /SECRET123|api_key/);
    }
  });

  test("run() rejects with the reason of its own signal without logging a failure", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    const controller = new AbortController();
    const reason = new Error("Upload superseded");
    const pending = queue.run(
      "checkpoint",
      "checkpoint upload",
      ({ signal }) => waitForAbort(signal),
      { signal: controller.signal },
    );
    controller.abort(reason);
    assertStrictEquals(await pending.catch((e) => e), reason);
    assertEquals(logger.lines.error.length, 0);
    assertEquals(queue.stats.failed, 0);
    assertEquals((await queue.settle()).settled, true);
  });

  test("abort() rejects every request in flight and every later one with the reason", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    const first = queue.run(
      "final",
      "final upload",
      ({ signal }) => waitForAbort(signal),
    );
    const second = queue.run(
      "metrics",
      "metrics upload",
      () => new Promise<never>(() => {}),
    ); // ignores its signal
    const reason = new Error("Session closed");
    queue.abort(reason);
    assertStrictEquals(await first.catch((e) => e), reason);
    assertStrictEquals(await second.catch((e) => e), reason);
    assertEquals(queue.pending, 0);
    assertMatch(logger.lines.warn[0] ?? "", /^Aborting 2 request/);
    let calls = 0;
    assertStrictEquals(
      await queue.run(
        "other",
        "loading the model",
        () => Promise.resolve(calls++),
      ).catch((e) => e),
      reason,
    );
    assertEquals(calls, 0);
  });

  test("the runner's signal option aborts its requests", async () => {
    const controller = new AbortController();
    const queue = queueWith(recordingLogger(), { signal: controller.signal });
    const pending = queue.run(
      "other",
      "loading the model",
      ({ signal }) => waitForAbort(signal),
    );
    controller.abort(new Error("Stopped"));
    await assertRejects(() => pending, Error, "Stopped");
  });

  test("settle() waits for every request, including ones started while flushing", async () => {
    const queue = queueWith(recordingLogger());
    const done: string[] = [];
    void queue.run("metrics", "metrics upload", async () => {
      await delay(5);
      done.push("first");
      void queue.run("checkpoint", "checkpoint upload", async () => {
        await delay(5);
        done.push("second");
      });
    });
    const report = await queue.settle({ timeout: 10_000 });
    assertEquals(report, { settled: true, pending: 0 });
    assertEquals(done, ["first", "second"]);
  });

  test("settle() never rejects when requests fail", async () => {
    const queue = queueWith(recordingLogger());
    const failed = queue.run(
      "other",
      "deleting the model",
      () => Promise.reject(requestError(404, "Model not found")),
    );
    const report = await queue.settle();
    assertEquals(report, { settled: true, pending: 0 });
    await assertRejects(() => failed, HUBRequestError);
  });

  test("settle() gives up after its timeout and reports what is still pending", async () => {
    const queue = queueWith(recordingLogger());
    const stalled = queue.run(
      "final",
      "final upload",
      ({ signal }) => waitForAbort(signal),
    );
    const report = await queue.settle({ timeout: 20 });
    assertEquals(report, { settled: false, pending: 1 });
    queue.abort(new Error("Closed"));
    await assertRejects(() => stalled, Error, "Closed");
    assertEquals(await queue.settle({ timeout: 0 }), {
      settled: true,
      pending: 0,
    });
  });

  test("tracking causes no unhandled rejection when the caller handles its promise", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const queue = queueWith(recordingLogger());
      const results = await Promise.allSettled([
        queue.run(
          "metrics",
          "metrics upload",
          () => Promise.reject(requestError(400, "Bad")),
        ),
        queue.run(
          "metrics",
          "metrics upload",
          () => Promise.reject(requestError(503, "Busy")),
        ),
      ]);
      await queue.settle();
      await delay(10);
      assertEquals(results.map((r) => r.status), ["rejected", "rejected"]);
      assertEquals(unhandled, []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  test("RequestRunner validates its options and run() its arguments", () => {
    const logger = recordingLogger();
    const invalid: Array<[Partial<RequestRunnerOptions>, ErrorConstructor]> = [
      [{ logger: {} as Logger }, TypeError],
      [{ budgets: { metrics: { maxAttempts: 0 } } }, RangeError],
      [{ budgets: { metrics: { deadline: -1 } } }, RangeError],
      [{ budgets: { final: { attemptTimeout: NaN } } }, RangeError],
      [{
        budgets: { bogus: {} } as NonNullable<RequestRunnerOptions["budgets"]>,
      }, TypeError],
    ];
    for (const [options, ErrorClass] of invalid) {
      assertThrows(
        () => new RequestRunner({ logger, ...options }),
        ErrorClass,
        undefined,
        JSON.stringify(options),
      );
    }
    const queue = queueWith(logger);
    const fn = () => Promise.resolve();
    assertThrows(
      () => queue.run("bogus" as "other", "label", fn),
      TypeError,
    );
    assertThrows(() => queue.run("other", "", fn), TypeError);
    assertThrows(
      () => queue.run("other", "label", fn, { budget: { maxAttempts: 1.5 } }),
      RangeError,
    );
    assertEquals(queue.pending, 0);
  });

  test("DEFAULT_BUDGETS holds the documented, frozen budgets", () => {
    assertEquals(DEFAULT_BUDGETS, {
      metrics: { maxAttempts: 3, deadline: 30_000, attemptTimeout: 10_000 },
      checkpoint: {
        maxAttempts: 10,
        deadline: 3_600_000,
        attemptTimeout: 600_000,
      },
      final: {
        maxAttempts: 10,
        deadline: 3_600_000,
        attemptTimeout: 1_800_000,
      },
      heartbeat: { maxAttempts: 1, deadline: 30_000, attemptTimeout: 30_000 },
      other: { maxAttempts: 5, deadline: 60_000, attemptTimeout: 30_000 },
    });
    assert(Object.isFrozen(DEFAULT_BUDGETS));
    assert(Object.isFrozen(DEFAULT_BUDGETS.metrics));
  });
});

describe("isRetriableError()", () => {
  test("isRetriableError() follows the error's retriable flag, timeouts and network errors", () => {
    assertEquals(isRetriableError(requestError(503, "Busy")), true);
    assertEquals(isRetriableError(requestError(429, "Slow down")), true);
    assertEquals(isRetriableError(requestError(undefined, "offline")), true);
    assertEquals(isRetriableError(requestError(400, "Bad")), false);
    assertEquals(
      isRetriableError(
        requestError(400, "Checksum mismatch", { retriable: true }),
      ),
      true,
    );
    assertEquals(
      isRetriableError(new HUBTimeoutError("Late", { timeout: 10 })),
      true,
    );
    // Decided by type and code, never by the message: a TypeError is a bug.
    assertEquals(isRetriableError(new TypeError("fetch failed")), false);
    assertEquals(
      isRetriableError(
        Object.assign(new Error("refused"), { code: "ECONNREFUSED" }),
      ),
      true,
    );
    assertEquals(
      isRetriableError(new DOMException("Aborted", "AbortError")),
      false,
    );
    assertEquals(
      isRetriableError(new TypeError("x.foo is not a function")),
      false,
    );
    assertEquals(isRetriableError(new Error("bug")), false);
    assertEquals(isRetriableError("string"), false);
    assertEquals(isRetriableError(undefined), false);
  });

  test("isRetriableError() accepts the client's error for a refused connection", async () => {
    const client = new HUBClient({
      apiRoot: await closedPortUrl(""),
      logger: recordingLogger(),
    });
    const error = await client.getModel("abc").catch((e) => e);
    assertInstanceOf(error, HUBRequestError);
    assertEquals(isRetriableError(error), true);
  });
});

describe("describeError()", () => {
  test("describeError() strips query strings and key values from messages", () => {
    const error = new TypeError("fetch failed", {
      cause: new Error(
        "error sending request for url (http://127.0.0.1:9/v1/models?api_key=SECRET): refused",
      ),
    });
    const text = describeError(error);
    assertMatch(text, /http:\/\/127\.0\.0\.1:9\/v1\/models\)/);
    assertNotMatch(text, /SECRET/);
    assertNotMatch(describeError(new Error("bad token=SECRET")), /SECRET/);
    assert(describeError(new Error("x".repeat(1_000))).length <= 300);
  });
});

describe("RequestRunner with the local HUB", () => {
  /** POSTs JSON with `fetchFn`; throws HUBRequestError like the client does. */
  async function postJson(
    fetchFn: typeof fetch,
    url: string,
    body: unknown,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const init: RequestInit = {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    };
    if (signal !== undefined) init.signal = signal;
    const response = await fetchFn(url, init);
    const envelope = await response.json() as {
      success: boolean;
      data?: unknown;
      message?: string;
    };
    if (!response.ok || !envelope.success) {
      const status = response.status;
      throw new HUBRequestError(`Cannot POST: ${envelope.message}`, {
        method: "POST",
        path: new URL(url).pathname,
        status,
        serverMessage: envelope.message,
        retriable: [408, 429, 500, 502, 503, 504].includes(status),
      });
    }
    return envelope.data;
  }

  test("run() keeps an epoch that first met a 503 and stores it exactly once", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-queue-"));
    const server = await serveHub({ port: 0, dataDir });
    try {
      const payload = createModelPayload("yolov8n.yaml", {
        data: "coco8.yaml",
        epochs: 3,
      });
      const { id } = await postJson(
        fetch,
        `${server.url}/v1/models`,
        payload,
      ) as { id: string };

      // Fault the server cannot produce on demand: the first metrics POST
      // never reaches it and gets a crafted 503 instead.
      let faults = 0;
      let reached = 0;
      const faulty: typeof fetch = (input, init) => {
        if (faults++ === 0) {
          return Promise.resolve(
            Response.json(
              { success: false, message: "Service unavailable" },
              { status: 503 },
            ),
          );
        }
        reached++;
        return fetch(input, init);
      };

      const logger = recordingLogger();
      const queue = queueWith(logger);
      await queue.run(
        "metrics",
        "metrics upload of epoch 0",
        ({ signal }) =>
          postJson(faulty, `${server.url}/v1/models/${id}`, {
            type: "metrics",
            metrics: { "0": JSON.stringify({ "metrics/mAP50(B)": 0.5 }) },
          }, signal),
      );
      assertEquals(await queue.settle({ timeout: 5_000 }), {
        settled: true,
        pending: 0,
      });
      assertEquals(reached, 1);
      assertEquals(queue.stats.retries, { "503": 1 });
      assertEquals(logger.lines.warn.length, 1);
      assertEquals(logger.lines.error.length, 0);

      const listed = await fetch(`${server.url}/v1/models/${id}/metrics`);
      const envelope = await listed.json() as {
        data: Array<{ epoch: number; metrics: Record<string, number> }>;
      };
      assertEquals(envelope.data, [
        { epoch: 0, metrics: { "metrics/mAP50(B)": 0.5 } },
      ]);
    } finally {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
