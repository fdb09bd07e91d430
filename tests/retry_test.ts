import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotMatch,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import { delay, retry, RetryError } from "../src/session/retry.ts";
import type { RetryInfo, RetryOptions } from "../src/session/retry.ts";
import {
  HUBError,
  HUBRequestError,
  HUBTimeoutError,
} from "../src/common/errors.ts";
import { runFixture } from "./support/common.ts";

function unavailable(retryAfter?: number): HUBRequestError {
  return new HUBRequestError("Cannot upload metrics: Service unavailable", {
    method: "POST",
    path: "/v1/models/abc",
    status: 503,
    serverMessage: "Service unavailable",
    retryAfter,
    retriable: true,
  });
}

/** Resolves never on its own; rejects with the signal's reason on abort. */
function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}

describe("retry()", () => {
  test("retry() returns the first successful result and numbers attempts from 1", async () => {
    const seen: number[] = [];
    const result = await retry(({ attempt }) => {
      seen.push(attempt);
      if (attempt < 3) throw unavailable();
      return "ok";
    }, { minTimeout: 1, maxTimeout: 5 });
    assertEquals(result, "ok");
    assertEquals(seen, [1, 2, 3]);
  });

  test("retry() throws a RetryError carrying the last error after maxAttempts", async () => {
    let calls = 0;
    const errors: Error[] = [];
    const error = await retry(() => {
      calls++;
      const e = new Error(`failure ${calls}`);
      errors.push(e);
      throw e;
    }, { maxAttempts: 4, minTimeout: 1, maxTimeout: 2 }).catch((e) => e);
    assertEquals(calls, 4);
    assert(error instanceof RetryError);
    assert(error instanceof HUBError);
    assertEquals(error.name, "RetryError");
    assertEquals(error.attempts, 4);
    assertStrictEquals(error.cause, errors[3]);
    assertMatch(error.message, /4 attempts failed: failure 4/);
  });

  test("retry() rethrows a non-retriable error as is after one attempt", async () => {
    const badRequest = new HUBRequestError("Cannot upload metrics: Bad epoch", {
      method: "POST",
      path: "/v1/models/abc",
      status: 400,
      serverMessage: "Bad epoch",
      retriable: false,
    });
    let calls = 0;
    const error = await retry(() => {
      calls++;
      return Promise.reject(badRequest);
    }, {
      minTimeout: 1,
      isRetriable: (e) => e instanceof HUBRequestError && e.retriable,
    }).catch((e) => e);
    assertEquals(calls, 1);
    assertStrictEquals(error, badRequest);
  });

  test("retry() waits the std backoff min(maxTimeout, minTimeout * multiplier ** n) reduced by jitter", async () => {
    const full: number[] = [];
    await assertRejects(
      () =>
        retry(() => {
          throw new Error("down");
        }, {
          maxAttempts: 5,
          minTimeout: 1,
          maxTimeout: 4,
          multiplier: 2,
          jitter: 0,
          onRetry: ({ delay }) => full.push(delay),
        }),
      RetryError,
    );
    assertEquals(full, [1, 2, 4, 4]);

    const jittered: number[] = [];
    await assertRejects(
      () =>
        retry(() => {
          throw new Error("down");
        }, {
          maxAttempts: 4,
          minTimeout: 4,
          maxTimeout: 16,
          multiplier: 2,
          jitter: 1,
          random: () => 0.5,
          onRetry: ({ delay }) => jittered.push(delay),
        }),
      RetryError,
    );
    assertEquals(jittered, [2, 4, 8]);
  });

  test("retry() waits at least as long as the Retry-After hint says", async () => {
    const hint = 50;
    const delays: number[] = [];
    const start = performance.now();
    let calls = 0;
    const result = await retry(() => {
      calls++;
      if (calls === 1) throw unavailable(hint);
      return "ok";
    }, {
      minTimeout: 1,
      maxTimeout: 5,
      onRetry: ({ delay }) => delays.push(delay),
    });
    const elapsed = performance.now() - start;
    assertEquals(result, "ok");
    assertEquals(delays, [hint]);
    // Timers have millisecond granularity: allow 1 ms of rounding.
    assert(elapsed >= hint - 1, `waited only ${elapsed} ms`);
  });

  test("retry() caps the Retry-After hint at maxRetryAfter and keeps a longer backoff", async () => {
    const capped: number[] = [];
    let calls = 0;
    await retry(() => {
      if (++calls === 1) throw unavailable(10 * 3_600_000);
      return "ok";
    }, {
      minTimeout: 1,
      maxRetryAfter: 3,
      onRetry: ({ delay }) => capped.push(delay),
    });
    assertEquals(capped, [3]);

    const longer: number[] = [];
    calls = 0;
    await retry(() => {
      if (++calls === 1) throw unavailable(1);
      return "ok";
    }, {
      minTimeout: 6,
      maxTimeout: 6,
      jitter: 0,
      onRetry: ({ delay }) => longer.push(delay),
    });
    assertEquals(longer, [6]);
  });

  test("retry() survives errors without a retryAfter and uses a custom retryAfter reader", async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(() => {
      calls++;
      if (calls === 1) throw null;
      if (calls === 2) throw { retryAfter: "soon" };
      return "ok";
    }, {
      minTimeout: 1,
      maxTimeout: 1,
      jitter: 0,
      onRetry: ({ delay }) => delays.push(delay),
    });
    assertEquals(delays, [1, 1]);

    const custom: number[] = [];
    calls = 0;
    await retry(() => {
      if (++calls === 1) throw new Error("slow down");
      return "ok";
    }, {
      minTimeout: 1,
      jitter: 0,
      retryAfter: () => 7,
      onRetry: ({ delay }) => custom.push(delay),
    });
    assertEquals(custom, [7]);
  });

  test("retry() passes the failed attempt's error, number and wait to onRetry", async () => {
    const infos: RetryInfo[] = [];
    const errors = [new Error("a"), new Error("b")];
    let calls = 0;
    await retry(() => {
      const error = errors[calls++];
      if (error) throw error;
      return 1;
    }, {
      minTimeout: 1,
      maxTimeout: 2,
      jitter: 0,
      onRetry: (info) => infos.push(info),
    });
    assertEquals(infos, [
      { error: errors[0], attempt: 1, delay: 1 },
      { error: errors[1], attempt: 2, delay: 2 },
    ]);
  });

  test("retry() fails now with a HUBTimeoutError when the next wait would pass the deadline", async () => {
    let calls = 0;
    const last = unavailable();
    const error = await retry(() => {
      calls++;
      throw last;
    }, { minTimeout: 1_000, maxTimeout: 1_000, jitter: 0, deadline: 100 })
      .catch((e) => e);
    assertEquals(calls, 1);
    assert(error instanceof HUBTimeoutError);
    assertEquals(error.timeout, 100);
    assertStrictEquals(error.cause, last);
  });

  test("retry() fails with a HUBTimeoutError when the deadline passes during a stalled attempt", async () => {
    let attemptSignal: AbortSignal | undefined;
    const error = await retry(({ signal }) => {
      attemptSignal = signal;
      return new Promise<never>(() => {}); // ignores its signal on purpose
    }, { deadline: 20, minTimeout: 1 }).catch((e) => e);
    assert(error instanceof HUBTimeoutError);
    assertEquals(error.timeout, 20);
    assertMatch(error.message, /deadline of 20 ms/);
    assertEquals(attemptSignal?.aborted, true);
    assertStrictEquals(attemptSignal?.reason, error);
  });

  test("retry() aborts a stalled attempt after attemptTimeout and retries it", async () => {
    const signals: AbortSignal[] = [];
    const retried: unknown[] = [];
    const result = await retry(({ attempt, signal }) => {
      signals.push(signal);
      if (attempt === 1) return waitForAbort(signal);
      return Promise.resolve("second");
    }, {
      attemptTimeout: 10,
      minTimeout: 1,
      onRetry: ({ error }) => retried.push(error),
    });
    assertEquals(result, "second");
    assertEquals(signals.length, 2);
    assertEquals(signals[0]?.aborted, true);
    assert(signals[0]?.reason instanceof HUBTimeoutError);
    assertEquals((signals[0]?.reason as HUBTimeoutError).timeout, 10);
    assertStrictEquals(retried[0], signals[0]?.reason);
    assertEquals(signals[1]?.aborted, false);
  });

  test("retry() abandons an attempt that ignores its signal without an unhandled rejection", async () => {
    let rejectLate: ((error: Error) => void) | undefined;
    const result = await retry(({ attempt }) => {
      if (attempt === 1) {
        return new Promise<string>((_, reject) => {
          rejectLate = reject;
        });
      }
      return "second";
    }, { attemptTimeout: 5, minTimeout: 1 });
    assertEquals(result, "second");
    assert(rejectLate);
    rejectLate(new Error("late failure")); // handled inside retry()
    await delay(5);
  });

  test("retry() rejects with the signal's reason when aborted during a wait", async () => {
    const controller = new AbortController();
    const reason = new Error("Session closed");
    let calls = 0;
    const pending = retry(() => {
      calls++;
      throw unavailable();
    }, {
      minTimeout: 60_000,
      maxTimeout: 60_000,
      signal: controller.signal,
      onRetry: () => queueMicrotask(() => controller.abort(reason)),
    });
    assertStrictEquals(await assertRejects(() => pending), reason);
    assertEquals(calls, 1);
  });

  test("retry() rejects with the signal's reason and aborts the running attempt", async () => {
    const controller = new AbortController();
    const reason = new Error("Session closed");
    let attemptSignal: AbortSignal | undefined;
    const pending = retry(({ signal }) => {
      attemptSignal = signal;
      return waitForAbort(signal);
    }, { signal: controller.signal, minTimeout: 1 });
    controller.abort(reason);
    assertStrictEquals(await assertRejects(() => pending), reason);
    assertEquals(attemptSignal?.aborted, true);
    assertStrictEquals(attemptSignal?.reason, reason);
  });

  test("retry() never calls fn when the signal is already aborted", async () => {
    const reason = new Error("Already closed");
    let calls = 0;
    assertStrictEquals(
      await assertRejects(() =>
        retry(() => calls++, { signal: AbortSignal.abort(reason) })
      ),
      reason,
    );
    assertEquals(calls, 0);
  });

  test("retry() validates its options with RangeError and TypeError before calling fn", async () => {
    const invalid: Array<[RetryOptions, typeof RangeError | typeof TypeError]> =
      [
        [{ maxAttempts: 0 }, RangeError],
        [{ maxAttempts: 1.5 }, RangeError],
        [{ maxAttempts: NaN }, RangeError],
        [{ multiplier: 0.5 }, RangeError],
        [{ multiplier: Infinity }, RangeError],
        [{ maxTimeout: 0 }, RangeError],
        [{ maxTimeout: NaN }, RangeError],
        [{ minTimeout: -1 }, RangeError],
        [{ minTimeout: NaN }, RangeError],
        [{ minTimeout: 10, maxTimeout: 5 }, RangeError],
        [{ jitter: -0.1 }, RangeError],
        [{ jitter: 1.1 }, RangeError],
        [{ jitter: NaN }, RangeError],
        [{ deadline: -5 }, RangeError],
        [{ deadline: NaN }, RangeError],
        [{ attemptTimeout: 0 }, RangeError],
        [{ attemptTimeout: NaN }, RangeError],
        [{ maxRetryAfter: -1 }, RangeError],
        [{ maxAttempts: "3" as unknown as number }, TypeError],
        [{ isRetriable: true as unknown as () => boolean }, TypeError],
      ];
    let calls = 0;
    for (const [options, ErrorClass] of invalid) {
      await assertRejects(
        () => retry(() => calls++, options),
        ErrorClass,
        undefined,
        JSON.stringify(options),
      );
    }
    assertEquals(calls, 0);
  });
});

