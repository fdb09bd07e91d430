/**
 * Named points of a weights commit where a test can stop the process
 * to kill it there (`tests/crash_test.ts`).
 *
 * With `HUB_TEST_CRASH_AT=<point>` and `HUB_TEST_CRASH_MARKER=<path>` in the
 * environment, a call of {@linkcode crashPoint} with that name
 * writes the marker file and then never resolves: the request stays stuck at
 * that instant until the test kills the process with SIGKILL. Without those
 * variables a call costs one environment lookup.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { writeFileSync } from "node:fs";
import process from "node:process";

/** The points, in the order a weights commit passes them. */
export const CRASH_POINTS = [
  /** The upload's temporary file is complete and synced, not yet renamed. */
  "blob-synced",
  /** The blob was renamed to its content address; its directory not synced. */
  "blob-renamed",
  /** The blob is published and durable; the document not yet written. */
  "blob-published",
  /** The new document's temporary file is synced, not yet renamed. */
  "document-synced",
  /** The document was renamed into place; its directory not synced. */
  "document-renamed",
  /** The commit is durable; the reply not yet sent. */
  "committed",
  /** The reply was sent; unreferenced blobs not yet collected. */
  "collect",
] as const;

/** One of {@linkcode CRASH_POINTS}. */
export type CrashPoint = typeof CRASH_POINTS[number];

/**
 * Stops here forever when the environment names this point.
 *
 * @param name The point reached.
 * @returns When the point is not the one named (at once).
 */
export async function crashPoint(name: CrashPoint): Promise<void> {
  if (process.env.HUB_TEST_CRASH_AT !== name) return;
  const marker = process.env.HUB_TEST_CRASH_MARKER;
  if (marker !== undefined && marker !== "") writeFileSync(marker, name);
  await new Promise<never>(() => {});
}
