/**
 * The local HUB: a server that speaks the HUB v1 wire protocol, so that
 * training sessions (this package's and the Python `hub-sdk`/Ultralytics
 * ones) run with no account and no network. Models, metrics and weights live
 * in plain files under a data directory; uploads are streamed to disk and
 * checked against an optional sha256.
 *
 * Run it with `deno task hub` (the command line's `serve`), or start it
 * from code:
 *
 * @example Start the local HUB on a free port and stop it
 * ```ts
 * import { serveHub } from "./mod.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const server = await serveHub({ dataDir });
 * console.log(`HUB listening on ${server.url}`);
 * await server.close();
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 *
 * @module
 */

export {
  createHubHandler,
  type HubHandler,
  type HubHandlerOptions,
} from "./app.ts";
export { type HubServer, serveHub, type ServeHubOptions } from "./serve.ts";