describe("delay()", () => {
  test("delay() resolves after the given time", async () => {
    const start = performance.now();
    await delay(20);
    assert(performance.now() - start >= 19);
  });

  test("delay() rejects with the signal's reason and removes its listener", async () => {
    const controller = new AbortController();
    const added: unknown[] = [];
    const removed: unknown[] = [];
    const signal = controller.signal;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener =
      ((type: string, listener: EventListener, o?: AddEventListenerOptions) => {
        added.push(listener);
        add(type, listener, o);
      }) as typeof signal.addEventListener;
    signal.removeEventListener = ((type: string, listener: EventListener) => {
      removed.push(listener);
      remove(type, listener);
    }) as typeof signal.removeEventListener;

    await delay(1, { signal });
    assertEquals(added.length, 1);
    assertEquals(removed, added);

    const reason = new Error("Stopped");
    const pending = delay(60_000, { signal });
    controller.abort(reason);
    assertStrictEquals(await assertRejects(() => pending), reason);
  });

  test("delay() rejects at once when the signal is already aborted", async () => {
    const reason = new Error("Already stopped");
    assertStrictEquals(
      await assertRejects(() =>
        delay(60_000, { signal: AbortSignal.abort(reason) })
      ),
      reason,
    );
  });

  test("delay() with persistent: false does not keep the process alive", async () => {
    const result = await runFixture("heartbeat_child.ts", ["delay"]);
    assertEquals(result.killed, false, "the child had to be killed");
    assertEquals(result.code, 0);
    assertMatch(result.stdout, /delay started/);
    assertNotMatch(result.stdout, /delay resolved/);
  });
});
