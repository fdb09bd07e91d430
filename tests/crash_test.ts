/**
 * Kill -9 tests of the weights commit: a real HUB child process (on the
 * runtime running the tests) is stopped at a named point of the commit
 * (`HUB_TEST_CRASH_AT`, see `src/server/storage/crash_point.ts`), killed
 * with SIGKILL there, and restarted on the same data directory. After every
 * restart the document, its ETag/`x-checksum-sha256` and the served bytes
 * must describe the same upload, that upload must be the previous one or
 * one of the killed round's, never older than an acknowledged one, and no
 * unreferenced blob may be left once the store opened.
 *
 * Each round races 4 uploaders on one model. `HUB_CRASH_ROUNDS` sets the
 * rounds per point (default 20).
 *
 * @module
 */

import { describe, test } from "node:test";
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { CRASH_POINTS } from "../src/server/storage/crash_point.ts";
import { createModelPayload } from "../src/session/session.ts";
import { isDeno, waitUntil } from "./support/common.ts";

const ROUNDS = Number(process.env.HUB_CRASH_ROUNDS ?? "20");
const UPLOADERS = 4;
const CLI = fileURLToPath(new URL("../src/cli/mod.ts", import.meta.url));

/** Random bytes of a random size from `min` to `min + spread`. */
function randomData(min: number, spread: number): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(min + Math.floor(Math.random() * spread));
  randomFillSync(data);
  return data;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

interface Server {
  url: string;
  child: ChildProcess;
  exited: Promise<void>;
}

/** Starts `hub-session serve` on the current runtime; resolves once it listens. */
async function startServer(
  dataDir: string,
  env: Record<string, string>,
): Promise<Server> {
  const argv = isDeno
    ? ["run", "-A", CLI, "serve", "--port", "0", "--data", dataDir]
    : [CLI, "serve", "--port", "0", "--data", dataDir];
  const child = spawn(process.execPath, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<void>((resolve) =>
    child.on("exit", () => resolve())
  );
  let stderr = "";
  child.stderr!.on("data", (chunk) => stderr += chunk);
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    const onData = (chunk: Buffer): void => {
      out += chunk;
      const match = /HUB listening on (http:\/\/\S+)/.exec(out);
      if (match !== null) {
        child.stdout!.off("data", onData);
        child.stdout!.resume();
        resolve(match[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.on(
      "exit",
      (code) =>
        reject(
          new Error(`The HUB exited with ${code} before listening: ${stderr}`),
        ),
    );
  });
  return { url, child, exited };
}

async function kill(server: Server): Promise<void> {
  server.child.kill("SIGKILL");
  await server.exited;
}

async function createModel(url: string): Promise<string> {
  const response = await fetch(`${url}/v1/models`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(
      createModelPayload("yolov8n.pt", { data: "coco8.yaml", epochs: 3 }),
    ),
  });
  const body = await response.json() as { data: { id: string } };
  assertEquals(response.status, 200);
  return body.data.id;
}

/** Uploads `data` as `last.pt` with its sha256; resolves to whether it was acknowledged. */
async function upload(
  url: string,
  id: string,
  data: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  const form = new FormData();
  form.set("epoch", "1");
  form.set("type", "epoch");
  form.set("isBest", "False");
  form.set("sha256", sha256(data));
  form.set("last.pt", new Blob([data]), "last.pt");
  try {
    const response = await fetch(`${url}/v1/models/${id}/upload`, {
      method: "POST",
      body: form,
    });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false; // the connection died with the server
  }
}

/** What the restarted server says and serves. */
async function observe(url: string, id: string): Promise<{
  servedSha: string;
  headerSha: string | null;
  etag: string | null;
}> {
  const doc = await (await fetch(`${url}/v1/models/${id}`)).json() as {
    data: { has_last_weights?: boolean };
  };
  assert(doc.data.has_last_weights === true, "the document has weights");
  const served = await fetch(`${url}/v1/models/${id}/files/last.pt`);
  assertEquals(served.status, 200);
  const bytes = new Uint8Array(await served.arrayBuffer());
  return {
    servedSha: sha256(bytes),
    headerSha: served.headers.get("x-checksum-sha256"),
    etag: served.headers.get("etag"),
  };
}

describe("weights commit under SIGKILL", () => {
  for (const point of CRASH_POINTS) {
    test(`a kill at "${point}" leaves the document and the served file on the same acknowledged upload (${ROUNDS} rounds, ${UPLOADERS} uploaders)`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "hub-crash-"));
      const dataDir = join(dir, "hub");
      const marker = join(dir, "marker");
      let server: Server | undefined;
      try {
        server = await startServer(dataDir, {});
        const id = await createModel(server.url);
        let previous = randomData(1000, 50_000);
        assert(await upload(server.url, id, previous), "the first upload");
        await kill(server);
        let landed = 0;
        let datas: Uint8Array<ArrayBuffer>[] = [];
        let acked: boolean[] = [];
        /** Checks the restarted server against the killed round. */
        const check = async (url: string): Promise<void> => {
          const seen = await observe(url, id);
          // The bytes served are the ones the document's headers describe.
          assertEquals(seen.headerSha, seen.servedSha);
          assertEquals(seen.etag, `"${seen.servedSha}"`);
          const candidates = [sha256(previous), ...datas.map(sha256)];
          const index = candidates.indexOf(seen.servedSha);
          assert(
            index !== -1,
            "the served file is the previous upload or one of the round's",
          );
          if (acked.some((a) => a)) {
            assertNotEquals(
              index,
              0,
              "an acknowledged upload replaced the previous one",
            );
          }
          // The store opened: only the served blob is left.
          assertEquals(await readdir(join(dataDir, "weights", id)), [
            seen.servedSha,
          ]);
          assertEquals(await readdir(join(dataDir, "weights", ".partial")), []);
          if (index > 0) {
            landed++;
            previous = datas[index - 1]!;
          }
        };
        for (let round = 0; round < ROUNDS; round++) {
          await rm(marker, { force: true });
          // The restarted server checks the previous round, then is killed.
          server = await startServer(dataDir, {
            HUB_TEST_CRASH_AT: point,
            HUB_TEST_CRASH_MARKER: marker,
          });
          await check(server.url);
          datas = Array.from(
            { length: UPLOADERS },
            () => randomData(1000, 200_000),
          );
          acked = Array(UPLOADERS).fill(false);
          const uploads = datas.map(async (data, i) => {
            acked[i] = await upload(server!.url, id, data);
          });
          await waitUntil(
            () => existsSync(marker),
            `the HUB stops at "${point}"`,
            60_000,
          );
          await kill(server);
          server = undefined;
          await Promise.all(uploads);
        }
        server = await startServer(dataDir, {});
        await check(server.url);
        // The kill points before the document write never land an upload;
        // those after it always do.
        const before = CRASH_POINTS.indexOf(point) <
          CRASH_POINTS.indexOf("document-renamed");
        assertEquals(landed, before ? 0 : ROUNDS);
      } finally {
        if (server !== undefined) await kill(server);
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});
