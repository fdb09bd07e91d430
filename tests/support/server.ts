/**
 * What the HUB server and storage tests share: a files-backed HUB on loopback
 * in a temporary directory, the reply envelope, a create payload, a new
 * model's fields, and a loopback port nothing listens on.
 *
 * @module
 */

import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type HubServer,
  serveHub,
  type ServeHubOptions,
} from "../../src/server/mod.ts";
import type { NewModel } from "../../src/server/storage/contract.ts";

/** The JSON envelope of every HUB reply. */
export interface Envelope {
  success: boolean;
  data?: unknown;
  message?: string;
}

/** A `POST /v1/models` body: a small run from `yolov8n.yaml`. */
export const CREATE_PAYLOAD = {
  config: {
    batchSize: 8,
    epochs: 2,
    imageSize: 320,
    patience: 5,
    device: "cpu",
    cache: "ram",
  },
  dataset: { name: "coco8.yaml" },
  lineage: { architecture: { name: "yolov8n" }, parent: {} },
  meta: { name: "yolov8n.yaml" },
};

/** A training configuration as the stores keep it. */
export const STORED_CONFIG: NewModel["config"] = {
  batchSize: -1,
  epochs: 1,
  imageSize: 640,
  patience: 1,
  device: "",
  cache: "ram",
};

/** The fields of a new model as the stores take them. */
export const NEW_MODEL: NewModel = {
  name: "yolov8n.pt",
  dataset: "coco8.yaml",
  architecture: "yolov8n",
  config: STORED_CONFIG,
};

/**
 * Runs `fn` against a HUB on files in a fresh temporary directory, then
 * closes the HUB and removes the directory.
 *
 * @param fn The test body; gets the server and its data directory.
 * @param options Further server options.
 * @param prefix Prefix of the temporary directory's name.
 */
export async function withServer(
  fn: (server: HubServer, dataDir: string) => Promise<void>,
  options: Omit<ServeHubOptions, "dataDir"> = {},
  prefix = "hub-server-",
): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), prefix));
  const server = await serveHub({ dataDir, ...options });
  try {
    await fn(server, dataDir);
  } finally {
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * A loopback port that was free a moment ago and has nothing listening on
 * it: connections to it are refused (an unreachable service).
 *
 * @returns The port.
 */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
