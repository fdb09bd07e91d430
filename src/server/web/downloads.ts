/**
 * The model page's data downloads: every epoch's metrics as CSV (epochs
 * counted from 1, as on the page) or as JSON (the API's shape and keys).
 *
 * @module
 */

import type { EpochEntry } from "../storage/records.ts";
import { metricKeys } from "./chart.ts";

/**
 * What pages (and the CSV download) add to an epoch key of the API: the
 * trainer posts epoch 0 for its first epoch and prints it as "1/300", so
 * the pages say "epoch 1" too. The JSON download keeps the API's keys.
 */
export const DISPLAY_EPOCH_OFFSET = 1;

/**
 * One CSV field: quoted when it holds a comma, quote or line break, and
 * with a leading formula character neutralised (spreadsheet injection).
 *
 * @param value The text.
 * @returns The field.
 *
 * @example Quote a key with a comma
 * ```ts
 * import { csvCell } from "./downloads.ts";
 *
 * console.assert(csvCell("a,b") === '"a,b"');
 * console.assert(csvCell("=cmd()") === "'=cmd()");
 * ```
 */
export function csvCell(value: string): string {
  const text = /^[=+\-@\t\r]/.test(value) && !/^-?\d/.test(value)
    ? `'${value}`
    : value;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * The download response of a model's metrics.
 *
 * @param id Model id (names the file).
 * @param metrics Every epoch, oldest first, with the API's epoch keys.
 * @param format `csv` or `json`.
 * @returns The response, as an attachment.
 *
 * @example Download two epochs as CSV
 * ```ts
 * import { metricsDownload } from "./downloads.ts";
 *
 * const response = metricsDownload("abc", [{ epoch: 0, metrics: { loss: 1 } }], "csv");
 * console.assert((await response.text()) === "epoch,loss\r\n1,1\r\n");
 * ```
 */
export function metricsDownload(
  id: string,
  metrics: readonly EpochEntry[],
  format: "csv" | "json",
): Response {
  const headers = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-disposition": `attachment; filename="${id}-metrics.${format}"`,
  };
  if (format === "json") {
    return new Response(JSON.stringify(metrics), {
      headers: {
        ...headers,
        "content-type": "application/json; charset=utf-8",
      },
    });
  }
  const keys = metricKeys(metrics);
  const lines = [["epoch", ...keys].map(csvCell).join(",")];
  for (const { epoch, metrics: values } of metrics) {
    const cells = [String(epoch + DISPLAY_EPOCH_OFFSET)];
    for (const key of keys) {
      const v = values[key];
      cells.push(v === undefined ? "" : v === null ? "NaN" : String(v));
    }
    lines.push(cells.map(csvCell).join(","));
  }
  return new Response(lines.join("\r\n") + "\r\n", {
    headers: { ...headers, "content-type": "text/csv; charset=utf-8" },
  });
}
