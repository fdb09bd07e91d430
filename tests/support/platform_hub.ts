/**
 * A local HUB with the Platform endpoints, on loopback, for the Platform
 * tests: its data in a temp dir, an optional `ul_` key, and helpers to read
 * what the HUB stored.
 *
 * @module
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closedPort as freePort } from "./server.ts";
import { serveHub } from "../../src/server/mod.ts";
import { startFaultProxy } from "./fault_proxy.ts";
import type { FaultProxy, FaultProxyOptions } from "./fault_proxy.ts";
import type { HubServer } from "../../src/server/mod.ts";

/** A Platform key for tests (never a real one). */
export const TEST_PLATFORM_KEY = "ul_" + "0123456789abcdef".repeat(2) +
  "01234567";

/** A running HUB with the Platform endpoints. */
export interface PlatformHub {
  /** Base URL, e.g. `http://127.0.0.1:1234`. */
  url: string;
  /** Webhooks root: `<url>/api/webhooks`. */
  webhooksUrl: string;
  /** The temp dir (data in `<dir>/hub`). */
  dir: string;
  /** The HUB server. */
  hub: HubServer;
  /** `GET` a v1 JSON path with the key; answers `data`. */
  get(path: string): Promise<Record<string, unknown>>;
  /** The Platform events the HUB received for a model, oldest first. */
  events(modelId: string): Promise<Array<Record<string, unknown>>>;
  /** Presses "Stop" on a run through the API. */
  stop(modelId: string): Promise<Response>;
  /** The fault proxy in front of the HUB, when one was asked for. */
  proxy: FaultProxy | undefined;
  /** Where clients go: the proxy's URL when there is one, else `url`. */
  clientUrl: string;
  /** Stops the server (and the proxy) and removes the temp dir. */
  close(): Promise<void>;
}

/**
 * Starts a local HUB on a free port with its data in a new temp dir.
 *
 * @param options `apiKeys` the HUB accepts (default: the test key).
 */
export async function startPlatformHub(
  options: {
    apiKeys?: string[];
    dir?: string;
    port?: number;
    /** A fault proxy in front; the HUB's upload URLs point at it too. */
    proxy?: Omit<FaultProxyOptions, "upstream">;
    /** The HUB's clock, ms since the epoch. */
    now?: () => number;
    /** The HUB's request time limit, ms. */
    requestTimeout?: number;
  } = {},
): Promise<PlatformHub> {
  const { apiKeys = [TEST_PLATFORM_KEY] } = options;
  const dir = options.dir ?? await mkdtemp(join(tmpdir(), "platform-hub-"));
  let port = options.port ?? 0;
  let proxy: FaultProxy | undefined;
  if (options.proxy !== undefined) {
    // The proxy needs the HUB's address and the HUB the proxy's (for the
    // signed upload URLs): reserve the HUB's port first.
    if (port === 0) port = await freePort();
    proxy = await startFaultProxy({
      ...options.proxy,
      upstream: `http://127.0.0.1:${port}`,
    });
  }
  const hub = await serveHub({
    port,
    dataDir: join(dir, "hub"),
    apiKeys,
    ...(proxy === undefined ? {} : { publicUrl: proxy.url }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.requestTimeout === undefined
      ? {}
      : { requestTimeout: options.requestTimeout }),
  });

  const auth = { authorization: `Bearer ${apiKeys[0] ?? TEST_PLATFORM_KEY}` };
  const get = async (path: string): Promise<Record<string, unknown>> => {
    const response = await fetch(`${hub.url}${path}`, { headers: auth });
    const body = await response.json();
    if (!response.ok) {
      throw new Error(
        `GET ${path} answered ${response.status}: ${body.message}`,
      );
    }
    return body.data;
  };
  return {
    url: hub.url,
    webhooksUrl: `${hub.url}/api/webhooks`,
    dir,
    hub,
    proxy,
    clientUrl: proxy?.url ?? hub.url,
    get,
    async events(modelId) {
      const data = await get(`/api/platform/models/${modelId}/events`);
      return (data.events as Array<{ body: Record<string, unknown> }>).map((
        e,
      ) => e.body);
    },
    stop(modelId) {
      return fetch(`${hub.url}/api/platform/models/${modelId}/stop`, {
        method: "POST",
        headers: auth,
      });
    },
    async close() {
      await proxy?.close();
      await hub.close();
      if (options.dir === undefined) {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
