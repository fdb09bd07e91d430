/**
 * What a model may hold is bounded (issue 11, items 4 and 5): metric names
 * per epoch and per model, their length, one epoch's size, epochs per post
 * and per model, the extra fields of a document, and the memory the
 * document cache takes. Each refusal is a 400/413 JSON envelope that says
 * which bound, and stores nothing.
 *
 * @module
 */

import { describe, test } from "node:test";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  MAX_EPOCH,
  MAX_EPOCH_METRICS_BYTES,
  MAX_METRIC_NAME_LENGTH,
  MAX_METRIC_NAMES_PER_MODEL,
  MAX_METRICS_PER_EPOCH,
} from "../src/protocol/metrics_rules.ts";
import { serveHub } from "../src/server/mod.ts";
import type { HubServer } from "../src/server/mod.ts";
import { FileModelStore } from "../src/server/storage/files/models.ts";
import { createModelPayload } from "../src/session/session.ts";
import { type Envelope, STORED_CONFIG } from "./support/server.ts";

async function call(
  server: HubServer,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Envelope }> {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() as Envelope };
}

async function withServer(
  fn: (server: HubServer, id: string) => Promise<void>,
): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), "hub-limits-"));
  try {
    await using server = await serveHub({ dataDir });
    const created = await call(
      server,
      "POST",
      "/v1/models",
      createModelPayload("yolov8n.pt", { data: "coco8.yaml", epochs: 3 }),
    );
    assertEquals(created.status, 200);
    await fn(server, (created.body.data as { id: string }).id);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

function names(count: number, prefix = "m"): Record<string, number> {
  const metrics: Record<string, number> = {};
  for (let i = 0; i < count; i++) metrics[`${prefix}${i}`] = i;
  return metrics;
}

async function storedEpochs(server: HubServer, id: string): Promise<number[]> {
  const { body } = await call(server, "GET", `/v1/models/${id}/metrics`);
  return (body.data as { epoch: number }[]).map((e) => e.epoch);
}

describe("bounded models", () => {
  test("an epoch with 10,000 distinct metric names answers 413 and stores nothing", async () => {
    await withServer(async (server, id) => {
      const reply = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { "0": { loss: 1 }, "1": names(10_000) },
      });
      assertEquals(reply.status, 413);
      assertEquals(reply.body.success, false);
      assertMatch(
        reply.body.message ?? "",
        new RegExp(`epoch 1 .*more than ${MAX_METRICS_PER_EPOCH} metrics`),
      );
      assertEquals(await storedEpochs(server, id), []);
    });
  });

  test("a metric name too long, an epoch too large and an epoch number too high are refused", async () => {
    await withServer(async (server, id) => {
      const long = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { "0": { ["x".repeat(MAX_METRIC_NAME_LENGTH + 1)]: 1 } },
      });
      assertEquals(long.status, 413);
      assertMatch(long.body.message ?? "", /metric name of \d+ characters/);
      const big: Record<string, number> = {};
      for (let i = 0; i < MAX_METRICS_PER_EPOCH; i++) {
        big[`${"n".repeat(MAX_METRIC_NAME_LENGTH - 4)}${i}`] = i;
      }
      const heavy = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { "0": big },
      });
      assertEquals(heavy.status, 413);
      assertMatch(
        heavy.body.message ?? "",
        new RegExp(`more than ${MAX_EPOCH_METRICS_BYTES}`),
      );
      const far = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { [String(MAX_EPOCH + 1)]: { loss: 1 } },
      });
      assertEquals(far.status, 400);
      assertMatch(far.body.message ?? "", /not an integer from 0 to/);
      assertEquals(await storedEpochs(server, id), []);
    });
  });

  test("an empty metric name is refused, and does not let an epoch past the per-epoch bounds", async () => {
    await withServer(async (server, id) => {
      const empty = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { "0": { "": 1, loss: 0.5 } },
      });
      assertEquals(empty.status, 400);
      assertMatch(empty.body.message ?? "", /metric name of 0 characters/);
      // The empty name first, then more metrics than an epoch may have.
      const crowded = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { "1": { "": 1, ...names(MAX_METRICS_PER_EPOCH + 10) } },
      });
      assertEquals(crowded.status, 400);
      assertEquals(await storedEpochs(server, id), []);
    });
  });

  test("a model refuses more distinct metric names than its bound across posts, keeping what it had", async () => {
    await withServer(async (server, id) => {
      const perEpoch = 64;
      const epochs = MAX_METRIC_NAMES_PER_MODEL / perEpoch;
      for (let epoch = 0; epoch < epochs; epoch++) {
        const reply = await call(server, "POST", `/v1/models/${id}`, {
          type: "metrics",
          metrics: { [String(epoch)]: names(perEpoch, `e${epoch}_`) },
        });
        assertEquals(reply.status, 200, reply.body.message);
      }
      const over = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { [String(epochs)]: { "one more": 1 } },
      });
      assertEquals(over.status, 413);
      assertMatch(
        over.body.message ?? "",
        new RegExp(`more than ${MAX_METRIC_NAMES_PER_MODEL} distinct`),
      );
      assertEquals((await storedEpochs(server, id)).length, epochs);
      // Known names stay welcome.
      const known = await call(server, "POST", `/v1/models/${id}`, {
        type: "metrics",
        metrics: { [String(epochs)]: { e0_1: 1 } },
      });
      assertEquals(known.status, 200);
    });
  });

  test("a PATCH whose extra fields would pass 64 KiB answers 413 and leaves the document as it was", async () => {
    await withServer(async (server, id) => {
      const small = await call(server, "PATCH", `/v1/models/${id}`, {
        notes: "x".repeat(1000),
      });
      assertEquals(small.status, 200);
      const before = await call(server, "GET", `/v1/models/${id}`);
      const huge = await call(server, "PATCH", `/v1/models/${id}`, {
        blob: "y".repeat(15 * 1024 * 1024 / 16),
      });
      assertEquals(huge.status, 413);
      assertMatch(huge.body.message ?? "", /extra fields would take \d+ bytes/);
      const after = await call(server, "GET", `/v1/models/${id}`);
      assertEquals(after.body.data, before.body.data);
    });
  });

  test("the document cache stays under its byte bound and still finds every model", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-limits-"));
    try {
      const bound = 1024 * 1024;
      const store = await FileModelStore.open(dataDir, {
        maxCachedBytes: bound,
      });
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) {
        const record = await store.create({
          name: `m${i}`,
          dataset: "",
          architecture: "yolov8n",
          config: STORED_CONFIG,
        }, i);
        await store.update(record.id, (r) => {
          r.extra.notes = "z".repeat(60 * 1024);
        }, i);
        ids.push(record.id);
        assert(store.cachedBytes <= bound, `${store.cachedBytes} bytes`);
      }
      assert(store.cachedModels < 40, `${store.cachedModels} models cached`);
      for (const id of ids) {
        assertEquals((await store.get(id))?.extra.notes, "z".repeat(60 * 1024));
        assert(store.cachedBytes <= bound, `${store.cachedBytes} bytes`);
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
