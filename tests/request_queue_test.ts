import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import process from "node:process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_BUDGETS,
  describeError,
  isRetriableError,
  RequestQueue,
} from "../src/session/request_runner.ts";
import type { RequestQueueOptions } from "../src/session/request_runner.ts";
import { delay, RetryError } from "../src/session/retry.ts";
import { HUBRequestError, HUBTimeoutError } from "../src/common/errors.ts";
import type { Logger } from "../src/protocol/types.ts";
import { serveHub } from "../src/server/mod.ts";
import { createModelPayload } from "../src/session/session.ts";

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
  options: Partial<RequestQueueOptions> = {},
): RequestQueue {
  return new RequestQueue({
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

describe("RequestQueue", () => {
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
    assert.equal(queue.pending, 1);
    release("done");
    assert.equal(await pending, "done");
    await queue.flush();
    assert.equal(queue.pending, 0);
    assert.deepEqual(queue.stats, { retries: {}, failed: 0, succeeded: 1 });
    assert.deepEqual(logger.lines, { info: [], warn: [], error: [] });
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
    assert.equal(result, "sent");
    assert.equal(calls, 2);
    assert.deepEqual(queue.stats.retries, { "503": 1 });
    assert.equal(queue.stats.succeeded, 1);
    assert.equal(logger.lines.warn.length, 1);
    assert.match(
      logger.lines.warn[0] ?? "",
      /^Metrics upload of epoch 3 failed \(HTTP 503: Service unavailable\): retrying in \d+ ms, attempt 2 of 3$/,
    );
    assert.equal(logger.lines.error.length, 0);
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
    assert.equal(error, refused);
    assert.equal(calls, 1);
    assert.equal(logger.lines.warn.length, 0);
    assert.equal(logger.lines.error.length, 1);
    assert.match(
      logger.lines.error[0] ?? "",
      /^Metrics upload failed: HTTP 400: Epoch must be a number; the server refused/,
    );
    assert.deepEqual(queue.stats, { retries: {}, failed: 1, succeeded: 0 });
  });

  test("run() tells the user to check the API key on a 401", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    await assert.rejects(
      queue.run(
        "other",
        "loading the model",
        () => Promise.reject(requestError(401, "Invalid API key")),
      ),
      HUBRequestError,
    );
    assert.match(logger.lines.error[0] ?? "", /check the API key/);
  });

  test("run() rejects with a RetryError when the kind's attempts are spent", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger);
    let calls = 0;
    const error = await queue.run("metrics", "metrics upload", () => {
      calls++;
      return Promise.reject(requestError(502, "Bad gateway"));
    }).catch((e) => e);
    assert.equal(calls, DEFAULT_BUDGETS.metrics.maxAttempts);
    assert.ok(error instanceof RetryError);
    assert.equal(error.attempts, 3);
    assert.equal((error.cause as HUBRequestError).status, 502);
    assert.equal(logger.lines.warn.length, 2);
    assert.equal(logger.lines.error.length, 1);
    assert.match(
      logger.lines.error[0] ?? "",
      /^Metrics upload failed: 3 attempts failed, last with HTTP 502: Bad gateway; /,
    );
    assert.deepEqual(queue.stats, {
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
    await assert.rejects(
      queue.run("checkpoint", "checkpoint upload", failing),
      RetryError,
    );
    assert.equal(calls, 2);
    calls = 0;
    await assert.rejects(
      queue.run("checkpoint", "checkpoint upload", failing, {
        budget: { maxAttempts: 4 },
      }),
      RetryError,
    );
    assert.equal(calls, 4);
    calls = 0;
    await assert.rejects(
      queue.run("heartbeat", "heartbeat", failing),
      RetryError,
    );
    assert.equal(calls, 1);
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
    assert.equal(calls, 2);
    // Timers have millisecond granularity: allow 1 ms of rounding.
    assert.ok(elapsed >= hint - 1, `waited only ${elapsed} ms`);
    assert.deepEqual(queue.stats.retries, { "429": 1 });
  });

  test("run() rejects with a HUBTimeoutError when the next wait would pass the deadline", async () => {
    const logger = recordingLogger();
    const queue = new RequestQueue({
      logger,
      backoff: { minTimeout: 1_000, maxTimeout: 1_000, jitter: 0 },
      budgets: { final: { deadline: 100 } },
    });
    const last = requestError(503, "Service unavailable");
    let calls = 0;
    const error = await queue.run("final", "final upload", () => {
      calls++;
      return Promise.reject(last);
    }).catch((e) => e);
    assert.equal(calls, 1);
    assert.ok(error instanceof HUBTimeoutError);
    assert.equal(error.cause, last);
    assert.equal(logger.lines.error.length, 1);
    assert.match(logger.lines.error[0] ?? "", /did not answer in time/);
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
    assert.equal(result, "ok");
    assert.equal(signals[0]?.aborted, true);
    assert.ok(signals[0]?.reason instanceof HUBTimeoutError);
    assert.deepEqual(queue.stats.retries, { timeout: 1 });
  });

  test("run() retries real network errors from fetch and never logs the query string", async () => {
    const logger = recordingLogger();
    const queue = queueWith(logger, {
      budgets: { other: { maxAttempts: 2 } },
    });
    const url = await closedPortUrl("/v1/models/abc?api_key=SECRET123");
    const error = await queue.run(
      "other",
      "loading the model",
      ({ signal }) => fetch(url, { signal }),
    ).catch((e) => e);
    assert.ok(error instanceof RetryError);
    assert.ok(isRetriableError(error.cause));
    assert.deepEqual(queue.stats.retries, { network: 1 });
    const lines = [...logger.lines.warn, ...logger.lines.error];
    assert.equal(lines.length, 2);
    for (const line of lines) {
      assert.doesNotMatch(line, /SECRET123|api_key/);
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
    await assert.rejects(pending, (e) => e === reason);
    assert.equal(logger.lines.error.length, 0);
    assert.equal(queue.stats.failed, 0);
    assert.equal((await queue.flush()).settled, true);
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
    await assert.rejects(first, (e) => e === reason);
    await assert.rejects(second, (e) => e === reason);
    assert.equal(queue.pending, 0);
    assert.match(logger.lines.warn[0] ?? "", /^Aborting 2 request/);
    let calls = 0;
    await assert.rejects(
      queue.run("other", "loading the model", () => Promise.resolve(calls++)),
      (e) => e === reason,
    );
    assert.equal(calls, 0);
  });

  test("the queue's signal option aborts its requests", async () => {
    const controller = new AbortController();
    const queue = queueWith(recordingLogger(), { signal: controller.signal });
    const pending = queue.run(
      "other",
      "loading the model",
      ({ signal }) => waitForAbort(signal),
    );
    controller.abort(new Error("Stopped"));
    await assert.rejects(pending, /Stopped/);
  });

  test("flush() waits for every request, including ones started while flushing", async () => {
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
    const report = await queue.flush({ timeout: 10_000 });
    assert.deepEqual(report, { settled: true, pending: 0 });
    assert.deepEqual(done, ["first", "second"]);
  });

  test("flush() never rejects when requests fail", async () => {
    const queue = queueWith(recordingLogger());
    const failed = queue.run(
      "other",
      "deleting the model",
      () => Promise.reject(requestError(404, "Model not found")),
    );
    const report = await queue.flush();
    assert.deepEqual(report, { settled: true, pending: 0 });
    await assert.rejects(failed, HUBRequestError);
  });

  test("flush() gives up after its timeout and reports what is still pending", async () => {
    const queue = queueWith(recordingLogger());
    const stalled = queue.run(
      "final",
      "final upload",
      ({ signal }) => waitForAbort(signal),
    );
    const report = await queue.flush({ timeout: 20 });
    assert.deepEqual(report, { settled: false, pending: 1 });
    queue.abort(new Error("Closed"));
    await assert.rejects(stalled, /Closed/);
    assert.deepEqual(await queue.flush({ timeout: 0 }), {
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
      await queue.flush();
      await delay(10);
      assert.deepEqual(results.map((r) => r.status), ["rejected", "rejected"]);
      assert.deepEqual(unhandled, []);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  test("RequestQueue validates its options and run() its arguments", () => {
    const logger = recordingLogger();
    const invalid: Array<[Partial<RequestQueueOptions>, ErrorConstructor]> = [
      [{ logger: {} as Logger }, TypeError],
      [{ budgets: { metrics: { maxAttempts: 0 } } }, RangeError],
      [{ budgets: { metrics: { deadline: -1 } } }, RangeError],
      [{ budgets: { final: { attemptTimeout: NaN } } }, RangeError],
      [{
        budgets: { bogus: {} } as NonNullable<RequestQueueOptions["budgets"]>,
      }, TypeError],
      [{ backoff: { minTimeout: -1 } }, RangeError],
      [{ backoff: { minTimeout: 100_000 } }, RangeError],
      [{ backoff: { multiplier: 0.5 } }, RangeError],
      [{ backoff: { jitter: 2 } }, RangeError],
    ];
    for (const [options, ErrorClass] of invalid) {
      assert.throws(
        () => new RequestQueue({ logger, ...options }),
        ErrorClass,
        JSON.stringify(options),
      );
    }
    const queue = queueWith(logger);
    const fn = () => Promise.resolve();
    assert.throws(
      () => queue.run("bogus" as "other", "label", fn),
      TypeError,
    );
    assert.throws(() => queue.run("other", "", fn), TypeError);
    assert.throws(
      () => queue.run("other", "label", fn, { budget: { maxAttempts: 1.5 } }),
      RangeError,
    );
    assert.equal(queue.pending, 0);
  });

  test("DEFAULT_BUDGETS holds the documented, frozen budgets", () => {
    assert.deepEqual(DEFAULT_BUDGETS, {
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
    assert.ok(Object.isFrozen(DEFAULT_BUDGETS));
    assert.ok(Object.isFrozen(DEFAULT_BUDGETS.metrics));
  });
});

describe("isRetriableError()", () => {
  test("isRetriableError() follows the error's retriable flag, timeouts and network errors", () => {
    assert.equal(isRetriableError(requestError(503, "Busy")), true);
    assert.equal(isRetriableError(requestError(429, "Slow down")), true);
    assert.equal(isRetriableError(requestError(undefined, "offline")), true);
    assert.equal(isRetriableError(requestError(400, "Bad")), false);
    assert.equal(
      isRetriableError(
        requestError(400, "Checksum mismatch", { retriable: true }),
      ),
      true,
    );
    assert.equal(
      isRetriableError(new HUBTimeoutError("Late", { timeout: 10 })),
      true,
    );
    assert.equal(isRetriableError(new TypeError("fetch failed")), true);
    assert.equal(
      isRetriableError(new DOMException("Aborted", "AbortError")),
      false,
    );
    assert.equal(
      isRetriableError(new TypeError("x.foo is not a function")),
      false,
    );
    assert.equal(isRetriableError(new Error("bug")), false);
    assert.equal(isRetriableError("string"), false);
    assert.equal(isRetriableError(undefined), false);
  });

  test("isRetriableError() accepts the error fetch throws for a refused connection", async () => {
    const error = await fetch(await closedPortUrl("/")).catch((e) => e);
    assert.ok(error instanceof Error);
    assert.equal(isRetriableError(error), true);
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
    assert.match(text, /http:\/\/127\.0\.0\.1:9\/v1\/models\)/);
    assert.doesNotMatch(text, /SECRET/);
    assert.doesNotMatch(describeError(new Error("bad token=SECRET")), /SECRET/);
    assert.ok(describeError(new Error("x".repeat(1_000))).length <= 300);
  });
});

describe("RequestQueue with the local HUB", () => {
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
      assert.deepEqual(await queue.flush({ timeout: 5_000 }), {
        settled: true,
        pending: 0,
      });
      assert.equal(reached, 1);
      assert.deepEqual(queue.stats.retries, { "503": 1 });
      assert.equal(logger.lines.warn.length, 1);
      assert.equal(logger.lines.error.length, 0);

      const listed = await fetch(`${server.url}/v1/models/${id}/metrics`);
      const envelope = await listed.json() as {
        data: Array<{ epoch: number; metrics: Record<string, number> }>;
      };
      assert.deepEqual(envelope.data, [
        { epoch: 0, metrics: { "metrics/mAP50(B)": 0.5 } },
      ]);
    } finally {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
