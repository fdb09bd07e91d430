/**
 * The `environment` of a Platform `training_started` event, read without
 * ever triggering a Deno permission prompt: a value whose permission is not
 * already granted is left empty.
 *
 * @module
 */

import { cpus, hostname, release, totalmem } from "node:os";
import process from "node:process";
import { AGENT } from "../../common/version.ts";
import type { PlatformEnvironment } from "../../protocol/platform.ts";

interface DenoLike {
  version?: { deno?: string };
  permissions?: {
    querySync?: (descriptor: { name: string; kind?: string }) => {
      state: string;
    };
  };
}

function granted(kind: string): boolean {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (deno === undefined) return true;
  try {
    return deno.permissions?.querySync?.({ name: "sys", kind }).state ===
      "granted";
  } catch {
    return false;
  }
}

function guarded<T>(kind: string, read: () => T, fallback: T): T {
  if (!granted(kind)) return fallback;
  try {
    return read();
  } catch {
    return fallback;
  }
}

/**
 * Describes the machine and runtime for `training_started`: host name, OS,
 * CPU count, total RAM, and the runtime's name and version in place of
 * Python's. What needs a permission that is not granted is left empty.
 *
 * @returns The environment.
 *
 * @example Read the environment
 * ```ts
 * import { platformEnvironment } from "./environment.ts";
 *
 * const env = platformEnvironment();
 * console.assert(env.cpuCount >= 1 && env.runtime !== "");
 * ```
 */
export function platformEnvironment(): PlatformEnvironment {
  const g = globalThis as { Deno?: DenoLike; Bun?: { version?: string } };
  const runtime = typeof g.Deno?.version?.deno === "string"
    ? { runtime: "deno", runtimeVersion: g.Deno.version.deno }
    : typeof g.Bun?.version === "string"
    ? { runtime: "bun", runtimeVersion: g.Bun.version }
    : { runtime: "node", runtimeVersion: process.versions?.node ?? "" };
  const cpuCount = Math.max(
    1,
    (globalThis.navigator as { hardwareConcurrency?: number } | undefined)
      ?.hardwareConcurrency ?? guarded("cpus", () => cpus().length, 1),
  );
  const osRelease = guarded("osRelease", () => release(), "");
  return {
    hostname: guarded("hostname", () => hostname(), ""),
    os: `${process.platform}${osRelease === "" ? "" : ` ${osRelease}`}`,
    cpuCount,
    totalRamGb: guarded(
      "systemMemoryInfo",
      () => Math.round(totalmem() / 2 ** 30 * 10) / 10,
      0,
    ),
    ...runtime,
    agent: AGENT,
  };
}
