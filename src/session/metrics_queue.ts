/**
 * Per-epoch metrics waiting for the server: an epoch leaves the queue only
 * when the request that carried it was acknowledged, and only if no newer
 * value for that epoch was queued meanwhile.
 *
 * @module
 */

import type { MetricsJournal } from "./journal.ts";
import type { EpochMetrics } from "../protocol/types.ts";
import { epochProblem, metricsProblem } from "../protocol/metrics_rules.ts";

/** A snapshot of pending epochs taken for one request. */
export interface MetricsBatch {
  /** Epoch → metrics, in ascending epoch order. */
  readonly metrics: ReadonlyMap<number, EpochMetrics>;
  /** Epoch → version of the value taken, to tell if it changed meanwhile. */
  readonly versions: ReadonlyMap<number, number>;
}

/**
 * Queue of per-epoch metrics. `add()` is O(1) and never blocks; `take()`
 * snapshots what is pending for one request; `ack()` removes what that
 * request delivered.
 *
 * @example Queue, send, acknowledge
 * ```ts
 * import { MetricsQueue } from "./metrics_queue.ts";
 *
 * const queue = new MetricsQueue();
 * queue.add(0, { "train/loss": 1.5 });
 * const batch = queue.take();
 * // ... send batch.metrics to the server, then:
 * queue.ack(batch);
 * console.assert(queue.size === 0);
 * ```
 */
export class MetricsQueue {
  #pending = new Map<number, { metrics: EpochMetrics; version: number }>();
  #version = 0;
  #acked = new Set<number>();
  #rejected = new Set<number>();
  #journal: MetricsJournal | undefined;

