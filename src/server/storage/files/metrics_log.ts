/**
 * The format of a model's `metrics.jsonl` in the file store (`models.ts`):
 * one line per metrics post, `{"time": <ms>, "metrics": {"<epoch>": {...}}}`,
 * the last line for an epoch winning, a torn last line ignored.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import type { StoredMetrics } from "../records.ts";
import { isRecord } from "../../../common/json.ts";

/** What {@linkcode parseMetricsLog} found in a metrics file. */
export interface MetricsLog {
  /** Metrics by epoch, the last line for an epoch winning. */
  metrics: Map<number, StoredMetrics>;
  /** Epoch entries in complete lines, superseded ones included. */
  entries: number;
  /** Byte length of the complete lines (a torn tail starts here). */
  validBytes: number;
  /** Total byte length of the file. */
  totalBytes: number;
  /** Time of the last complete line, ms since the epoch. */
  lastTime: number | undefined;
}

/** Name of a model's metrics file in its directory. */
export const METRICS_FILE = "metrics.jsonl";
const NEWLINE = 0x0a;

/**
 * Parses a metrics file. Lines that do not parse are skipped; only a torn
 * last line (no final newline) is expected, from a crash during an append.
 *
 * @param bytes The file's bytes.
 * @returns The epochs and where the complete lines end.
 */
export function parseMetricsLog(bytes: Uint8Array): MetricsLog {
  const metrics = new Map<number, StoredMetrics>();
  const decoder = new TextDecoder();
  let entries = 0;
  let lastTime: number | undefined;
  let start = 0;
  let validBytes = 0;
  while (start < bytes.length) {
    const end = bytes.indexOf(NEWLINE, start);
    if (end === -1) break; // torn tail
    validBytes = end + 1;
    const text = decoder.decode(bytes.subarray(start, end));
    start = end + 1;
    let line: unknown;
    try {
      line = JSON.parse(text);
    } catch {
      continue;
    }
    if (!isRecord(line) || !isRecord(line.metrics)) continue;
    if (typeof line.time === "number") lastTime = line.time;
    for (const [key, value] of Object.entries(line.metrics)) {
      const epoch = Number(key);
      if (!Number.isSafeInteger(epoch) || epoch < 0) continue;
      if (!isRecord(value)) continue;
      metrics.set(epoch, value as StoredMetrics);
      entries++;
    }
  }
  return { metrics, entries, validBytes, totalBytes: bytes.length, lastTime };
}

/**
 * One line of a metrics file: `{"time": <ms>, "metrics": {"<epoch>": {...}}}`
 * and a newline.
 *
 * @param metrics Metrics by epoch.
 * @param time Time of the post, ms since the epoch; left out when `undefined`.
 * @returns The line.
 */
export function metricsLine(
  metrics: Iterable<[number, StoredMetrics]>,
  time: number | undefined,
): string {
  const byEpoch: Record<string, StoredMetrics> = {};
  for (const [epoch, values] of metrics) byEpoch[String(epoch)] = values;
  return `${
    JSON.stringify(
      time === undefined ? { metrics: byEpoch } : {
        time,
        metrics: byEpoch,
      },
    )
  }\n`;
}
