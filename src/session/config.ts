/**
 * Resolve the API root, the web root and the API key a session uses, and
 * refuse combinations that would leak the key.
 *
 * Precedence: explicit options > environment (`ULTRALYTICS_HUB_API`,
 * `ULTRALYTICS_HUB_WEB`, `HUB_API_KEY`) > the Ultralytics settings file
 * (`api_key`) > defaults. A key carried by the identifier wins over all.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { HUBConfigError } from "../common/errors.ts";
import { granted, homeDir, readEnv } from "../common/permissions.ts";

export { readEnv } from "../common/permissions.ts";
import { assertSafeTransport } from "../common/safe_transport.ts";

export { assertSafeTransport, isLoopback } from "../common/safe_transport.ts";

/** Default API root of the v1 wire protocol. */
export const DEFAULT_API_ROOT = "https://api.ultralytics.com";
/** Default web root (model pages). */
export const DEFAULT_WEB_ROOT = "https://hub.ultralytics.com";

/** Options for {@linkcode resolveConfig}. */
export interface ConfigOptions {
  /**
   * API root, e.g. `http://127.0.0.1:8080` for a local HUB.
   *
   * @default {env ULTRALYTICS_HUB_API, else "https://api.ultralytics.com"}
   */
  apiRoot?: string | undefined;
  /**
   * Web root for model page URLs.
   *
   * @default {env ULTRALYTICS_HUB_WEB, else "https://hub.ultralytics.com"}
   */
  webRoot?: string | undefined;
  /**
   * API key; a key in the identifier wins over it.
   *
   * @default {env HUB_API_KEY, else the settings file's api_key}
   */
  apiKey?: string | undefined;
  /**
   * Path of the Ultralytics settings file to read `api_key` from, or `false`
   * to read none.
   *
   * @default {"$YOLO_CONFIG_DIR/settings.json" or "~/.config/Ultralytics/settings.json"}
   */
  settingsFile?: string | false | undefined;
  /**
   * Reads an environment variable; a variable that cannot be read counts as
   * unset.
   *
   * @default {the runtime's environment}
   */
  env?: ((name: string) => string | undefined) | undefined;
}

/** The roots and credentials a session uses. */
export interface ResolvedConfig {
  /** API root without trailing slash. */
  apiRoot: string;
  /** Web root without trailing slash. */
  webRoot: string;
  /** API key, when one was found. */
  apiKey: string | undefined;
}

function normaliseRoot(value: string, what: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new HUBConfigError(
      `Cannot use ${what} ${
        JSON.stringify(value)
      } as it is not a URL: pass e.g. http://127.0.0.1:8080`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new HUBConfigError(
      `Cannot use ${what} with protocol ${url.protocol}: use http:// or https://`,
    );
  }
  if (url.username !== "" || url.password !== "" || url.search !== "") {
    throw new HUBConfigError(
      `Cannot use ${what} with credentials or a query string: pass the API key separately`,
    );
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

function defaultSettingsFile(
  env: (name: string) => string | undefined,
): string | undefined {
  const dir = env("YOLO_CONFIG_DIR");
  if (dir !== undefined && dir !== "") return join(dir, "settings.json");
  const home = homeDir();
  return home === undefined
    ? undefined
    : join(home, ".config", "Ultralytics", "settings.json");
}

async function readSettingsKey(
  path: string | undefined,
): Promise<string | undefined> {
  if (path === undefined) return undefined;
  if (!granted({ name: "read", path }, "reading the settings file")) {
    return undefined;
  }
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined; // no settings file (or not readable): nothing to use
  }
  try {
    const settings: unknown = JSON.parse(text);
    if (typeof settings === "object" && settings !== null) {
      const key = (settings as Record<string, unknown>).api_key;
      if (typeof key === "string" && key !== "") return key;
    }
  } catch {
    // Older settings files are YAML: read the one line we need.
    const match = /^api_key:\s*['"]?([^'"\s#]+)['"]?\s*$/m.exec(text);
    if (match?.[1] !== undefined) return match[1];
  }
  return undefined;
}

/**
 * Resolves the roots and the API key, then checks that the key may travel to
 * the API root.
 *
 * @param options Explicit values and where to look for the others.
 * @param identifierKey A key carried by the session identifier; it wins.
 * @returns The roots (without trailing slash) and the key.
 * @throws {HUBConfigError} On a malformed root or an unsafe transport.
 *
 * @example Resolve for a local HUB
 * ```ts
 * import { resolveConfig } from "./config.ts";
 *
 * const config = await resolveConfig({
 *   apiRoot: "http://127.0.0.1:8080/",
 *   settingsFile: false,
 * });
 * console.assert(config.apiRoot === "http://127.0.0.1:8080");
 * ```
 */
export async function resolveConfig(
  options: ConfigOptions = {},
  identifierKey?: string,
): Promise<ResolvedConfig> {
  const { env = readEnv } = options;
  const nonEmpty = (value: string | undefined): string | undefined =>
    value === undefined || value.trim() === "" ? undefined : value.trim();
  const apiRoot = normaliseRoot(
    nonEmpty(options.apiRoot) ?? nonEmpty(env("ULTRALYTICS_HUB_API")) ??
      DEFAULT_API_ROOT,
    "the API root",
  );
  const webRoot = normaliseRoot(
    nonEmpty(options.webRoot) ?? nonEmpty(env("ULTRALYTICS_HUB_WEB")) ??
      DEFAULT_WEB_ROOT,
    "the web root",
  );
  let apiKey = nonEmpty(identifierKey) ?? nonEmpty(options.apiKey) ??
    nonEmpty(env("HUB_API_KEY"));
  if (apiKey === undefined && options.settingsFile !== false) {
    apiKey = await readSettingsKey(
      options.settingsFile ?? defaultSettingsFile(env),
    );
  }
  assertSafeTransport(apiRoot, apiKey);
  return { apiRoot, webRoot, apiKey };
}
