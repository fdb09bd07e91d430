/**
 * Regression tests for defects found in review of the local HUB: one model
 * id rule for client and server, the store's listing of soft-deleted models,
 * documents cited by the sources, and the upload limit default.
 *
 * @module
 */

import { describe, test } from "node:test";
import { assert, assertEquals, assertFalse } from "@std/assert";
import { mkdtemp, readdir, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { isModelId } from "../mod.ts";
import { serveHub } from "../src/server/mod.ts";
import { DEFAULT_MAX_UPLOAD_BYTES } from "../src/server/limits.ts";
import { HubStore } from "../src/server/store.ts";
import { CREATE_PAYLOAD as PAYLOAD } from "./support/server.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...await sourceFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

describe("review defects of the local HUB", () => {
  test("the server serves no model whose id the client would refuse", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-review-"));
    try {
      let id: string;
      {
        await using server = await serveHub({ dataDir });
        const created = await fetch(`${server.url}/v1/models`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(PAYLOAD),
        });
        id = (await created.json()).data.id;
        assert(isModelId(id), `the server created the id ${id}`);
      }
      // A directory name the store accepted before (1-64 letters or digits)
      // but that the client refuses as a model id.
      const short = "short0";
      assertFalse(isModelId(short));
      await rename(
        join(dataDir, "models", id),
        join(dataDir, "models", short),
      );
      await using server = await serveHub({ dataDir });
      const reply = await fetch(`${server.url}/v1/models/${short}`);
      assertEquals(reply.status, 404);
      assertEquals((await reply.json()).success, false);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("store.ids() and get() hide soft-deleted models, which get() with includeDeleted still reads", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "hub-review-"));
    try {
      const store = await HubStore.openFiles(dataDir);
      const record = await store.create({
        name: "m",
        dataset: "",
        architecture: "yolov8n",
        parent: undefined,
        config: { ...PAYLOAD.config },
      }, Date.now());
      assert(await store.delete(record.id, false, Date.now()));
      assertEquals(await store.ids(), []);
      assertEquals(await store.get(record.id), undefined);
      assertEquals(
        (await store.models.get(record.id, { includeDeleted: true }))?.id,
        record.id,
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("every document the sources cite is in the repository", async () => {
    const missing: string[] = [];
    for (const file of await sourceFiles(join(ROOT, "src"))) {
      const text = await readFile(file, "utf8");
      for (const [, name] of text.matchAll(/`([\w./-]+\.md)`/g)) {
        const candidates = [join(ROOT, name!), join(dirname(file), name!)];
        let found = false;
        for (const path of candidates) {
          found ||= await readFile(path).then(() => true, () => false);
        }
        if (!found) missing.push(`${relative(ROOT, file)} cites ${name}`);
      }
    }
    assertEquals(missing, []);
  });

  test("the upload limit default is written once, in limits.ts", async () => {
    assertEquals(DEFAULT_MAX_UPLOAD_BYTES, 2 * 1024 * 1024 * 1024);
    const spelled =
      /2\s*\*\s*1024\s*\*\s*(?:1024\s*\*\s*1024|MIB|MiB)|2147483648|2\s*\*\s*GIB/;
    const writers: string[] = [];
    for (const file of await sourceFiles(join(ROOT, "src", "server"))) {
      if (file.endsWith("limits.ts")) continue;
      const code = (await readFile(file, "utf8"))
        .split("\n")
        .filter((line) => !/^\s*(\*|\/\/)/.test(line))
        .join("\n");
      if (spelled.test(code)) writers.push(relative(ROOT, file));
    }
    assertEquals(writers, []);
  });
});
