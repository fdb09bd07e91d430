/**
 * Where journals live: the default root, one directory per server (named
 * injectively from its address) and per model, and the record that names
 * the HUB instance a server directory belongs to.
 *
 * @module
 */

import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { homeDir, readEnv } from "../common/permissions.ts";

/**
 * Returns the default journal root: the OS cache directory's
 * `hub-session/journal` (`$XDG_CACHE_HOME`, `~/.cache`, `~/Library/Caches` or
 * `%LOCALAPPDATA%`).
 *
 * @returns An absolute directory path.
 *
 * @example Where journals live
 * ```ts
 * import { defaultJournalRoot } from "./journal_paths.ts";
 *
 * console.log(defaultJournalRoot());
 * ```
 */
export function defaultJournalRoot(): string {
  const platform =
    (globalThis as { process?: { platform?: string } }).process?.platform ??
      (globalThis as { Deno?: { build: { os: string } } }).Deno?.build.os;
  let base = readEnv("XDG_CACHE_HOME");
  if (base === undefined || base === "") {
    // Without a home directory (or the permission to know it), a relative
    // directory: nothing is ever prompted for.
    const home = homeDir() ?? ".";
    if (platform === "darwin") base = join(home, "Library", "Caches");
    else if (platform === "win32" || platform === "windows") {
      base = readEnv("LOCALAPPDATA") ?? join(home, "AppData", "Local");
    } else base = join(home, ".cache");
  }
  return join(base, "hub-session", "journal");
}

/**
 * Returns the journal directory of one server (its models are inside).
 *
 * @param root Journal root, e.g. {@linkcode defaultJournalRoot}.
 * @param apiRoot API root of the server.
 * @returns The directory path (not created).
 *
 * @example Directory of a server
 * ```ts
 * import { serverJournalDir } from "./journal_paths.ts";
 *
 * console.log(serverJournalDir("/tmp/j", "http://127.0.0.1:8080"));
 * ```
 */
export function serverJournalDir(root: string, apiRoot: string): string {
  const url = new URL(apiRoot);
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  const path = url.pathname.replace(/\/+$/, "");
  // The scheme is part of the name only for https, so that the common
  // http case reads `127.0.0.1_3A8080`.
  const scheme = url.protocol === "http:" ? "" : url.protocol;
  return join(
    root,
    encodeName(`${scheme}${url.hostname}:${port}${path}`, "."),
  );
}

/**
 * Encodes a name for the file system injectively: letters, digits, `-` (and
 * the characters in `keep`) stay, every other byte becomes `_XX` (hex), `_`
 * included, so two different names never share a directory.
 */
function encodeName(name: string, keep = ""): string {
  let out = "";
  for (const byte of new TextEncoder().encode(name)) {
    const char = String.fromCharCode(byte);
    out += /[A-Za-z0-9-]/.test(char) || (keep.includes(char) && byte < 128)
      ? char
      : `_${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * Returns the journal directory of one model on one server.
 *
 * @param root Journal root, e.g. {@linkcode defaultJournalRoot}.
 * @param apiRoot API root of the server the model lives on.
 * @param modelId Id of the model.
 * @returns The directory path (not created).
 *
 * @example Directory of a model
 * ```ts
 * import { journalDir } from "./journal_paths.ts";
 *
 * const dir = journalDir("/tmp/j", "http://127.0.0.1:8080", "AbCdEfGhIj0123456789");
 * console.assert(dir.endsWith("AbCdEfGhIj0123456789"));
 * ```
 */
export function journalDir(
  root: string,
  apiRoot: string,
  modelId: string,
): string {
  return join(serverJournalDir(root, apiRoot), encodeName(modelId));
}

/** The file that names the HUB a server directory belongs to. */
export const SERVER_FILE = "server.json";

/**
 * Records which HUB a server directory belongs to (its address and instance
 * id), so that its journals are found again when the same HUB comes back on
 * another address.
 *
 * @param root Journal root.
 * @param apiRoot API root the journals were written for.
 * @param instanceId The HUB's instance id (`x-hub-instance`).
 */
export function recordServer(
  root: string,
  apiRoot: string,
  instanceId: string,
): void {
  const dir = serverJournalDir(root, apiRoot);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, SERVER_FILE);
  writeFileSync(`${file}.tmp`, JSON.stringify({ apiRoot, instanceId }));
  renameSync(`${file}.tmp`, file);
}

/**
 * Lists the server directories of a journal root that belong to a HUB
 * instance, whatever address they were written for.
 *
 * @param root Journal root.
 * @param instanceId The HUB's instance id.
 * @returns The directories and the address each was written for.
 */
export function serverDirsOfInstance(
  root: string,
  instanceId: string,
): Array<{ dir: string; apiRoot: string }> {
  const out: Array<{ dir: string; apiRoot: string }> = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    try {
      const record = JSON.parse(
        readFileSync(join(root, name, SERVER_FILE), "utf8"),
      ) as { apiRoot?: unknown; instanceId?: unknown };
      if (
        record.instanceId === instanceId && typeof record.apiRoot === "string"
      ) {
        out.push({ dir: join(root, name), apiRoot: record.apiRoot });
      }
    } catch {
      // no record: journals of a HUB that never named itself
    }
  }
  return out;
}
