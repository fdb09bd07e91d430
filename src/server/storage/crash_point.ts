/**
 * Named points of a weights commit where a test can stop the process
 * to kill it there (`tests/crash_test.ts`).
 *
 * With `HUB_TEST_CRASH_AT=<point>` and `HUB_TEST_CRASH_MARKER=<path>` in the
 * environment, a call of {@linkcode crashPoint} with that name
 * writes the marker file and then never resolves: the request stays stuck at
 * that instant until the test kills the process with SIGKILL. Without those
 * variables a call costs one comparison (they are read once, and only when
 * Deno's env permission is already granted).
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import { writeFileSync } from "node:fs";
import process from "node:process";
import { granted } from "../../common/permissions.ts";

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

let target:
  | { point?: string | undefined; marker?: string | undefined }
  | undefined;

/** Reads the variables once, without a Deno permission prompt. */
function readTarget(): {
  point?: string | undefined;
  marker?: string | undefined;
} {
  if (!granted({ name: "env", variable: "HUB_TEST_CRASH_AT" }, "test hooks")) {
    return {};
  }
  const point = process.env.HUB_TEST_CRASH_AT;
  if (point === undefined || point === "") return {};
  const marker = granted(
      { name: "env", variable: "HUB_TEST_CRASH_MARKER" },
      "test hooks",
    )
    ? process.env.HUB_TEST_CRASH_MARKER
    : undefined;
  return { point, marker };
}

/** One of {@linkcode CRASH_POINTS}. */
export type CrashPoint = typeof CRASH_POINTS[number];

/**
 * Stops here forever when the environment names this point.
 *
 * @param name The point reached.
 * @returns When the point is not the one named (at once).
 */
export async function crashPoint(name: CrashPoint): Promise<void> {
  target ??= readTarget();
  if (target.point !== name) return;
  const marker = target.marker;
  if (marker !== undefined && marker !== "") writeFileSync(marker, name);
  await new Promise<never>(() => {});
}
