/**
 * Where the weights to upload are, and why they cannot be read: a missing
 * file is told apart from a directory, a permission problem or an I/O error,
 * so the user fixes the right thing.
 *
 * @module
 */

import { stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { HUBError } from "../common/errors.ts";
import { granted } from "../common/permissions.ts";
import type { Logger } from "../protocol/types.ts";

/** Why a weights file cannot be used. */
export type UnusableReason = "missing" | "not-a-file" | "unreadable";

/**
 * Classifies a path: `undefined` when it is a regular file, else why not
 * (`detail` completes "<path> ...", e.g. "is a directory", "cannot be read
 * (EACCES)").
 *
 * @param path The path to check.
 * @returns `undefined` for a usable file, else the reason and a detail.
 */
export async function checkWeightsFile(
  path: string,
): Promise<{ reason: UnusableReason; detail: string } | undefined> {
  const denied = readDenied(path);
  if (denied !== undefined) return denied;
  try {
    const info = await stat(path);
    if (info.isFile()) return undefined;
    return {
      reason: "not-a-file",
      detail: info.isDirectory() ? "is a directory" : "is not a file",
    };
  } catch (error) {
    return classifyFileError(error);
  }
}

/**
 * Returns the path of the final weights to upload: `weightsPath` when it is a
 * file, else `last.pt` beside a missing `best.pt` (with a warning).
 *
 * @param weightsPath The path the trainer passed.
 * @param logger Where the fallback is reported.
 * @returns The path to upload.
 * @throws {HUBError} When neither can be used, saying why.
 */
export async function resolveFinalPath(
  weightsPath: string,
  logger: Logger,
): Promise<string> {
  const problem = await checkWeightsFile(weightsPath);
  if (problem === undefined) return weightsPath;
  if (problem.reason === "missing" && basename(weightsPath) === "best.pt") {
    const fallback = join(dirname(weightsPath), "last.pt");
    if (await checkWeightsFile(fallback) === undefined) {
      logger.warn(
        `${weightsPath} is missing: uploading ${fallback} as the final model`,
      );
      return fallback;
    }
  }
  const advice = problem.reason === "not-a-file"
    ? "pass the path of the weights file inside it"
    : problem.reason === "missing"
    ? "pass the path of the trained weights file"
    : "check its permissions and the disk";
  throw new HUBError(
    `Cannot upload the final weights as ${weightsPath} ${problem.detail}: ${advice}`,
  );
}

/**
 * Classifies an error of a synchronous file operation (`statSync`,
 * `copyFileSync`) the way {@linkcode checkWeightsFile} does.
 *
 * @param error What the operation threw.
 * @returns The reason and a detail completing "<path> ...".
 */
export function classifyFileError(
  error: unknown,
): { reason: UnusableReason; detail: string } {
  const code = (error as { code?: unknown }).code;
  if (code === "ENOENT" || code === "ENOTDIR") {
    return { reason: "missing", detail: "does not exist" };
  }
  if (code === "EISDIR") {
    return { reason: "not-a-file", detail: "is a directory" };
  }
  return {
    reason: "unreadable",
    detail: `cannot be read (${
      typeof code === "string" ? code : (error as Error).message
    })`,
  };
}

/**
 * Says why a file may not be read when Deno's read permission is not
 * granted (never prompting), or `undefined` when it may.
 *
 * @param path The file.
 * @returns The reason and detail, or `undefined`.
 */
export function readDenied(
  path: string,
): { reason: UnusableReason; detail: string } | undefined {
  if (granted({ name: "read", path }, "reading weights files")) {
    return undefined;
  }
  return {
    reason: "unreadable",
    detail:
      "cannot be read (Deno's read permission is not granted: run with --allow-read)",
  };
}
