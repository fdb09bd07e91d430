import { describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertThrows,
  fail,
} from "@std/assert";
import process from "node:process";
import { Heartbeat } from "../src/session/heartbeat.ts";
import type { HeartbeatOptions } from "../src/session/heartbeat.ts";
import { delay } from "@std/async/delay";
import { HUBRequestError } from "../src/common/errors.ts";
import { runFixture } from "./support/common.ts";

interface Recorded {
  info: string[];
  warn: string[];
  error: string[];
}

function recordingLogger(): HeartbeatOptions["logger"] & { lines: Recorded } {
  const lines: Recorded = { info: [], warn: [], error: [] };
  return {
    lines,
    info: (message) => lines.info.push(message),
    warn: (message) => lines.warn.push(message),
    error: (message) => lines.error.push(message),
  };
}

/** Polls `condition` every millisecond; fails after `timeout` ms. */
async function waitFor(
  condition: () => boolean,
  what: string,
  timeout = 5_000,
): Promise<void> {
  const end = performance.now() + timeout;
  while (!condition()) {
    if (performance.now() > end) fail(`Timed out waiting for ${what}`);
    await delay(1);
  }
}

function unavailable(): HUBRequestError {
  return new HUBRequestError("Cannot send a heartbeat: Service unavailable", {
    method: "POST",
    path: "/v1/agent/heartbeat/models/abc",
    status: 503,
    serverMessage: "Service unavailable",
    retriable: true,
  });
}

