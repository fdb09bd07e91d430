/**
 * Several HUB server processes on one real PostgreSQL + one real S3 server
 * (Ceph radosgw): consistency across processes, and the faults of the
 * backends (database restart, S3 unreachable, a server killed mid-upload).
 */

import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertStringIncludes,
} from "@std/assert";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { HUBClient } from "../src/transport/client.ts";
import { createModelPayload } from "../src/session/session.ts";
import { openS3BlobStore } from "../src/server/storage/s3/blobs.ts";
import {
  createTestDatabase,
  haveServices,
  postgresDir,
  s3Config,
  type TestDatabase,
} from "./support/services.ts";
import { quietLogger, waitUntil } from "./support/common.ts";
import { type HubProcess, startHubProcess } from "./support/hub_process.ts";
import { startTcpGate, type TcpGate } from "./support/tcp_gate.ts";

const MiB = 1024 * 1024;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function client(url: string): HUBClient {
  return new HUBClient({ apiRoot: url, logger: quietLogger, timeout: 60_000 });
}

async function download(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  assertEquals(response.status, 200, `GET ${url}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Posts metrics with plain fetch (no retry), returning the response. */
async function postMetrics(
  url: string,
  id: string,
  epoch: number,
): Promise<Response> {
  return await fetch(`${url}/v1/models/${id}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      type: "metrics",
      metrics: { [epoch]: JSON.stringify({ "train/loss": epoch }) },
    }),
  });
}

/** Posts a final upload with curl-like plain fetch of a buffered form. */
async function postUpload(
  url: string,
  id: string,
  bytes: Uint8Array,
): Promise<Response> {
  const form = new FormData();
  form.set("epoch", "1");
  form.set("type", "final");
  form.set("map", "0.5");
  form.set("best.pt", new Blob([new Uint8Array(bytes)]), "best.pt");
  form.set("sha256", sha256(bytes));
  return await fetch(`${url}/v1/models/${id}/upload`, {
    method: "POST",
    body: form,
  });
}

/** An open `/models/<id>/events` stream and the update events it got. */
interface EventStream {
  /** The `update` events so far. */
  events: { status: string; epochs: number; updatedAt: number }[];
  /** Closes the stream. */
  close(): Promise<void>;
}

/** Opens a model page's event stream, as the page's script does. */
async function openEvents(url: string, id: string): Promise<EventStream> {
  const controller = new AbortController();
  const response = await fetch(`${url}/models/${id}/events`, {
    signal: controller.signal,
  });
  assertEquals(response.status, 200);
  const events: EventStream["events"] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    try {
      for await (const chunk of response.body!) {
        text += decoder.decode(chunk, { stream: true });
        const blocks = text.split("\n\n");
        text = blocks.pop() ?? "";
        for (const block of blocks) {
          const data = /^data: (.*)$/m.exec(block);
          if (/^event: update$/m.test(block) && data) {
            events.push(JSON.parse(data[1]!));
          }
        }
      }
    } catch {
      // Aborted by close().
    }
  })();
  return {
    events,
    async close() {
      controller.abort();
      await reading;
    },
  };
}

