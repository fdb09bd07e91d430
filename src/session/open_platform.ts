/**
 * Builds the transport of a session opened on `ul://<owner>/<project>/<name>`:
 * the Ultralytics Platform URL and key from the options and the
 * environment, a redacting logger, and a {@linkcode PlatformTransport}.
 *
 * @module
 */

import { consoleLogger, redactingLogger } from "../common/logger.ts";
import { resolvePlatformConfig } from "../transport/platform/config.ts";
import { PlatformTransport } from "../transport/platform/transport.ts";
import type { PlatformModelUri } from "../protocol/platform.ts";
import type { Logger } from "../protocol/types.ts";
import type { SessionOptions } from "./options.ts";

/** What a Platform session starts from. */
export interface OpenedPlatform {
  /** The transport. */
  transport: PlatformTransport;
  /** The session's logger (the key scrubbed from every line). */
  logger: Logger;
  /** Webhooks root: the journal's server directory is named after it. */
  webhooksUrl: string;
  /** Platform base URL. */
  platformUrl: string;
}

/**
 * Resolves where a `ul://` run reports and builds its transport.
 *
 * @param uri The parsed `ul://` URI.
 * @param options The session's options.
 * @param env Reads an environment variable.
 * @returns The transport and what the session needs to know.
 * @throws {HUBConfigError} When no well-formed `ul_` key is found, or it would travel in clear text.
 *
 * @example Open a run on a local HUB
 * ```ts
 * import { openPlatform } from "./open_platform.ts";
 * import { parsePlatformUri } from "../protocol/platform.ts";
 *
 * const opened = openPlatform(parsePlatformUri("ul://ada/signs/run")!, {
 *   platformUrl: "http://127.0.0.1:9",
 *   apiKey: "ul_" + "0".repeat(40),
 *   logger: "quiet",
 * }, () => undefined);
 * console.assert(opened.webhooksUrl === "http://127.0.0.1:9/api/webhooks");
 * ```
 */
export function openPlatform(
  uri: PlatformModelUri,
  options: SessionOptions,
  env: (name: string) => string | undefined,
): OpenedPlatform {
  const config = resolvePlatformConfig({
    platformUrl: options.platformUrl,
    apiKey: options.apiKey,
    env,
  });
  const logger = redactingLogger(
    options.logger === "quiet"
      ? consoleLogger(true)
      : options.logger ?? consoleLogger(),
    [config.apiKey],
  );
  const transport = new PlatformTransport({
    webhooksUrl: config.webhooksUrl,
    platformUrl: config.platformUrl,
    apiKey: config.apiKey,
    project: uri.project,
    name: uri.name,
    logger,
    fetch: options.fetch,
    signal: options.signal,
    timeout: options.timeout,
  });
  return {
    transport,
    logger,
    webhooksUrl: config.webhooksUrl,
    platformUrl: config.platformUrl,
  };
}