  /**
   * Attaches a journal: every epoch queued from now on is written to it
   * first, and every acknowledgement recorded; the epochs it holds
   * unacknowledged are queued again.
   *
   * @param journal The model's open journal.
   * @returns The epochs restored from the journal.
   */
  attachJournal(journal: MetricsJournal): number[] {
    this.#journal = journal;
    const restored: number[] = [];
    for (const [epoch, entry] of journal.unacknowledged) {
      if (this.#pending.has(epoch)) continue; // a value queued in this run is newer
      this.#pending.set(epoch, { metrics: entry.metrics, version: -entry.seq });
      restored.push(epoch);
    }
    // Values queued before the journal existed are written to it now.
    for (const [epoch, entry] of this.#pending) {
      if (entry.version > 0) {
        this.#pending.set(epoch, {
          metrics: entry.metrics,
          version: journal.append(epoch, entry.metrics),
        });
      }
    }
    this.#version = Math.max(
      this.#version,
      ...[...this.#pending.values()].map((e) => Math.abs(e.version)),
    );
    return restored;
  }

  /** Detaches the journal (the caller closes it). */
  detachJournal(): void {
    this.#journal = undefined;
  }

  /**
   * Queues (or replaces) the metrics of an epoch.
   *
   * @param epoch Epoch number (an integer from 0 to 99,999).
   * @param metrics Flat map of metric name to number (NaN and Infinity are
   * sent as `null`).
   * @throws {RangeError} When the epoch is out of range, or the metrics break
   * the protocol's bounds (count, name length, size).
   * @throws {TypeError} When a metric value is not a number.
   */
  add(epoch: number, metrics: EpochMetrics): void {
    const badEpoch = epochProblem(epoch);
    if (badEpoch !== undefined) {
      throw new RangeError(
        `Cannot queue metrics for epoch ${epoch} as the epoch ${badEpoch}`,
      );
    }
    if (
      typeof metrics !== "object" || metrics === null || Array.isArray(metrics)
    ) {
      throw new TypeError(
        `Cannot queue metrics for epoch ${epoch}: pass a flat { name: number } object`,
      );
    }
    const copy: EpochMetrics = {};
    const wire: Record<string, number | null> = {};
    for (const [name, value] of Object.entries(metrics)) {
      if (typeof value !== "number") {
        throw new TypeError(
          `Cannot queue metric "${name}" of epoch ${epoch} as it is a ${typeof value}, not a number`,
        );
      }
      copy[name] = value;
      // NaN and Infinity travel as null (JSON cannot carry them).
      wire[name] = Number.isFinite(value) ? value : null;
    }
    // The server's own rules (protocol/metrics_rules.ts), checked here so that
    // a bad epoch is refused now instead of being refused by the server later.
    const problem = metricsProblem(wire);
    if (problem !== undefined) {
      throw new RangeError(
        `Cannot queue the metrics of epoch ${epoch} as they ${problem.reason}`,
      );
    }
    const version = this.#journal?.append(epoch, copy) ?? ++this.#version;
    this.#version = Math.max(this.#version, version);
    this.#pending.set(epoch, { metrics: copy, version });
  }

  /** Number of epochs waiting for acknowledgement. */
  get size(): number {
    return this.#pending.size;
  }

  /** Epochs waiting for acknowledgement, ascending. */
  get pendingEpochs(): number[] {
    return [...this.#pending.keys()].sort((a, b) => a - b);
  }

  /** Epochs acknowledged by the server so far, ascending. */
  get acknowledgedEpochs(): number[] {
    return [...this.#acked].sort((a, b) => a - b);
  }

  /** Epochs the server refused and that were set aside, ascending. */
  get rejectedEpochs(): number[] {
    return [...this.#rejected].sort((a, b) => a - b);
  }

  /**
   * Splits a batch into one batch per epoch.
   *
   * @param batch A batch from {@linkcode MetricsQueue.take}.
   * @returns One batch per epoch, ascending.
   */
  split(batch: MetricsBatch): MetricsBatch[] {
    const out: MetricsBatch[] = [];
    for (const [epoch, metrics] of batch.metrics) {
      const version = batch.versions.get(epoch);
      if (version === undefined) continue;
      out.push({
        metrics: new Map([[epoch, metrics]]),
        versions: new Map([[epoch, version]]),
      });
    }
    return out;
  }

  /**
   * Sets aside the epochs of a batch the server refused for good: they leave
   * the queue (and the journal) so they never block the others, and are
   * listed in {@linkcode MetricsQueue.rejectedEpochs}.
   *
   * @param batch The refused batch.
   */
  reject(batch: MetricsBatch): void {
    this.#journal?.ack([...batch.versions.values()].map(Math.abs));
    for (const [epoch, version] of batch.versions) {
      if (this.#pending.get(epoch)?.version === version) {
        this.#pending.delete(epoch);
        this.#rejected.add(epoch);
      }
    }
  }

  /**
   * Snapshots every pending epoch for one request; they stay queued.
   *
   * @returns The batch to send, empty when nothing is pending.
   */
  take(): MetricsBatch {
    const metrics = new Map<number, EpochMetrics>();
    const versions = new Map<number, number>();
    for (const epoch of this.pendingEpochs) {
      const entry = this.#pending.get(epoch);
      if (entry === undefined) continue;
      metrics.set(epoch, entry.metrics);
      versions.set(epoch, entry.version);
    }
    return { metrics, versions };
  }

  /**
   * Removes the epochs a batch delivered, unless a newer value was queued for
   * an epoch since the batch was taken.
   *
   * @param batch A batch from {@linkcode MetricsQueue.take} that the server acknowledged.
   * @returns The epochs removed from the queue.
   */
  ack(batch: MetricsBatch): number[] {
    const removed: number[] = [];
    this.#journal?.ack([...batch.versions.values()].map(Math.abs));
    for (const [epoch, version] of batch.versions) {
      this.#acked.add(epoch);
      if (this.#pending.get(epoch)?.version === version) {
        this.#pending.delete(epoch);
        removed.push(epoch);
      }
    }
    return removed;
  }
}
