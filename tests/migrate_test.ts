import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { main } from "../src/cli/mod.ts";
import { serveHub } from "../src/server/mod.ts";
import { HUBClient } from "../src/transport/client.ts";
import { createModelPayload } from "../src/session/session.ts";
import {
  createTestDatabase,
  haveServices,
  s3Config,
  type TestDatabase,
} from "./support/services.ts";
import { quietLogger } from "./support/common.ts";

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function fetchSha(url: string): Promise<string> {
  const response = await fetch(url);
  assertEquals(response.status, 200, url);
  return sha256(new Uint8Array(await response.arrayBuffer()));
}

if (haveServices("migrate into PostgreSQL + S3", ["postgres", "s3"])) {
  describe("hub-session migrate", () => {
    let dir: string;
    let db: TestDatabase;
    let weights: string;
    /** model id -> epoch count, last.pt sha256, best.pt sha256 */
    const source = new Map<
      string,
      { epochs: number; last?: string; best?: string }
    >();

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "hub-migrate-"));
      db = await createTestDatabase();
      const s3 = s3Config()!;
      weights = `s3://${s3.bucket}/${s3.prefix}`;
      // A laptop HUB on files, filled through the wire protocol.
      const hub = await serveHub({ port: 0, dataDir: join(dir, "data") });
      const client = new HUBClient({ apiRoot: hub.url, logger: quietLogger });
      try {
        for (let m = 0; m < 3; m++) {
          const id = await client.createModel(
            createModelPayload("yolov8n.yaml", {
              data: "coco8.yaml",
              epochs: 5,
            }),
          );
          const epochs = 2 + m * 3;
          for (let e = 0; e < epochs; e++) {
            await client.uploadMetrics(id, {
              [e]: { "train/loss": e / (m + 1) },
            });
          }
          const entry: { epochs: number; last?: string; best?: string } = {
            epochs,
          };
          if (m > 0) {
            const last = randomBytes(200_000 * m);
            await writeFile(join(dir, "last.pt"), last);
            await client.uploadModel(id, {
              epoch: epochs - 1,
              file: join(dir, "last.pt"),
              type: "epoch",
            });
            entry.last = sha256(last);
          }
          if (m === 2) {
            const best = randomBytes(17 * 1024 * 1024); // a multipart upload in S3
            await writeFile(join(dir, "best.pt"), best);
            await client.uploadModel(id, {
              epoch: epochs - 1,
              file: join(dir, "best.pt"),
              type: "final",
              map: 0.5,
            });
            entry.best = sha256(best);
          }
          source.set(id, entry);
        }
      } finally {
        await hub.close();
      }
    });

    after(async () => {
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    });

    test("copies every model, epoch and weights file, checked by sha256, and can run again", async () => {
      const lines: string[] = [];
      const run = async (): Promise<number> =>
        await main([
          "migrate",
          "--data",
          join(dir, "data"),
          "--database",
          db.url,
          "--weights",
          weights,
        ], {
          write: (line) => lines.push(line),
          writeError: (line) => lines.push(line),
          env: (name) => process.env[name],
        });
      assertEquals(await run(), 0, lines.join("\n"));
      const total = [...source.values()].reduce((n, m) => n + m.epochs, 0);
      assertStringIncludes(
        lines.join("\n"),
        `Copied 3 models, ${total} epochs, 3 weights files`,
      );
      assert(!lines.join("\n").includes(process.env.AWS_SECRET_ACCESS_KEY!));
      lines.length = 0;
      assertEquals(await run(), 0, lines.join("\n"));
      assertStringIncludes(
        lines.join("\n"),
        "0 weights files (0 bytes; 3 already there)",
      );

      // A server on PostgreSQL + S3 serves the same HUB.
      const hub = await serveHub({ port: 0, database: db.url, weights });
      const client = new HUBClient({ apiRoot: hub.url, logger: quietLogger });
      try {
        for (const [id, expected] of source) {
          const metrics = await client.listMetrics(id);
          assertEquals(metrics.length, expected.epochs);
          assertEquals(metrics.map((m) => m.epoch), [
            ...Array(expected.epochs).keys(),
          ]);
          if (expected.last !== undefined) {
            assertEquals(
              await fetchSha(`${hub.url}/v1/models/${id}/files/last.pt`),
              expected.last,
            );
          }
          if (expected.best !== undefined) {
            assertEquals(
              await fetchSha(`${hub.url}/v1/models/${id}/files/best.pt`),
              expected.best,
            );
          }
        }
      } finally {
        await hub.close();
      }
    });

    test("refuses without a target and names what to give", async () => {
      const lines: string[] = [];
      const code = await main(["migrate", "--data", join(dir, "data")], {
        write: (line) => lines.push(line),
        writeError: (line) => lines.push(line),
        env: () => undefined,
      });
      assertEquals(code, 2);
      assertStringIncludes(lines.join("\n"), "--database");
    });
  });
}
