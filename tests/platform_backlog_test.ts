// A backlog of epochs through the Platform transport (one epoch_end per
// epoch) against the local HUB behind the fault proxy: faults are retried
// within the call while the server answers, a hung request gets a copy, and a
// server that is down is not sent the whole backlog; a checkpoint whose
// checkpoint_saved failed is not uploaded again when it is retried.
import { after, before, describe, test } from "node:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { HUBRequestError } from "../src/common/errors.ts";
import { PlatformTransport } from "../src/transport/platform/transport.ts";
import { startPlatformHub, TEST_PLATFORM_KEY } from "./support/platform_hub.ts";
import type { PlatformHub } from "./support/platform_hub.ts";
import { quietLogger } from "./support/common.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import type { Fault, FaultProxy } from "./support/fault_proxy.ts";
import type { EpochMetrics } from "../src/protocol/types.ts";

let hub: PlatformHub;

before(async () => {
  hub = await startPlatformHub();
});

after(async () => {
  await hub.close();
});

function backlog(count: number): Map<number, EpochMetrics> {
  return new Map(
    Array.from({ length: count }, (_, epoch) => [epoch, {
      "train/box_loss": 1 / (epoch + 1),
      "metrics/mAP50-95(B)": 0.01 * epoch,
    }]),
  );
}

async function storedEpochs(id: string): Promise<number[]> {
  const list = await hub.get(`/v1/models/${id}/metrics`) as unknown as Array<
    { epoch: number }
  >;
  return list.map((e) => e.epoch).sort((a, b) => a - b);
}

/** A started run whose requests go through a proxy with these faults. */
async function runThrough(
  name: string,
  schedule: Fault[],
  timeout = 30_000,
): Promise<{ transport: PlatformTransport; proxy: FaultProxy; id: string }> {
  const proxy = await startFaultProxy({
    upstream: hub.url,
    // training_started passes, then the scripted faults, then every request.
    schedule: ["pass", ...schedule],
    retryAfterSeconds: 1,
  });
  const transport = new PlatformTransport({
    webhooksUrl: `${proxy.url}/api/webhooks`,
    apiKey: TEST_PLATFORM_KEY,
    project: "ada/backlog",
    name,
    logger: quietLogger,
    timeout,
  });
  const id = await transport.startRun({ epochs: 40 });
  return { transport, proxy, id };
}

describe("A backlog of epochs to the Platform", () => {
  test("epochs whose requests hit faults are delivered in the same call while the server answers", async () => {
    const faults: Fault[] = [
      "status503",
      "pass",
      "status502",
      "pass",
      "resetBeforeResponse",
      "pass",
      "rateLimited",
      "pass",
      "status504",
    ];
    const { transport, proxy, id } = await runThrough("faults", faults);
    try {
      await transport.sendEpochs(backlog(24));
      assertEquals(
        await storedEpochs(id),
        Array.from({ length: 24 }, (_, i) => i),
      );
      // Five requests failed and were sent again in that call.
      assertEquals(
        proxy.log.filter((e) => e.path.endsWith("/training/metrics")).length,
        1 + 24 + 5,
      );
    } finally {
      await proxy.close();
    }
  });

  test("a request that hangs while the rest is delivered gets a copy, and the call ends", async () => {
    const { transport, proxy, id } = await runThrough(
      "hung",
      ["pass", "stall"],
    );
    try {
      await transport.sendEpochs(backlog(8));
      assertEquals(await storedEpochs(id), [0, 1, 2, 3, 4, 5, 6, 7]);
      assertEquals(proxy.stats.byFault.stall, 1);
    } finally {
      await proxy.close();
    }
  });

  test("a server that is down is sent only the first few requests of a backlog", async () => {
    const { transport, proxy, id } = await runThrough("down", []);
    try {
      proxy.setOutage(true);
      const before = proxy.stats.requests;
      await assertRejects(
        () => transport.sendEpochs(backlog(40)),
        HUBRequestError,
      );
      // Four in flight, and a new one for each of the first failures.
      assert(
        proxy.stats.requests - before < 8,
        `${proxy.stats.requests - before} requests`,
      );
      proxy.setOutage(false);
      await transport.sendEpochs(backlog(40));
      assertEquals(
        await storedEpochs(id),
        Array.from({ length: 40 }, (_, i) => i),
      );
    } finally {
      await proxy.close();
    }
  });

  test("a checkpoint whose checkpoint_saved failed sends only the event when retried", async () => {
    // After training_started: the upload URL passes, checkpoint_saved fails.
    const { transport, proxy, id } = await runThrough("checkpoint", [
      "pass",
      "status503",
    ]);
    const dir = await mkdtemp(join(tmpdir(), "platform-backlog-"));
    try {
      const file = join(dir, "last.pt");
      await writeFile(file, "checkpoint of epoch 4");
      const upload = { epoch: 4, file, type: "epoch" as const };
      await assertRejects(
        () => transport.uploadWeights(upload),
        HUBRequestError,
      );
      await transport.uploadWeights(upload);
      const paths = proxy.log.map((e) => e.path);
      assertEquals(
        paths.filter((p) => p.endsWith("/models/upload")).length,
        1,
      );
      const events = (await hub.events(id)).map((e) => e.event);
      assertEquals(events, ["training_started", "checkpoint_saved"]);
    } finally {
      await proxy.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