if (haveServices("HUB processes on PostgreSQL + S3", ["postgres", "s3"])) {
  describe("two HUB processes on one PostgreSQL and one S3", () => {
    let db: TestDatabase;
    let weights: string;
    let a: HubProcess;
    let b: HubProcess;
    let dir: string;

    before(async () => {
      db = await createTestDatabase();
      const s3 = s3Config()!;
      weights = `s3://${s3.bucket}/${s3.prefix}`;
      dir = await mkdtemp(join(tmpdir(), "hub-team-"));
      [a, b] = await Promise.all([
        startHubProcess(["--database", db.url, "--weights", weights]),
        startHubProcess(["--database", db.url, "--weights", weights]),
      ]);
    });

    after(async () => {
      await a?.kill();
      await b?.kill();
      await db?.drop();
      await rm(dir, { recursive: true, force: true });
    });

    test("serve says where the data lives, without any secret", async () => {
      await waitUntil(
        () => a.output().includes("HUB accepts"),
        "serve printed its start-up lines",
      );
      assertStringIncludes(a.output(), "PostgreSQL at 127.0.0.1");
      assertStringIncludes(a.output(), `HUB weights: ${weights}`);
      assert(!a.output().includes(process.env.AWS_SECRET_ACCESS_KEY!));
    });

    test("a write through one process is read back through the other at once", async () => {
      const id = await client(a.url).createModel(
        createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
      );
      assertEquals((await client(b.url).getModel(id)).id, id);
      await client(a.url).uploadMetrics(id, { 0: { "train/loss": 1.5 } });
      await client(b.url).uploadMetrics(id, { 1: { "train/loss": 1.2 } });
      await client(a.url).uploadMetrics(id, { 0: { "train/loss": 1.4 } });
      const metrics = await client(b.url).listMetrics(id);
      assertEquals(metrics.map((m) => [m.epoch, m.metrics["train/loss"]]), [
        [0, 1.4],
        [1, 1.2],
      ]);
      const file = join(dir, "last.pt");
      const bytes = randomBytes(3 * MiB);
      await writeFile(file, bytes);
      const stored = await client(a.url).uploadModel(id, {
        epoch: 1,
        file,
        type: "epoch",
      });
      assertEquals(stored.sha256, sha256(bytes));
      assertEquals(
        sha256(await download(`${b.url}/v1/models/${id}/files/last.pt`)),
        sha256(bytes),
      );
    });

    test("heartbeats through either process agree on the agentId", async () => {
      const id = await client(a.url).createModel(
        createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
      );
      const { agentId } = await client(a.url).heartbeat(id, { agentId: null });
      assert(agentId !== null && agentId !== "");
      const seen = await fetch(`${b.url}/v1/models/${id}`).then((r) =>
        r.json()
      );
      assertEquals(seen.data.heartbeat.agentId, agentId);
      assertEquals(
        (await client(b.url).heartbeat(id, { agentId })).agentId,
        agentId,
      );
    });

    test("two concurrent final uploads through different processes leave one complete file", async () => {
      const id = await client(a.url).createModel(
        createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
      );
      const first = randomBytes(20 * MiB);
      const second = randomBytes(20 * MiB);
      const answers = await Promise.all([
        postUpload(a.url, id, first),
        postUpload(b.url, id, second),
      ]);
      for (const answer of answers) {
        assertEquals(answer.status, 200, await answer.clone().text());
        await answer.body?.cancel();
      }
      const fromA = sha256(
        await download(`${a.url}/v1/models/${id}/files/best.pt`),
      );
      const fromB = sha256(
        await download(`${b.url}/v1/models/${id}/files/best.pt`),
      );
      assertEquals(fromA, fromB);
      assert(
        fromA === sha256(first) || fromA === sha256(second),
        "best.pt is one of the two uploads, whole",
      );
      const document = await client(b.url).getModel(id) as unknown as {
        weights: string;
      };
      assert(typeof document.weights === "string");
      // Every object under the model's prefix holds one whole upload.
      const store = await openS3BlobStore(s3ConfigFor(weights));
      try {
        const page = await store.list(`${id}/`);
        assert(page.items.length >= 1);
        for (const item of page.items) {
          const read = await store.read(item.key);
          const bytes = new Uint8Array(
            await new Response(read!.body).arrayBuffer(),
          );
          assert(
            [sha256(first), sha256(second)].includes(sha256(bytes)),
            `${item.key} holds one whole upload`,
          );
        }
        assertEquals(await store.pendingUploads(), []);
      } finally {
        await store.close();
      }
    });

    test("a page served by one process hears of metrics posted through the other", async () => {
      const id = await client(a.url).createModel(
        createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
      );
      const page = await openEvents(b.url, id);
      try {
        await waitUntil(
          () => page.events.length >= 1,
          "the first event arrives",
        );
        await client(a.url).uploadMetrics(id, { 0: { "train/loss": 1 } });
        await waitUntil(
          () => page.events.some((e) => e.epochs === 1),
          "process B's page hears the epoch posted through process A",
        );
      } finally {
        await page.close();
      }
    });
  });

  describe("faults of the backends under a running HUB", () => {
    let db: TestDatabase;
    let dir: string;

    before(async () => {
      db = await createTestDatabase();
      dir = await mkdtemp(join(tmpdir(), "hub-faults-"));
    });

    after(async () => {
      await db?.drop();
      await rm(dir, { recursive: true, force: true });
    });

    test("S3 unreachable: uploads answer 503 with Retry-After while metrics keep flowing", async () => {
      const s3 = s3Config()!;
      const endpoint = new URL(s3.endpoint!);
      const gate: TcpGate = await startTcpGate(
        endpoint.hostname,
        Number(endpoint.port),
      );
      const hub = await startHubProcess([
        "--database",
        db.url,
        "--weights",
        `s3://${s3.bucket}/${s3.prefix}`,
      ], { AWS_ENDPOINT_URL: `http://127.0.0.1:${gate.port}` });
      try {
        const id = await client(hub.url).createModel(
          createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
        );
        await gate.shut();
        const refused = await postUpload(hub.url, id, randomBytes(MiB));
        assertEquals(refused.status, 503);
        assert(Number(refused.headers.get("retry-after")) >= 1);
        await refused.body?.cancel();
        const metrics = await postMetrics(hub.url, id, 0);
        assertEquals(metrics.status, 200);
        await metrics.body?.cancel();
        await gate.open();
        const bytes = randomBytes(MiB);
        const accepted = await postUpload(hub.url, id, bytes);
        assertEquals(accepted.status, 200);
        await accepted.body?.cancel();
        assertEquals(
          sha256(await download(`${hub.url}/v1/models/${id}/files/best.pt`)),
          sha256(bytes),
        );
        assert(!hub.output().includes(process.env.AWS_SECRET_ACCESS_KEY!));
      } finally {
        await hub.kill();
        await gate.close();
      }
    });

    test("a server killed with SIGKILL mid-upload leaves no object; the retry through another server completes", async () => {
      const s3 = s3Config()!;
      const weights = `s3://${s3.bucket}/${s3.prefix}`;
      const [first, second] = await Promise.all([
        startHubProcess(["--database", db.url, "--weights", weights]),
        startHubProcess(["--database", db.url, "--weights", weights]),
      ]);
      const store = await openS3BlobStore(s3ConfigFor(weights));
      try {
        const id = await client(first.url).createModel(
          createModelPayload("yolov8n.yaml", { data: "coco8.yaml", epochs: 3 }),
        );
        const bytes = randomBytes(64 * MiB);
        // A body that sends half of the file, then waits until killed.
        const boundary = "----hubkill";
        const head = new TextEncoder().encode(
          `--${boundary}\r\ncontent-disposition: form-data; name="epoch"\r\n\r\n1\r\n` +
            `--${boundary}\r\ncontent-disposition: form-data; name="type"\r\n\r\nfinal\r\n` +
            `--${boundary}\r\ncontent-disposition: form-data; name="best.pt"; filename="best.pt"\r\n` +
            `content-type: application/octet-stream\r\n\r\n`,
        );
        let sent = 0;
        const half = bytes.subarray(0, 32 * MiB);
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(head);
          },
          async pull(controller) {
            if (sent < half.byteLength) {
              const chunk = half.subarray(sent, sent + MiB);
              sent += chunk.byteLength;
              controller.enqueue(chunk);
              return;
            }
            await new Promise(() => {}); // stall: the server is killed now
          },
        });
        const init: RequestInit & { duplex: "half" } = {
          method: "POST",
          headers: {
            "content-type": `multipart/form-data; boundary=${boundary}`,
          },
          body,
          duplex: "half",
        };
        const upload = fetch(`${first.url}/v1/models/${id}/upload`, init).then(
          () => "answered",
          () => "failed",
        );
        await waitUntil(
          async () => (await store.pendingUploads()).length > 0,
          "the killed server has parts in S3",
          30_000,
        );
        await first.kill("SIGKILL");
        assertEquals(await upload, "failed");
        assertEquals((await store.list(`${id}/`)).items, []);
        // The session retries through another server.
        const file = join(dir, "best.pt");
        await writeFile(file, bytes);
        const stored = await client(second.url).uploadModel(id, {
          epoch: 1,
          file,
          type: "final",
          map: 0.5,
        });
        assertEquals(stored.sha256, sha256(bytes));
        assertEquals(
          sha256(await download(`${second.url}/v1/models/${id}/files/best.pt`)),
          sha256(bytes),
        );
        // The dead upload is swept when a store opens past its age.
        assertNotEquals(await store.pendingUploads(), []);
        await store.abortStaleUploads(undefined, 0);
        assertEquals(await store.pendingUploads(), []);
      } finally {
        await first.kill("SIGKILL");
        await second.kill();
        await store.close();
      }
    });

    if (haveServices("PostgreSQL restart under a HUB", ["postgres-dir"])) {
      test("PostgreSQL restarted: 503 with Retry-After while down, then recovery by itself", async () => {
        const s3 = s3Config()!;
        const hub = await startHubProcess([
          "--database",
          db.url,
          "--weights",
          `s3://${s3.bucket}/${s3.prefix}`,
        ]);
        const script =
          new URL("../scripts/services/postgres.sh", import.meta.url)
            .pathname;
        try {
          const id = await client(hub.url).createModel(
            createModelPayload("yolov8n.yaml", {
              data: "coco8.yaml",
              epochs: 3,
            }),
          );
          const stop = spawnSync("bash", [script, "stop", postgresDir!], {
            encoding: "utf8",
          });
          assertEquals(stop.status, 0, stop.stderr);
          let down: Response;
          try {
            down = await postMetrics(hub.url, id, 0);
          } finally {
            const start = spawnSync("bash", [script, "restart", postgresDir!], {
              encoding: "utf8",
            });
            assertEquals(start.status, 0, start.stderr);
          }
          assertEquals(down.status, 503);
          assert(Number(down.headers.get("retry-after")) >= 1);
          await down.body?.cancel();
          await waitUntil(
            async () => {
              const answer = await postMetrics(hub.url, id, 0);
              await answer.body?.cancel();
              return answer.status === 200;
            },
            "the HUB reaches PostgreSQL again",
            30_000,
          );
          await client(hub.url).uploadMetrics(id, { 1: { "train/loss": 1 } });
          assertEquals((await client(hub.url).listMetrics(id)).length, 2);
        } finally {
          await hub.kill();
        }
      });

      test("PostgreSQL restarted: a page served by one process still hears writes through another", async () => {
        const s3 = s3Config()!;
        const args = [
          "--database",
          db.url,
          "--weights",
          `s3://${s3.bucket}/${s3.prefix}`,
        ];
        const [a, b] = await Promise.all([
          startHubProcess(args),
          startHubProcess(args),
        ]);
        const script =
          new URL("../scripts/services/postgres.sh", import.meta.url)
            .pathname;
        try {
          const id = await client(a.url).createModel(
            createModelPayload("yolov8n.yaml", {
              data: "coco8.yaml",
              epochs: 3,
            }),
          );
          const page = await openEvents(b.url, id);
          try {
            await waitUntil(() => page.events.length >= 1, "the first event");
            await client(a.url).uploadMetrics(id, { 0: { "train/loss": 1 } });
            await waitUntil(
              () => page.events.some((e) => e.epochs === 1),
              "B's page hears A's epoch before the restart",
            );
            const restart = spawnSync(
              "bash",
              [script, "restart", postgresDir!],
              {
                encoding: "utf8",
              },
            );
            assertEquals(restart.status, 0, restart.stderr);
            // One write through A once it reaches PostgreSQL again: B hears
            // it either by its notification or, if B's listening connection
            // was not back yet when it committed, by the look-up B makes
            // when it listens again.
            await waitUntil(
              async () => {
                const answer = await postMetrics(a.url, id, 1);
                await answer.body?.cancel();
                return answer.status === 200;
              },
              "process A reaches PostgreSQL again",
              30_000,
            );
            await waitUntil(
              () => page.events.some((e) => e.epochs === 2),
              "B's page hears A's epoch after the restart",
              30_000,
            );
          } finally {
            await page.close();
          }
        } finally {
          await a.kill();
          await b.kill();
        }
      });
    }
  });
}

/** The S3 settings of an `s3://bucket/prefix` location, from the environment. */
function s3ConfigFor(location: string): ReturnType<typeof s3Config> & object {
  const config = s3Config()!;
  const rest = location.slice("s3://".length);
  const slash = rest.indexOf("/");
  return {
    ...config,
    bucket: rest.slice(0, slash),
    prefix: rest.slice(slash + 1),
  };
}
