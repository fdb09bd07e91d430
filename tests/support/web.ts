/**
 * Test helpers for the web app: the web app served on loopback over a real
 * store in a temp dir (filled directly through the store), and headless
 * Chromium driven over the DevTools protocol by `puppeteer-core` (no browser
 * download: Debian's `chromium`, found by `findChromium()`).
 *
 * @module
 */

import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import puppeteer from "puppeteer-core";
import type { Browser } from "puppeteer-core";
import { HubStore } from "../../src/server/store.ts";
import type { StoredMetrics } from "../../src/server/storage/records.ts";
import {
  createWebApp,
  type WebApp,
  type WebAppOptions,
} from "../../src/server/web/app.ts";
import { storeSource } from "../../src/server/web/source.ts";

/** The web app on loopback over a store in a temp dir. */
export interface WebServer {
  /** Base URL, e.g. `http://127.0.0.1:1234`. */
  url: string;
  /** The store the pages read. */
  store: HubStore;
  /** The web app (its `live` hub is told about changes by the helpers). */
  web: WebApp;
  /** Stores epochs and tells open pages, as the API does. */
  addEpochs(id: string, epochs: Record<number, StoredMetrics>): Promise<void>;
  /** Stops the server and removes the temp dir. */
  close(): Promise<void>;
}

interface Listener {
  port: number;
  stop(): Promise<void>;
}

function listen(
  handler: (request: Request) => Response | Promise<Response>,
): Listener {
  const deno = (globalThis as {
    Deno?: {
      serve(
        options: { port: number; hostname: string; onListen?: () => void },
        handler: (request: Request) => Response | Promise<Response>,
      ): {
        addr: { port: number };
        shutdown(): Promise<void>;
        finished: Promise<void>;
      };
    };
  }).Deno;
  if (deno !== undefined) {
    const server = deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      handler,
    );
    return {
      port: server.addr.port,
      stop: async () => {
        await server.shutdown();
        await server.finished;
      },
    };
  }
  const bun = (globalThis as unknown as {
    Bun: {
      serve(options: {
        port: number;
        hostname: string;
        fetch: (request: Request) => Response | Promise<Response>;
        idleTimeout: number;
      }): { port: number; stop(force?: boolean): Promise<void> | void };
    };
  }).Bun;
  const server = bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: handler,
    idleTimeout: 255,
  });
  return { port: server.port, stop: async () => await server.stop(true) };
}

/** Starts the web app over a new store; `options` as for `createWebApp`. */
export async function startWebServer(
  options: Omit<WebAppOptions, "source" | "signal"> = {},
): Promise<WebServer> {
  const dir = await mkdtemp(join(tmpdir(), "hub-web-"));
  const store = await HubStore.open(dir);
  const closing = new AbortController();
  const web = createWebApp({
    ...options,
    source: () => Promise.resolve(storeSource(store)),
    signal: closing.signal,
  });
  const listener = listen((request) => web.app.fetch(request));
  return {
    url: `http://127.0.0.1:${listener.port}`,
    store,
    web,
    async addEpochs(id, epochs) {
      const map = new Map<number, StoredMetrics>();
      for (const [epoch, values] of Object.entries(epochs)) {
        map.set(Number(epoch), values);
      }
      await store.appendMetrics(id, map, Date.now());
      web.live.notify(id);
    },
    async close() {
      closing.abort();
      await listener.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Creates a model in the store with the usual Ultralytics fields. */
export async function createModel(
  store: HubStore,
  name: string,
  epochs = 300,
  now: number = Date.now(),
): Promise<string> {
  const record = await store.create({
    name,
    dataset: "coco8.yaml",
    architecture: "yolov8n",
    parent: "yolov8n.pt",
    config: {
      batchSize: 16,
      epochs,
      imageSize: 640,
      patience: 100,
      device: "",
      cache: "ram",
    },
  }, now);
  return record.id;
}

/** Ultralytics-like metrics of one epoch (13 series, model info at epoch 0). */
export function trainingMetrics(epoch: number): StoredMetrics {
  const t = epoch + 1;
  const metrics: StoredMetrics = {
    "train/box_loss": 1.5 / Math.sqrt(t),
    "train/cls_loss": 2.5 / Math.sqrt(t),
    "train/dfl_loss": 1.2 / Math.sqrt(t),
    "metrics/precision(B)": 0.9 - 0.5 / t,
    "metrics/recall(B)": 0.8 - 0.5 / t,
    "metrics/mAP50(B)": 0.7 - 0.5 / t,
    "metrics/mAP50-95(B)": 0.5 - 0.4 / t + (epoch % 7 === 3 ? 0.01 : 0),
    "val/box_loss": 1.6 / Math.sqrt(t),
    "val/cls_loss": 2.6 / Math.sqrt(t),
    "val/dfl_loss": 1.3 / Math.sqrt(t),
    "lr/pg0": 0.01 * (1 - epoch / 1000),
    "lr/pg1": 0.01 * (1 - epoch / 1000),
    "lr/pg2": 0.01 * (1 - epoch / 1000),
  };
  if (epoch === 0) {
    metrics["model/parameters"] = 3157200;
    metrics["model/GFLOPs"] = 8.9;
    metrics["model/speed_PyTorch(ms)"] = 12.5;
  }
  return metrics;
}

/** Where Chromium is, or `undefined`. */
export function findChromium(): string | undefined {
  const candidates = [
    process.env.CHROMIUM_PATH,
    process.env.CHROME_PATH,
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
  ];
  return candidates.find((path) =>
    path !== undefined && path !== "" && existsSync(path)
  );
}

/**
 * Why the browser tests cannot run here, or `undefined` when they can. In CI
 * (`CI=true`, or `HUB_TEST_REQUIRE_BROWSER=1` from .ci/setup/20-chromium.sh)
 * a missing browser is an error, not a skip.
 */
export function browserSkipReason(): string | undefined {
  if (findChromium() !== undefined) return undefined;
  const reason =
    "SKIPPED: no Chromium found (set CHROMIUM_PATH or apt-get install -y chromium; .ci/setup/20-chromium.sh does)";
  if (
    process.env.CI === "true" || process.env.HUB_TEST_REQUIRE_BROWSER === "1"
  ) {
    throw new Error(`Cannot run the browser tests in CI: ${reason}`);
  }
  console.warn(`\n*** ${reason} ***\n`);
  return reason;
}

/** Launches headless Chromium (as root it needs `--no-sandbox`). */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = findChromium();
  if (executablePath === undefined) {
    throw new Error("Cannot launch Chromium as none was found");
  }
  return await puppeteer.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
    ],
  });
}
