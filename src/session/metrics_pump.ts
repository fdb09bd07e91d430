/**
 * The metrics pump: sends the queued epochs under the metrics rate limit, one
 * upload at a time, and keeps every epoch the server did not acknowledge.
 *
 * An epoch the server refuses on its own (a 400 about that epoch) never
 * blocks the others: when a batch of several epochs is refused, each epoch
 * is sent alone, the ones the server accepts are delivered, and the ones it
 * refuses are reported and set aside.
 *
 * @module
 */

import { HUBRequestError, toHUBError } from "../common/errors.ts";
import type { HUBError } from "../common/errors.ts";
import { unrefTimer } from "../common/timers.ts";
import type { MetricsQueue } from "./metrics_queue.ts";
import type { MetricsBatch } from "./metrics_queue.ts";
import type { MetricsUploadResult, SessionTransport } from "./options.ts";
import { describeError, type RequestRunner } from "./request_runner.ts";
import type { Logger } from "../protocol/types.ts";

/** What the pump needs from its session. */
export interface MetricsPumpOptions {
  /** The queue of epochs to deliver. */
  queue: MetricsQueue;
  /** Runs the uploads with the metrics budget. */
  runner: RequestRunner;
  /** The transport of the session. */
  transport: SessionTransport;
  /** Where refused epochs are reported. */
  logger: Logger;
  /** Minimum time between two uploads in milliseconds. */
  interval: number;
  /** The model id, once the model exists; nothing is sent before. */
  modelId: () => string | undefined;
  /** Whether uploads are held (offline session). */
  held: () => boolean;
}

/**
 * Sends queued epochs: {@linkcode MetricsPump.schedule} after each queued
 * epoch (O(1), never blocks), {@linkcode MetricsPump.upload} to send now.
 *
 * @example Schedule uploads for a session's queue
 * ```ts ignore
 * const pump = new MetricsPump({ queue, runner, transport, logger, interval: 3000,
 *   modelId: () => id, held: () => false });
 * queue.add(0, { "train/loss": 1 });
 * pump.schedule();
 * ```
 */
export class MetricsPump {
  #options: MetricsPumpOptions;
  #last = -Infinity;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scheduled = false;
  #stopped = false;

  /**
   * Creates a pump; nothing is sent until an epoch is scheduled.
   *
   * @param options The queue, runner, transport and rate limit.
   */
  constructor(options: MetricsPumpOptions) {
    this.#options = options;
  }

  /**
   * Schedules an upload of what is queued when the rate limit allows; does
   * nothing while one is scheduled, before the model exists, or after
   * {@linkcode MetricsPump.stop}.
   */
  schedule(): void {
    const { queue, modelId, interval } = this.#options;
    if (
      this.#stopped || this.#scheduled || modelId() === undefined ||
      queue.size === 0
    ) return;
    const wait = this.#last + interval - performance.now();
    this.#scheduled = true;
    const go = (): void => {
      this.#timer = undefined;
      this.#scheduled = false;
      void this.upload();
    };
    if (wait <= 0) {
      queueMicrotask(go);
    } else {
      this.#timer = setTimeout(go, wait);
      unrefTimer(this.#timer);
    }
  }

  /** Cancels a scheduled upload (a flush sends at once instead). */
  cancelScheduled(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#scheduled = false;
  }

  /** Stops scheduling for good (the session closes). */
  stop(): void {
    this.#stopped = true;
    this.cancelScheduled();
  }

  /**
   * Sends every pending epoch now, after any upload in flight. Never
   * rejects: whatever goes wrong is in the result, and the epochs stay
   * queued.
   *
   * @returns What was sent, what is pending, and why an upload failed.
   */
  upload(): Promise<MetricsUploadResult> {
    const run = this.#chain.then(() => this.#send()).catch(
      (error: unknown): MetricsUploadResult => ({
        sent: [],
        pending: this.#options.queue.pendingEpochs,
        rejected: [],
        error: toHUBError(error, "Metrics upload failed"),
      }),
    );
    this.#chain = run;
    return run;
  }

  /** Resolves once the uploads asked for so far have ended. */
  async idle(): Promise<void> {
    await this.#chain;
  }

  async #send(): Promise<MetricsUploadResult> {
    const { queue, modelId, held } = this.#options;
    const id = modelId();
    const batch = queue.take();
    if (id === undefined || batch.metrics.size === 0 || held()) {
      return { sent: [], pending: queue.pendingEpochs, rejected: [] };
    }
    this.#last = performance.now();
    const outcome: Delivery = { sent: [], rejected: [] };
    let error: HUBError | undefined;
    try {
      await this.#deliver(id, batch, outcome);
    } catch (caught) {
      // What failed stays queued: the next epoch, flush() or close() resends it.
      error = toHUBError(caught, "Metrics upload failed");
    }
    this.#last = performance.now();
    if (error === undefined) this.schedule();
    error ??= outcome.rejected[0]?.error;
    const result: MetricsUploadResult = {
      sent: outcome.sent,
      pending: queue.pendingEpochs,
      rejected: outcome.rejected.map((r) => r.epoch),
    };
    if (error !== undefined) result.error = error;
    return result;
  }

  /** Sends a batch; on a refusal of several epochs, each epoch alone. */
  async #deliver(
    id: string,
    batch: MetricsBatch,
    outcome: Delivery,
  ): Promise<void> {
    const { queue, runner, transport } = this.#options;
    const count = batch.metrics.size;
    try {
      await runner.run(
        "metrics",
        `metrics upload of ${count} epoch(s)`,
        ({ signal }) => transport.uploadMetrics(id, batch.metrics, { signal }),
        { logFailure: false },
      );
      outcome.sent.push(...queue.ack(batch));
      return;
    } catch (error) {
      if (!isRefusal(error)) {
        this.#options.logger.error(
          `Metrics upload of ${count} epoch(s) failed: ${
            describeError(error)
          }; the epochs stay queued and are sent again with the next upload`,
        );
        throw error;
      }
      if (count === 1) {
        this.#reject(batch, error, outcome);
        return;
      }
    }
    // The server refused the batch: find the epoch(s) it refuses.
    for (const one of queue.split(batch)) {
      try {
        await runner.run(
          "metrics",
          `metrics upload of epoch ${[...one.metrics.keys()][0]}`,
          ({ signal }) => transport.uploadMetrics(id, one.metrics, { signal }),
          { logFailure: false },
        );
        outcome.sent.push(...queue.ack(one));
      } catch (error) {
        if (!isRefusal(error)) throw error;
        this.#reject(one, error, outcome);
      }
    }
  }

  #reject(
    batch: MetricsBatch,
    error: HUBRequestError,
    outcome: Delivery,
  ): void {
    const [epoch] = batch.metrics.keys();
    this.#options.queue.reject(batch);
    outcome.rejected.push({ epoch: epoch!, error });
    this.#options.logger.error(
      `The server refused the metrics of epoch ${epoch} (${
        describeError(error)
      }): they are set aside and the other epochs are delivered`,
    );
  }
}

interface Delivery {
  sent: number[];
  rejected: Array<{ epoch: number; error: HUBRequestError }>;
}

/** A 4xx about the content (not auth, not a missing model, not rate limits). */
function isRefusal(error: unknown): error is HUBRequestError {
  return error instanceof HUBRequestError && error.status !== undefined &&
    (error.status === 400 || error.status === 413 || error.status === 422) &&
    !error.retriable;
}
