/**
 * The heartbeat loop: tells the server at a fixed interval that the trainer
 * is alive, survives failed beats, adopts the server's agent id, and never
 * keeps a finished process alive.
 *
 * @module
 */

import type { Logger } from "../protocol/types.ts";
import { sleepUnref } from "../common/timers.ts";
import { describeError } from "./request_runner.ts";

/** Options for {@linkcode Heartbeat}. */
export interface HeartbeatOptions {
  /** Milliseconds between the start of one beat and the next one's timer. */
  interval: number;
  /**
   * Sends one beat with the current agent id; resolves to the id the server
   * assigned (adopted when not `null`). Must honour `signal`.
   */
  beat: (agentId: string | null, signal: AbortSignal) => Promise<string | null>;
  /** Where a failing streak (warn, once) and a recovery (info) are reported. */
  logger: Logger;
  /**
   * Agent id to send with the first beat.
   *
   * @default {null}
   */
  agentId?: string | null | undefined;
  /**
   * Stops the loop for good when it aborts, like {@linkcode Heartbeat.stop}.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

/** Counts of beats sent by a {@linkcode Heartbeat}. */
export interface HeartbeatCounts {
  /** Beats the server acknowledged. */
  ok: number;
  /** Beats that failed. */
  failed: number;
}

/**
 * Sends a beat at once on {@linkcode Heartbeat.start}, then one every
 * `interval` milliseconds through a chain of unref'd timers, until
 * {@linkcode Heartbeat.stop} or the signal stops it.
 *
 * A failed beat is counted and reported once per failing streak (warn); the
 * next beat is the retry. The agent id the server returns is adopted. No
 * signal handler is ever installed, and the loop's timers never keep the
 * process alive.
 *
 * @example Beat once, then stop
 * ```ts
 * import { Heartbeat } from "./heartbeat.ts";
 *
 * const heartbeat = new Heartbeat({
 *   interval: 60_000,
 *   beat: () => Promise.resolve("agent-1"),
 *   logger: console,
 * });
 * heartbeat.start();
 * await new Promise((resolve) => setTimeout(resolve, 10));
 * await heartbeat.stop();
 * console.assert(heartbeat.agentId === "agent-1" && !heartbeat.alive);
 * ```
 */
export class Heartbeat {
  #interval: number;
  #beat: (agentId: string | null, signal: AbortSignal) => Promise<
    string | null
  >;
  #logger: Logger;
  #agentId: string | null;
  #signal: AbortSignal | undefined;
  #controller: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #failing = false;
  #counts: HeartbeatCounts = { ok: 0, failed: 0 };

  /**
   * Creates a heartbeat; nothing is sent until {@linkcode Heartbeat.start}.
   *
   * @param options The interval, the beat function, the logger, and optional agent id and signal.
   * @throws {RangeError} If `interval` is not a positive number.
   * @throws {TypeError} If `beat` or the logger is unusable.
   */
  constructor(options: HeartbeatOptions) {
    const { interval, beat, logger, agentId = null, signal } = options ?? {};
    if (
      typeof interval !== "number" || Number.isNaN(interval) || interval <= 0
    ) {
      throw new RangeError(
        `Cannot create the heartbeat as 'interval' must be a positive number of milliseconds: current value is ${
          String(interval)
        }`,
      );
    }
    if (typeof beat !== "function") {
      throw new TypeError(
        "Cannot create the heartbeat as 'beat' must be a function",
      );
    }
    if (
      typeof logger?.info !== "function" ||
      typeof logger.warn !== "function" || typeof logger.error !== "function"
    ) {
      throw new TypeError(
        "Cannot create the heartbeat as 'logger' must have info, warn and error methods",
      );
    }
    if (agentId !== null && typeof agentId !== "string") {
      throw new TypeError(
        "Cannot create the heartbeat as 'agentId' must be a string or null",
      );
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new TypeError(
        "Cannot create the heartbeat as 'signal' must be an AbortSignal",
      );
    }
    this.#interval = interval;
    this.#beat = beat;
    this.#logger = logger;
    this.#agentId = agentId;
    this.#signal = signal;
  }

