import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import process from "node:process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HUBClient } from "../src/transport/client.ts";
import { DEMO_RATE_LIMITS, runDemo } from "../src/demo/run.ts";
import { serveHub } from "../src/server/mod.ts";
import { isDeno } from "./support/common.ts";

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-demo-test-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("runDemo()", () => {
  test("stores every epoch and the final weights with a matching sha256 on the embedded HUB", async () => {
    const lines: string[] = [];
    const data = join(dir, "embedded");
    const summary = await runDemo({
      epochs: 4,
      dir: data,
      trainer: { samples: 200, hidden: 8 },
      write: (line) => lines.push(line),
      logger: "quiet",
    });
    assertEquals(summary.embedded, true);
    assertEquals(summary.dir, data);
    assertEquals(summary.storedEpochs, [0, 1, 2, 3]);
    assertEquals(summary.allEpochsStored, true);
    assertEquals(summary.final.match, true);
    assertEquals(summary.report.pendingEpochs, []);
    assertMatch(summary.final.sha256, /^[0-9a-f]{64}$/);
    // The server's copy is the local file, byte for byte.
    const local = await readFile(summary.final.path);
    // The file the server's document names (content-addressed).
    const doc = JSON.parse(
      await readFile(
        join(data, "models", summary.modelId, "model.json"),
        "utf8",
      ),
    );
    const stored = await readFile(
      join(data, "weights", ...String(doc.weights.best.blob).split("/")),
    );
    assertEquals(stored, local);
    assertEquals(
      createHash("sha256").update(stored).digest("hex"),
      summary.final.sha256,
    );
    assert(summary.checkpointsUploaded.includes(0));
    assertEquals(
      summary.modelUrl,
      `${summary.hubUrl}/v1/models/${summary.modelId}`,
    );
    // Real weights: the local checkpoint is a HUBTINY1 file.
    const last = await readFile(join(summary.weightsDir, "last.pt"));
    assertEquals(new TextDecoder().decode(last.subarray(0, 8)), "HUBTINY1");
    // The output has one line per epoch and a summary that says "match".
    assertEquals(
      lines.filter((l) => /^epoch [1-4]\/4 {2}loss /.test(l)).length,
      4,
    );
    assert(lines.some((l) => l.includes("4 of 4 stored on the HUB")));
    assert(lines.some((l) => l.endsWith(": match")));
    assert(
      lines.some((l) =>
        l.includes(`metrics ${DEMO_RATE_LIMITS.metrics} ms`) &&
        l.includes(`checkpoints ${DEMO_RATE_LIMITS.ckpt} ms`)
      ),
    );
    // The embedded HUB is stopped afterwards.
    await assertRejects(() => fetch(summary.hubUrl));
    // The delivered journal leaves no empty directories behind.
    const left = await readdir(data);
    assert(left.includes("runs") && left.includes("models"), String(left));
    assert(!left.includes("journal"), String(left));
  });

  test("the closing advice serves the data again on the printed URLs, as typed", async () => {
    const lines: string[] = [];
    const summary = await runDemo({
      epochs: 2,
      dir: join(dir, "advice"),
      trainer: { samples: 100, hidden: 4 },
      write: (line) => lines.push(line),
      logger: "quiet",
    });
    const index = lines.findIndex((l) => l.includes("serve this data again"));
    const command = lines[index + 1]?.trim() ?? "";
    const port = new URL(summary.hubUrl).port;
    // No deno needed on PATH; the same port, so the printed URLs stay valid.
    assertMatch(
      command,
      new RegExp(`^npx -y deno@2\\.9\\.6 task hub --port ${port} --data \\S+$`),
    );
    assertEquals(
      lines[index + 2]?.trim(),
      `then open ${summary.hubUrl}/models/${summary.modelId}`,
    );
    if (!isDeno) return; // the task runs on Deno; Bun checks the wording only
    // Run it as typed, with this runtime instead of npx's download.
    const args = command.split(" ").slice(3); // task hub --port ... --data ...
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    try {
      let output = "";
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(output)), 60_000);
        const onData = (chunk: Buffer): void => {
          output += chunk;
          if (/HUB accepts/.test(output)) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
      });
      const reply = await fetch(
        `${summary.hubUrl}/v1/models/${summary.modelId}`,
      );
      assertEquals(reply.status, 200);
      await reply.body?.cancel();
    } finally {
      const closed = new Promise((resolve) => child.on("close", resolve));
      process.kill(-child.pid!, "SIGTERM");
      await closed;
    }
  });

  test("trains against another HUB given by URL", async () => {
    const hub = await serveHub({ port: 0, dataDir: join(dir, "other-hub") });
    try {
      const summary = await runDemo({
        hub: hub.url,
        epochs: 2,
        dir: join(dir, "client-side"),
        trainer: { samples: 100, hidden: 4 },
        write: () => {},
        logger: "quiet",
      });
      assertEquals(summary.embedded, false);
      assertEquals(summary.serverModelDir, undefined);
      assertEquals(summary.allEpochsStored, true);
      assertEquals(summary.final.match, true);
      const metrics = await new HUBClient({ apiRoot: hub.url }).listMetrics(
        summary.modelId,
      );
      assertEquals(metrics.length, 2);
      assert((metrics[0]!.metrics["train/loss"] ?? 0) > 0);
    } finally {
      await hub.close();
    }
  });

  test("refuses a bad epoch count before starting anything", async () => {
    assertEquals(
      (await assertRejects(
        () => runDemo({ epochs: 0, dir, write: () => {} }),
        Error,
      )).name,
      "RangeError",
    );
    assertEquals(
      (await assertRejects(
        () => runDemo({ hub: "not a url", dir, write: () => {} }),
        Error,
      )).name,
      "TypeError",
    );
  });
});