describe("Heartbeat", () => {
  test("start() sends the first beat at once with the initial agent id", async () => {
    const sent: Array<string | null> = [];
    const heartbeat = new Heartbeat({
      interval: 3_600_000,
      agentId: "initial",
      beat: (agentId) => {
        sent.push(agentId);
        return Promise.resolve(null);
      },
      logger: recordingLogger(),
    });
    assertEquals(heartbeat.alive, false);
    heartbeat.start();
    assertEquals(sent, ["initial"]);
    assertEquals(heartbeat.alive, true);
    await waitFor(() => heartbeat.beats.ok === 1, "the first beat");
    assertEquals(heartbeat.agentId, "initial");
    await heartbeat.stop();
    assertEquals(heartbeat.alive, false);
  });

  test("Heartbeat adopts the agent id the server returns and sends it next time", async () => {
    const sent: Array<string | null> = [];
    const answers: Array<string | null> = ["agent-1", null, "agent-2"];
    const heartbeat = new Heartbeat({
      interval: 2,
      beat: (agentId) => {
        sent.push(agentId);
        return Promise.resolve(answers.shift() ?? null);
      },
      logger: recordingLogger(),
    });
    heartbeat.start();
    await waitFor(() => sent.length >= 4, "four beats");
    await heartbeat.stop();
    assertEquals(sent.slice(0, 4), [null, "agent-1", "agent-1", "agent-2"]);
    assertEquals(heartbeat.agentId, "agent-2");
  });

  test("Heartbeat survives failing beats and warns once per failing streak", async () => {
    const logger = recordingLogger();
    // fail, fail, fail, ok, fail, fail, ok, ok...
    const plan = [false, false, false, true, false, false];
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: () => {
        const ok = plan[calls++] ?? true;
        if (ok) return Promise.resolve("agent");
        return calls === 2
          ? Promise.reject(new TypeError("fetch failed"))
          : Promise.reject(unavailable());
      },
      logger,
    });
    heartbeat.start();
    await waitFor(() => calls >= 8, "eight beats");
    await heartbeat.stop();
    assertEquals(heartbeat.beats.failed, 5);
    assert(heartbeat.beats.ok >= 3);
    assertEquals(heartbeat.agentId, "agent");
    assertEquals(logger.lines.warn.length, 2);
    assertMatch(logger.lines.warn[0] ?? "", /HTTP 503: Service unavailable/);
    assertEquals(logger.lines.info.length, 2);
    assertMatch(logger.lines.info[0] ?? "", /recovered/);
    assertEquals(logger.lines.error.length, 0);
  });

  test("Heartbeat survives a beat function that throws synchronously", async () => {
    const logger = recordingLogger();
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: () => {
        if (++calls === 1) throw new Error("Cannot build the request");
        return Promise.resolve("agent");
      },
      logger,
    });
    heartbeat.start();
    await waitFor(() => heartbeat.beats.ok >= 1, "a successful beat");
    await heartbeat.stop();
    assertEquals(heartbeat.beats.failed, 1);
    assertEquals(logger.lines.warn.length, 1);
  });

  test("stop() aborts the beat in flight and no beat starts after it resolved", async () => {
    const signals: AbortSignal[] = [];
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: (_, signal) => {
        signals.push(signal);
        if (signals.length < 3) return Promise.resolve(null);
        return new Promise((_, reject) => {
          signal.addEventListener("abort", () => reject(signal.reason), {
            once: true,
          });
        });
      },
      logger: recordingLogger(),
    });
    heartbeat.start();
    await waitFor(() => signals.length === 3, "a stalled third beat");
    await heartbeat.stop();
    assertEquals(signals[2]?.aborted, true);
    assertEquals(heartbeat.alive, false);
    assertEquals(heartbeat.beats.failed, 0, "an aborted beat is no failure");
    await delay(20);
    assertEquals(signals.length, 3);
  });

  test("stop() resolves even when the beat ignores its signal", async () => {
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 3_600_000,
      beat: () => {
        calls++;
        return new Promise<never>(() => {});
      },
      logger: recordingLogger(),
    });
    heartbeat.start();
    await heartbeat.stop();
    assertEquals(calls, 1);
    assertEquals(heartbeat.alive, false);
  });

  test("stop() is idempotent and harmless before start()", async () => {
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: () => {
        calls++;
        return Promise.resolve(null);
      },
      logger: recordingLogger(),
    });
    await heartbeat.stop();
    heartbeat.start();
    heartbeat.start();
    await waitFor(() => calls >= 2, "two beats");
    await Promise.all([heartbeat.stop(), heartbeat.stop()]);
    await heartbeat.stop();
    const after = calls;
    await delay(10);
    assertEquals(calls, after);
    assertEquals(heartbeat.alive, false);
  });

  test("Heartbeat can start again after stop()", async () => {
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 3_600_000,
      beat: () => {
        calls++;
        return Promise.resolve(null);
      },
      logger: recordingLogger(),
    });
    heartbeat.start();
    await heartbeat.stop();
    heartbeat.start();
    assertEquals(heartbeat.alive, true);
    await heartbeat.stop();
    assertEquals(calls, 2);
  });

  test("Heartbeat stops when its signal aborts, and does not start on an aborted signal", async () => {
    const controller = new AbortController();
    let calls = 0;
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: () => {
        calls++;
        return Promise.resolve(null);
      },
      logger: recordingLogger(),
      signal: controller.signal,
    });
    heartbeat.start();
    await waitFor(() => calls >= 2, "two beats");
    controller.abort();
    assertEquals(heartbeat.alive, false);
    await heartbeat.stop();
    const after = calls;
    await delay(10);
    assertEquals(calls, after);
    heartbeat.start();
    assertEquals(calls, after);
    assertEquals(heartbeat.alive, false);
  });

  test("Heartbeat installs no signal handlers", async () => {
    const names = ["SIGINT", "SIGTERM", "SIGHUP", "beforeExit", "exit"];
    const before = names.map((name) => process.listenerCount(name));
    const heartbeat = new Heartbeat({
      interval: 1,
      beat: () => Promise.resolve(null),
      logger: recordingLogger(),
    });
    heartbeat.start();
    await delay(5);
    const during = names.map((name) => process.listenerCount(name));
    await heartbeat.stop();
    assertEquals(during, before);
  });

  test("Heartbeat validates its options", () => {
    const beat = () => Promise.resolve(null);
    const logger = recordingLogger();
    for (const interval of [0, -1, NaN]) {
      assertThrows(
        () => new Heartbeat({ interval, beat, logger }),
        RangeError,
      );
    }
    assertThrows(
      () =>
        new Heartbeat({
          interval: 1,
          beat: undefined as unknown as HeartbeatOptions["beat"],
          logger,
        }),
      TypeError,
    );
    assertThrows(
      () =>
        new Heartbeat({
          interval: 1,
          beat,
          logger: {} as HeartbeatOptions["logger"],
        }),
      TypeError,
    );
  });

  test("a process that starts a heartbeat with a 1-hour interval exits by itself", async () => {
    const result = await runFixture("heartbeat_child.ts", ["heartbeat"]);
    assertEquals(result.killed, false, "the child had to be killed");
    assertEquals(result.code, 0);
    assertMatch(result.stdout, /beats ok=1 agentId=child-agent/);
  });

  test("a process that starts and stops a heartbeat exits by itself", async () => {
    const result = await runFixture("heartbeat_child.ts", ["stopped"]);
    assertEquals(result.killed, false, "the child had to be killed");
    assertEquals(result.code, 0);
    assertMatch(result.stdout, /stopped alive=false/);
  });
});
