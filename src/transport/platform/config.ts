/**
 * Where a Platform run reports and with which key: the Platform URL, the
 * webhooks root and the `ul_` API key, from options first, then the
 * environment variables the Python trainer reads.
 *
 * @module
 */

import { DEFAULT_PLATFORM_URL } from "../../protocol/platform.ts";
import { checkPlatformKey } from "./client.ts";

/** Options of {@linkcode resolvePlatformConfig}. */
export interface PlatformConfigOptions {
  /** Platform base URL; else `ULTRALYTICS_PLATFORM_URL`, else the hosted Platform. @default {undefined} */
  platformUrl?: string | undefined;
  /** API key; else `ULTRALYTICS_API_KEY`. @default {undefined} */
  apiKey?: string | undefined;
  /** Reads an environment variable. @default {() => undefined} */
  env?: ((name: string) => string | undefined) | undefined;
}

/** Where a Platform run reports. */
export interface PlatformConfig {
  /** Base URL without trailing `/`, e.g. `https://platform.ultralytics.com`. */
  platformUrl: string;
  /** Webhooks root: `PLATFORM_API_URL`, else `<platformUrl>/api/webhooks`. */
  webhooksUrl: string;
  /** The `ul_` key. */
  apiKey: string;
}

/**
 * Resolves the Platform URL, the webhooks root and the key.
 *
 * @param options Explicit values and the environment reader.
 * @returns The configuration.
 * @throws {HUBConfigError} When no well-formed key is found (the key is never echoed).
 *
 * @example Point a run at a local HUB
 * ```ts
 * import { resolvePlatformConfig } from "./config.ts";
 *
 * const config = resolvePlatformConfig({
 *   platformUrl: "http://127.0.0.1:8080/",
 *   apiKey: "ul_" + "0".repeat(40),
 * });
 * console.assert(config.webhooksUrl === "http://127.0.0.1:8080/api/webhooks");
 * ```
 */
export function resolvePlatformConfig(
  options: PlatformConfigOptions = {},
): PlatformConfig {
  const env = options.env ?? (() => undefined);
  const platformUrl = (options.platformUrl ?? env("ULTRALYTICS_PLATFORM_URL") ??
    DEFAULT_PLATFORM_URL).trim().replace(/\/+$/, "");
  const webhooksUrl =
    (env("PLATFORM_API_URL")?.trim() || `${platformUrl}/api/webhooks`)
      .replace(/\/+$/, "");
  const apiKey = checkPlatformKey(
    options.apiKey ?? env("ULTRALYTICS_API_KEY")?.trim(),
  );
  return { platformUrl, webhooksUrl, apiKey };
}
