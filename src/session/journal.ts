/**
 * A crash-safe, per-model journal of what the server has not acknowledged
 * yet: metrics (an append-only JSON-lines file), plus the model document and
 * deferred weights for offline work.
 *
 * Each queued epoch is written to the file before it counts as queued (one
 * `write` per epoch: it survives a killed process) and flushed to the disk in
 * batches (`fdatasync` at most every 200 ms: it survives a power cut within
 * that window). Acknowledgements are appended as records of their own, so
 * reopening the journal yields exactly the epochs never acknowledged.
 *
 * Layout (`journal_paths.ts`): `<root>/<server>/<model id>/` with `metrics.jsonl`, `model.json`
 * (the last model document seen) and, for offline work, `checkpoint.pt` /
 * `final.pt` with a `.json` beside each.
 *
 * @module
 */

import {
  closeSync,
  copyFileSync,
  existsSync,
  fdatasync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { unrefTimer } from "../common/timers.ts";
import { SERVER_FILE } from "./journal_paths.ts";

export {
  defaultJournalRoot,
  journalDir,
  recordServer,
  serverDirsOfInstance,
  serverJournalDir,
} from "./journal_paths.ts";
import type { EpochMetrics, Logger, ModelDocument } from "../protocol/types.ts";

/** Options of {@linkcode MetricsJournal.open}. */
export interface JournalOptions {
  /**
   * Where a failing disk is reported (once per kind of failure): a write
   * that fails (disk full) leaves the epoch in memory, queued as usual, and
   * a failed flush to disk is reported, never ignored.
   *
   * @default {undefined: failures are not reported}
   */
  logger?: Pick<Logger, "warn"> | undefined;
}

/** Weights kept in the journal until they can be uploaded. */
export interface DeferredWeights {
  /** `checkpoint` (sent as `last.pt`) or `final` (sent as `best.pt`). */
  kind: "checkpoint" | "final";
  /** Path of the journal's copy. */
  path: string;
  /** Epoch of the weights. */
  epoch: number;
  /** Best model so far (checkpoints). */
  isBest: boolean;
  /** Mean average precision (final weights). */
  map: number;
  /** Class names of the final weights, when the trainer gave them. */
  classNames?: string[] | undefined;
}

interface MetricsRecord {
  t: "m";
  s: number;
  e: number;
  m: EpochMetrics;
}
interface AckRecord {
  t: "a";
  s: number[];
}

const SYNC_INTERVAL = 200;

/**
 * The journal of one model. Synchronous appends keep `queueMetrics()` free of
 * awaits; batched `fdatasync` keeps it fast.
 *
 * @example Record, acknowledge, reopen
 * ```ts
 * import { MetricsJournal } from "./journal.ts";
 * import { mkdtempSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { dirname, join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "journal-"));
 * const journal = MetricsJournal.open(dir);
 * const seq = journal.append(0, { "train/loss": 1 });
 * journal.append(1, { "train/loss": 0.5 });
 * journal.ack([seq]);
 * await journal.close();
 * const again = MetricsJournal.open(dir);
 * console.assert([...again.unacknowledged.keys()].join() === "1");
 * await again.close();
 * rmSync(dir, { recursive: true });
 * ```
 */
export class MetricsJournal {
  #dir: string;
  #fd: number | undefined;
  #seq: number;
  #unacknowledged: Map<number, { seq: number; metrics: EpochMetrics }>;
  #syncTimer: ReturnType<typeof setTimeout> | undefined;
  #syncing: Promise<void> = Promise.resolve();
  #dirty = false;
  #logger: Pick<Logger, "warn"> | undefined;
  #reported = new Set<string>();
  #failedWrites = 0;

  private constructor(
    dir: string,
    fd: number,
    seq: number,
    unacknowledged: Map<number, { seq: number; metrics: EpochMetrics }>,
    logger: Pick<Logger, "warn"> | undefined,
  ) {
    this.#logger = logger;
    this.#dir = dir;
    this.#fd = fd;
    this.#seq = seq;
    this.#unacknowledged = unacknowledged;
  }

  /**
   * Opens (creating it if needed) the journal in `dir` and replays it.
   *
   * A torn last line (a crash in the middle of a write) is ignored.
   *
   * @param dir The model's journal directory.
   * @param options Where a failing disk is reported.
   * @returns The open journal.
   */
  static open(dir: string, options: JournalOptions = {}): MetricsJournal {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "metrics.jsonl");
    const latest = new Map<number, { seq: number; metrics: EpochMetrics }>();
    const acked = new Set<number>();
    let seq = 0;
    // Only a regular file holds records (a device such as /dev/full would be
    // read forever).
    const text = existsSync(file) && statSync(file).isFile()
      ? readFileSync(file, "utf8")
      : "";
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      let record: MetricsRecord | AckRecord;
      try {
        record = JSON.parse(line);
      } catch {
        continue; // a torn write from a crash
      }
      if (
        record.t === "m" && Number.isInteger(record.e) &&
        Number.isInteger(record.s)
      ) {
        seq = Math.max(seq, record.s);
        const previous = latest.get(record.e);
        if (previous === undefined || previous.seq < record.s) {
          latest.set(record.e, { seq: record.s, metrics: record.m });
        }
      } else if (record.t === "a" && Array.isArray(record.s)) {
        for (const s of record.s) acked.add(s);
      }
    }
    const unacknowledged = new Map<
      number,
      { seq: number; metrics: EpochMetrics }
    >();
    for (const [epoch, entry] of [...latest].sort((a, b) => a[0] - b[0])) {
      if (!acked.has(entry.seq)) unacknowledged.set(epoch, entry);
    }
    const fd = openSync(file, "a");
    // A torn last line must not swallow the next record: end it first.
    if (text !== "" && !text.endsWith("\n")) writeSync(fd, "\n");
    return new MetricsJournal(dir, fd, seq, unacknowledged, options.logger);
  }

  /** The journal's directory. */
  get dir(): string {
    return this.#dir;
  }

  /** Epochs found unacknowledged when the journal was opened. */
  get unacknowledged(): ReadonlyMap<
    number,
    { seq: number; metrics: EpochMetrics }
  > {
    return this.#unacknowledged;
  }

  /** Records that could not be written (e.g. disk full) since the journal opened. */
  get failedWrites(): number {
    return this.#failedWrites;
  }

  /**
   * Appends an epoch's metrics; returns its sequence number. Never throws:
   * a write that fails (disk full, I/O error) is reported once and counted in
   * {@linkcode MetricsJournal.failedWrites}; the caller keeps the epoch in
   * memory.
   *
   * @param epoch Epoch number.
   * @param metrics The epoch's metrics.
   * @returns The record's sequence number.
   */
  append(epoch: number, metrics: EpochMetrics): number {
    const s = ++this.#seq;
    this.#write({ t: "m", s, e: epoch, m: metrics });
    return s;
  }

  /**
   * Records that the server acknowledged these sequence numbers.
   *
   * @param seqs Sequence numbers from {@linkcode MetricsJournal.append}.
   */
  ack(seqs: number[]): void {
    if (seqs.length > 0) this.#write({ t: "a", s: seqs });
  }

  #write(record: MetricsRecord | AckRecord): void {
    if (this.#fd === undefined) return;
    try {
      writeSync(this.#fd, JSON.stringify(record) + "\n");
    } catch (error) {
      this.#failedWrites++;
      this.#report(
        "write",
        `Cannot write the journal ${join(this.#dir, "metrics.jsonl")} (${
          describeFsError(error)
        }): ${
          record.t === "m"
            ? `the metrics of epoch ${record.e} are kept in memory only`
            : "an acknowledgement was not recorded (the epochs may be sent again, which is harmless)"
        }; free some disk space to keep a crash-safe copy (said once)`,
      );
      return;
    }
    this.#dirty = true;
    if (this.#syncTimer === undefined) {
      this.#syncTimer = setTimeout(() => {
        this.#syncTimer = undefined;
        this.#syncing = this.#sync();
      }, SYNC_INTERVAL);
      unrefTimer(this.#syncTimer);
    }
  }

  #sync(): Promise<void> {
    const fd = this.#fd;
    if (fd === undefined || !this.#dirty) return Promise.resolve();
    this.#dirty = false;
    return new Promise((resolve) =>
      fdatasync(fd, (error) => {
        if (error !== null) {
          this.#report(
            "sync",
            `Cannot flush the journal ${
              join(this.#dir, "metrics.jsonl")
            } to the disk (${
              describeFsError(error)
            }): a power cut may lose the latest epochs; check the disk (said once)`,
          );
        }
        resolve();
      })
    );
  }

  #report(kind: string, message: string): void {
    if (this.#reported.has(kind)) return;
    this.#reported.add(kind);
    try {
      this.#logger?.warn(message);
    } catch {
      // A broken logger must not break the journal.
    }
  }

  /** Saves the model document, so an offline session knows its arguments. */
  saveModel(model: ModelDocument): void {
    const file = join(this.#dir, "model.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(model));
    renameSync(`${file}.tmp`, file);
  }

  /** Reads the model document saved by {@linkcode MetricsJournal.saveModel}. */
  loadModel(): ModelDocument | undefined {
    try {
      return JSON.parse(readFileSync(join(this.#dir, "model.json"), "utf8"));
    } catch {
      return undefined;
    }
  }

  /**
   * Copies weights into the journal (replacing older ones of that kind) to
   * upload them later.
   *
   * @param source Path of the weights file.
   * @param meta What the weights are.
   */
  deferWeights(source: string, meta: Omit<DeferredWeights, "path">): void {
    const path = join(this.#dir, `${meta.kind}.pt`);
    copyFileSync(source, `${path}.tmp`);
    renameSync(`${path}.tmp`, path);
    writeFileSync(`${path}.json`, JSON.stringify(meta));
  }

  /** Weights waiting in the journal, checkpoint first. */
  deferredWeights(): DeferredWeights[] {
    return deferredWeightsIn(this.#dir);
  }

  /**
   * Flushes to disk and closes the file. When nothing is left unacknowledged
   * and no weights are deferred, the journal's files are removed.
   *
   * @param options `remove`: whether a fully delivered journal is deleted.
   * @returns A promise that resolves once the journal is closed.
   */
  async close(
    options: { pending?: number; remove?: boolean } = {},
  ): Promise<void> {
    if (this.#syncTimer !== undefined) clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    await this.#syncing;
    await this.#sync();
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    if (
      options.remove === true && (options.pending ?? 0) === 0 &&
      deferredWeightsIn(this.#dir).length === 0
    ) {
      rmSync(this.#dir, { recursive: true, force: true });
      // The server's directory goes too once its last model is delivered.
      const serverDir = dirname(this.#dir);
      try {
        const left = readdirSync(serverDir);
        if (left.length === 1 && left[0] === SERVER_FILE) {
          rmSync(join(serverDir, SERVER_FILE), { force: true });
        }
        rmdirSync(serverDir);
      } catch {
        // other models still have journals there
      }
    }
  }
}

function describeFsError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === "string" && !message.includes(code)
    ? `${code}: ${message}`
    : message;
}

/**
 * Lists the weights deferred in a model's journal directory.
 *
 * @param dir The model's journal directory.
 * @returns The deferred weights, checkpoint first.
 */
export function deferredWeightsIn(dir: string): DeferredWeights[] {
  const out: DeferredWeights[] = [];
  for (const kind of ["checkpoint", "final"] as const) {
    const path = join(dir, `${kind}.pt`);
    try {
      const meta = JSON.parse(readFileSync(`${path}.json`, "utf8"));
      if (existsSync(path)) out.push({ ...meta, kind, path });
    } catch {
      // none of this kind
    }
  }
  return out;
}

/**
 * Removes deferred weights once the server has them.
 *
 * @param weights What {@linkcode deferredWeightsIn} returned.
 */
export function dropDeferredWeights(weights: DeferredWeights): void {
  rmSync(weights.path, { force: true });
  rmSync(`${weights.path}.json`, { force: true });
}
