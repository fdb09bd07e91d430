/**
 * Session set-up shared by the test files that train against a local HUB:
 * options that keep a session quiet, local and fast to retry, and a fresh
 * model to train.
 *
 * @module
 */

import { createModelPayload } from "../../src/protocol/model_payload.ts";
import type { SessionOptions } from "../../src/session/options.ts";
import type { HUBClient } from "../../src/transport/client.ts";

/**
 * Options of a session on the HUB at `url` that reads no settings file and
 * no environment, logs nothing, keeps no journal, sends no heartbeat, has no
 * checkpoint rate limit and retries within milliseconds; `extra` overrides
 * any of them.
 */
export function localSessionOptions(
  url: string,
  extra: SessionOptions = {},
): SessionOptions {
  return {
    apiRoot: url,
    webRoot: url,
    settingsFile: false,
    env: () => undefined,
    logger: "quiet",
    journal: false,
    heartbeat: false,
    rateLimits: { metrics: 10, ckpt: 0, heartbeat: 60_000 },
    backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
    ...extra,
  };
}

/** Creates a model on the client's HUB (3 epochs of coco8) and returns its id. */
export async function newModel(
  client: HUBClient,
  name = "yolov8n.yaml",
): Promise<string> {
  return await client.createModel(
    createModelPayload(name, { data: "coco8.yaml", epochs: 3 }),
  );
}
