// A journal is found again when the same HUB comes back on another address
// (the demo's random port), and `sync` says exactly what it found.
import { after, before, test } from "node:test";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../src/cli/mod.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import { serveHub } from "../src/server/mod.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { syncJournal } from "../src/session/sync.ts";
import { HUBClient } from "../src/transport/client.ts";
import { quietLogger } from "./support/common.ts";

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-instance-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Leaves epoch 0 of a new model unacknowledged in a journal, as a Ctrl-C would. */
async function strandEpoch(
  dataDir: string,
  journal: string,
): Promise<{ id: string; firstUrl: string }> {
  const first = await serveHub({ port: 0, dataDir });
  const client = new HUBClient({ apiRoot: first.url, logger: quietLogger });
  const id = await client.createModel(
    createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
  );
  const session = await HUBTrainingSession.create(id, {
    apiRoot: first.url,
    webRoot: first.url,
    settingsFile: false,
    env: () => undefined,
    logger: "quiet",
    journal,
    heartbeat: false,
    rateLimits: { metrics: 3_600_000 },
  });
  await first.close();
  session.queueMetrics(0, { "train/loss": 1 });
  await session.close({ timeout: 0 });
  return { id, firstUrl: first.url };
}

test("sync finds the journal of the same HUB served again on another port", async () => {
  const dataDir = join(dir, "data-1");
  const journal = join(dir, "journal-1");
  const { id, firstUrl } = await strandEpoch(dataDir, journal);
  const again = await serveHub({ port: 0, dataDir });
  try {
    assert(again.url !== firstUrl);
    const reports = await syncJournal({
      apiRoot: again.url,
      journal,
      modelId: id,
      settingsFile: false,
      env: () => undefined,
      logger: "quiet",
    });
    assertEquals(reports.map((r) => [r.modelId, r.found.epochs, r.epochs]), [
      [id, 1, [0]],
    ]);
    const client = new HUBClient({ apiRoot: again.url, logger: quietLogger });
    assertEquals((await client.listMetrics(id)).map((m) => m.epoch), [0]);
  } finally {
    await again.close();
  }
});

test("the sync command says what it found and delivered, and an unknown model exits 1 with a hint", async () => {
  const dataDir = join(dir, "data-2");
  const journal = join(dir, "journal-2");
  const { id } = await strandEpoch(dataDir, journal);
  const again = await serveHub({ port: 0, dataDir });
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(args, {
      env: () => undefined,
      write: (l) => out.push(l),
      writeError: (l) => err.push(l),
    });
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  try {
    const unknown = await run([
      "sync",
      "--hub",
      again.url,
      "--journal",
      journal,
      "--model",
      "ZZZZZZZZZZZZZZZZZZZZ",
    ]);
    assertEquals(unknown.code, 1);
    assertMatch(unknown.err, /holds nothing for model ZZZZZZZZZZZZZZZZZZZZ/);
    assertMatch(unknown.err, new RegExp(`journals exist for .*${id}`));
    const synced = await run([
      "sync",
      "--hub",
      again.url,
      "--journal",
      journal,
      "--model",
      id,
    ]);
    assertEquals(synced.code, 0, synced.err);
    assertMatch(
      synced.out,
      new RegExp(
        `model ${id}: found 1 epoch\\(s\\) and no weights; delivered 1 epoch\\(s\\)`,
      ),
    );
  } finally {
    await again.close();
  }
});
