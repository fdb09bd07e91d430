/**
 * Never trigger a Deno permission prompt: every access that Deno guards and
 * the library makes on its own initiative (environment variables, the home
 * directory, the settings file, the journal) asks for the permission's state
 * first, and counts "prompt" as not granted. On Bun and Node every access is
 * allowed.
 *
 * A prompt on a terminal stops the trainer until someone answers it (a run
 * sat at `Deno requests sys access to "homedir"` for 10 minutes); without a
 * terminal Deno denies it silently. Either way the library does without, and
 * says once, at debug level, what it skipped and which flag enables it.
 *
 * @module
 */

import { homedir } from "node:os";

/** A permission the library may need, as `Deno.permissions` describes it. */
export type PermissionRequest =
  | { name: "env"; variable: string }
  | { name: "sys"; kind: "homedir" }
  | { name: "read"; path: string }
  | { name: "write"; path: string }
  | { name: "net"; host: string };

interface DenoPermissions {
  permissions?: {
    querySync?(desc: PermissionRequest): { state: string };
  };
}

const skipped = new Set<string>();
let debug: ((message: string) => void) | undefined;

/**
 * Sets where the "skipped for want of a permission" lines go (one per kind
 * of access, once per process).
 *
 * @param write Receives the debug line; `undefined` drops them.
 */
export function setPermissionDebug(
  write: ((message: string) => void) | undefined,
): void {
  debug = write;
}

/**
 * Whether the library may make this access without a prompt: always on Bun
 * and Node; on Deno only when the permission is already granted.
 *
 * @param request The access.
 * @param what What would be skipped, for the debug line.
 * @returns `true` when the access is granted.
 *
 * @example Read an environment variable only when allowed
 * ```ts
 * import { granted } from "./permissions.ts";
 *
 * if (granted({ name: "env", variable: "HOME" }, "reading HOME")) {
 *   console.log("HOME may be read");
 * }
 * ```
 */
export function granted(request: PermissionRequest, what: string): boolean {
  const deno = (globalThis as { Deno?: DenoPermissions }).Deno;
  const query = deno?.permissions?.querySync;
  if (deno === undefined || query === undefined) return true;
  let state: string;
  try {
    state = query.call(deno.permissions, request).state;
  } catch {
    state = "denied";
  }
  if (state === "granted") return true;
  const flag = flagFor(request);
  const key = `${request.name}:${what}`;
  if (!skipped.has(key)) {
    skipped.add(key);
    debug?.(
      `Skipped ${what}: Deno's ${request.name} permission is ${state} (never prompted); ${flag} enables it`,
    );
  }
  return false;
}

function flagFor(request: PermissionRequest): string {
  switch (request.name) {
    case "env":
      return "--allow-env";
    case "sys":
      return "--allow-sys=homedir";
    case "read":
      return "--allow-read";
    case "write":
      return "--allow-write";
    case "net":
      return "--allow-net";
  }
}

/**
 * Reads an environment variable on Deno, Bun or Node. On Deno without
 * `--allow-env` (or with it scoped to other variables) it counts as unset,
 * and no prompt is shown.
 *
 * @param name Variable name.
 * @returns The value, or `undefined` when unset or not readable.
 *
 * @example Read a variable
 * ```ts
 * import { readEnv } from "./permissions.ts";
 *
 * console.log(readEnv("ULTRALYTICS_HUB_API") ?? "https://api.ultralytics.com");
 * ```
 */
export function readEnv(name: string): string | undefined {
  try {
    const deno =
      (globalThis as { Deno?: { env: { get(n: string): string | undefined } } })
        .Deno;
    if (deno !== undefined) {
      if (!granted({ name: "env", variable: name }, `reading $${name}`)) {
        return undefined;
      }
      return deno.env.get(name);
    }
    const process =
      (globalThis as { process?: { env: Record<string, string | undefined> } })
        .process;
    return process?.env[name];
  } catch {
    return undefined;
  }
}

/**
 * The user's home directory: `$HOME` (or `%USERPROFILE%`), else the
 * runtime's answer when Deno's `sys` permission is already granted, else
 * `undefined`. Never prompts.
 *
 * @returns The home directory, or `undefined` when it cannot be known.
 *
 * @example Where the home is
 * ```ts
 * import { homeDir } from "./permissions.ts";
 *
 * console.log(homeDir() ?? "no home directory");
 * ```
 */
export function homeDir(): string | undefined {
  const fromEnv = readEnv("HOME") ?? readEnv("USERPROFILE");
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  if (
    !granted({ name: "sys", kind: "homedir" }, "finding the home directory")
  ) {
    return undefined;
  }
  try {
    const home = homedir();
    return home === "" ? undefined : home;
  } catch {
    return undefined;
  }
}