  /** The agent id of the latest successful beat (or the initial one). */
  get agentId(): string | null {
    return this.#agentId;
  }

  /** Whether the loop is running: started, and neither stopped nor aborted. */
  get alive(): boolean {
    return this.#controller !== undefined &&
      !this.#controller.signal.aborted && !this.#signal?.aborted;
  }

  /** Beats acknowledged and failed so far (a copy). */
  get beats(): HeartbeatCounts {
    return { ...this.#counts };
  }

  /**
   * Sends the first beat now and schedules the next ones. Does nothing while
   * the loop runs, or when the `signal` has aborted; may be called again
   * after {@linkcode Heartbeat.stop}.
   *
   * @example Start and stop
   * ```ts
   * import { Heartbeat } from "./heartbeat.ts";
   *
   * let beats = 0;
   * const heartbeat = new Heartbeat({
   *   interval: 60_000,
   *   beat: () => Promise.resolve(String(++beats)),
   *   logger: console,
   * });
   * heartbeat.start();
   * heartbeat.start(); // already running: no second loop
   * await heartbeat.stop();
   * console.assert(beats === 1);
   * ```
   */
  start(): void {
    if (this.alive || this.#signal?.aborted) return;
    const controller = new AbortController();
    this.#controller = controller;
    const signal = this.#signal === undefined
      ? controller.signal
      : AbortSignal.any([controller.signal, this.#signal]);
    const loop = this.#run(signal);
    this.#loop = loop;
    void loop.then(() => {
      // The loop ended on its own (external signal): allow a later start().
      if (this.#loop === loop) {
        controller.abort();
        this.#controller = undefined;
        this.#loop = undefined;
      }
    });
  }

  /**
   * Stops the loop: aborts a beat in flight, clears the timer, and resolves
   * once nothing is running any more; no beat starts after it resolved.
   * Idempotent.
   *
   * @returns A promise that resolves when the loop has ended.
   *
   * @example Stop twice
   * ```ts
   * import { Heartbeat } from "./heartbeat.ts";
   *
   * const heartbeat = new Heartbeat({
   *   interval: 1_000,
   *   beat: () => Promise.resolve(null),
   *   logger: console,
   * });
   * heartbeat.start();
   * await heartbeat.stop();
   * await heartbeat.stop();
   * console.assert(!heartbeat.alive);
   * ```
   */
  async stop(): Promise<void> {
    const controller = this.#controller;
    const loop = this.#loop;
    if (controller === undefined || loop === undefined) return;
    controller.abort();
    await loop;
    if (this.#loop === loop) {
      this.#controller = undefined;
      this.#loop = undefined;
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.#beatOnce(signal);
      if (signal.aborted) return;
      try {
        await sleepUnref(this.#interval, signal);
      } catch {
        return; // stopped while waiting
      }
    }
  }

  /** Sends one beat; never rejects. Gives up waiting as soon as `signal` aborts. */
  async #beatOnce(signal: AbortSignal): Promise<void> {
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<"aborted">((resolve) => {
      onAbort = () => resolve("aborted");
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      let beat: Promise<string | null>;
      try {
        beat = Promise.resolve(this.#beat(this.#agentId, signal));
      } catch (error) {
        beat = Promise.reject(error);
      }
      const result = await Promise.race([beat, aborted]);
      if (signal.aborted) {
        void beat.catch(() => {}); // abandoned: its late failure is moot
        return;
      }
      if (typeof result === "string" && result.length > 0) {
        this.#agentId = result;
      }
      this.#counts.ok++;
      if (this.#failing) {
        this.#failing = false;
        this.#logger.info("Heartbeat recovered: the server answers again");
      }
    } catch (error) {
      if (signal.aborted) return;
      this.#counts.failed++;
      if (!this.#failing) {
        this.#failing = true;
        this.#logger.warn(
          `Cannot send a heartbeat (${
            describeError(error)
          }): retrying every ${this.#interval} ms, training continues`,
        );
      }
    } finally {
      if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
    }
  }
}
