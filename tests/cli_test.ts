import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { main } from "../src/cli/mod.ts";
import type { CliOptions } from "../src/cli/mod.ts";
import { HUBClient } from "../src/transport/client.ts";
import { serveHub } from "../src/server/mod.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { startPlatformHub, TEST_PLATFORM_KEY } from "./support/platform_hub.ts";
import type { PlatformHub } from "./support/platform_hub.ts";

type Hub = Awaited<ReturnType<typeof serveHub>>;

let dir: string;
let hub: Hub;
let client: HUBClient;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-cli-test-"));
  hub = await serveHub({ port: 0, dataDir: join(dir, "hub") });
  client = new HUBClient({ apiRoot: hub.url });
});

after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  out: string[];
  err: string[];
}

const SECRET = "k3y-that-must-never-be-printed-0123456789";

/** Runs the CLI in-process with captured output and an empty environment. */
async function run(args: string[], extra: CliOptions = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, {
    write: (line) => out.push(line),
    writeError: (line) => err.push(line),
    env: (name) =>
      name === "YOLO_CONFIG_DIR" ? join(dir, "no-config") : undefined,
    ...extra,
  });
  return { code, out, err };
}

function assertOneLineError(result: Run, pattern: RegExp): void {
  assertEquals(result.err.length, 1, result.err.join("\n"));
  const line = result.err[0]!;
  assert(line.startsWith("error: "), line);
  assert(!line.includes("\n"), line);
  assert(!/\bat .*:\d+:\d+/.test(line), `stack trace in: ${line}`);
  assertMatch(line, pattern);
}

async function newModel(): Promise<string> {
  return await client.createModel({
    config: {
      batchSize: 8,
      epochs: 3,
      imageSize: 2,
      patience: 3,
      device: "",
      cache: "",
    },
    dataset: { name: "two-spirals" },
    lineage: { architecture: { name: "mlp" }, parent: {} },
    meta: { name: "mlp.yaml" },
  });
}

const isDeno = (globalThis as { Deno?: unknown }).Deno !== undefined;
const cliFile = fileURLToPath(new URL("../src/cli/mod.ts", import.meta.url));

describe("hub-session CLI", () => {
  test("--help lists every command and exits 0", async () => {
    const result = await run(["--help"]);
    assertEquals(result.code, 0);
    const help = result.out.join("\n");
    for (const command of ["serve", "demo", "sync", "upload", "model"]) {
      assertMatch(help, new RegExp(`^  ${command}\\b`, "m"));
    }
  });

  test("every command has its own --help", async () => {
    for (const command of ["serve", "demo", "sync", "upload", "model"]) {
      const result = await run([command, "--help"]);
      assertEquals(result.code, 0, command);
      assert(result.out[0]!.startsWith(`hub-session ${command}`), command);
      assertEquals(result.err, []);
    }
  });

  test("wrong usage exits 2 with a one-line error", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["frobnicate"], /Unknown command "frobnicate"/],
      [["model", "--bogus"], /Unknown option '--bogus'/],
      [["model"], /takes MODEL_ID, got nothing/],
      [["upload", "onlyone"], /takes MODEL_ID FILE/],
      [["demo", "--epochs", "zero"], /--epochs must be an integer/],
      [["upload", "a", "b", "--map", "high"], /--map must be a number/],
      [["serve", "--port", "70000"], /--port must be an integer/],
      [["demo", "--key", SECRET], /--key and --api-key-file need --hub/],
    ];
    for (const [args, pattern] of cases) {
      const result = await run(args);
      assertEquals(result.code, 2, args.join(" "));
      assertOneLineError(result, pattern);
      assert(!result.err[0]!.includes(SECRET));
    }
    const bare = await run([]);
    assertEquals(bare.code, 2);
    assertMatch(bare.err.join("\n"), /hub-session <command>/);
  });

  test("model prints the document as JSON", async () => {
    const id = await newModel();
    const result = await run(["model", id, "--hub", hub.url]);
    assertEquals(result.code, 0, result.err.join("\n"));
    const doc = JSON.parse(result.out.join("\n"));
    assertEquals(doc.id, id);
    assertEquals(doc.data, "two-spirals");
  });

  test("a bad model id exits 1 with a one-line error", async () => {
    const malformed = await run(["model", "not-an-id", "--hub", hub.url]);
    assertEquals(malformed.code, 1);
    assertOneLineError(malformed, /not 20 letters and digits/);
    const missing = await run([
      "model",
      "AAAAAAAAAAAAAAAAAAAA",
      "--hub",
      hub.url,
    ]);
    assertEquals(missing.code, 1);
    assertOneLineError(missing, /404|not find|does not exist/i);
    assertEquals(missing.out, []);
  });

  test("an API key is never printed, even in an error", async () => {
    const result = await run([
      "model",
      "AAAAAAAAAAAAAAAAAAAA",
      "--hub",
      "http://hub.example.com",
      `--key=${SECRET}`,
    ]);
    assertEquals(result.code, 1);
    // The warning about a key on the command line, then the error.
    assertEquals(result.err.length, 2);
    assertMatch(result.err[0]!, /visible to every local user/);
    assert(!result.err.join("\n").includes(SECRET), result.err.join("\n"));
    assert(!result.out.join("\n").includes(SECRET));
  });

  test("upload sends the final weights and prints the sha256 the HUB stored", async () => {
    const id = await newModel();
    const file = join(dir, "upload-best.pt");
    const bytes = new Uint8Array(100_000).map((_, i) => (i * 31) & 0xff);
    await writeFile(file, bytes);
    const sha = createHash("sha256").update(bytes).digest("hex");
    const result = await run([
      "upload",
      id,
      file,
      "--hub",
      hub.url,
      "--map",
      "0.75",
      "--epoch",
      "2",
    ]);
    assertEquals(result.code, 0, result.err.join("\n"));
    assert(result.out.some((line) => line.includes(`sha256 ${sha}`)));
    const doc = await client.getModel(id);
    const best = (doc.checkpoints as { best: Record<string, unknown> }).best;
    assertEquals(best.sha256, sha);
    assertEquals(best.epoch, 2);
    assertEquals(best.map, 0.75);
  });

  test("upload of a missing file exits 1 before any request", async () => {
    const result = await run([
      "upload",
      "AAAAAAAAAAAAAAAAAAAA",
      join(dir, "missing.pt"),
      "--hub",
      "http://127.0.0.1:9",
    ]);
    assertEquals(result.code, 1);
    assertOneLineError(result, /does not exist/);
  });

  test("sync delivers the metrics an offline session left in the journal", async () => {
    const id = await newModel();
    const journal = join(dir, "journal");
    const session = await HUBTrainingSession.create(id, {
      apiRoot: hub.url,
      webRoot: hub.url,
      settingsFile: false,
      env: () => undefined,
      logger: "quiet",
      journal,
      offline: true,
    });
    session.queueMetrics(0, { "train/loss": 0.7 });
    session.queueMetrics(1, { "train/loss": 0.6 });
    await session.close();
    assertEquals(await client.listMetrics(id), []);
    const result = await run([
      "sync",
      "--hub",
      hub.url,
      "--journal",
      journal,
      "--model",
      id,
    ]);
    assertEquals(result.code, 0, result.err.join("\n"));
    assert(
      result.out.some((line) =>
        line.startsWith(
          `model ${id}: found 2 epoch(s) and no weights; delivered 2 epoch(s)`,
        )
      ),
      result.out.join("\n"),
    );
    const stored = await client.listMetrics(id);
    assertEquals(stored.map((s) => s.epoch), [0, 1]);
    const again = await run(["sync", "--hub", hub.url, "--journal", journal]);
    assertEquals(again.code, 0);
    // Asked for that model again: nothing is left for it, which is an error.
    const model = await run([
      "sync",
      "--hub",
      hub.url,
      "--journal",
      journal,
      "--model",
      id,
    ]);
    assertEquals(model.code, 1);
    assertMatch(model.err.join("\n"), /holds nothing for model/);
  });

  test("sync --platform-url (or $ULTRALYTICS_PLATFORM_URL) delivers a Platform run's journal with $ULTRALYTICS_API_KEY", async () => {
    const journal = join(dir, "platform-journal");
    const first = await startPlatformHub();
    const port = Number(new URL(first.url).port);
    let again: PlatformHub | undefined;
    const envOf = (vars: Record<string, string>) => (name: string) =>
      name === "YOLO_CONFIG_DIR" ? join(dir, "no-config") : vars[name];
    try {
      // Two runs whose last epochs the HUB never acknowledged (it went down).
      const ids: string[] = [];
      const sessions = [];
      for (const name of ["cli-flag", "cli-env"]) {
        const session = await HUBTrainingSession.create(
          `ul://ada/road-signs/${name}`,
          {
            platformUrl: first.url,
            apiKey: TEST_PLATFORM_KEY,
            settingsFile: false,
            env: () => undefined,
            logger: "quiet",
            journal,
            rateLimits: { metrics: 0 },
            budgets: { metrics: { maxAttempts: 1 } },
          },
        );
        ids.push(await session.createModel({ data: "coco8.yaml", epochs: 3 }));
        session.queueMetrics(0, { "train/loss": 0.9 });
        await session.flush();
        sessions.push(session);
      }
      await first.hub.close();
      for (const session of sessions) {
        session.queueMetrics(1, { "train/loss": 0.8 });
        session.queueMetrics(2, { "train/loss": 0.7 });
        assertEquals((await session.close({ timeout: 2_000 })).pendingEpochs, [
          1,
          2,
        ]);
      }
      again = await startPlatformHub({ dir: first.dir, port });
      const stored = async (id: string) =>
        ((await again!.get(`/v1/models/${id}/metrics`)) as unknown as Array<
          { epoch: number }
        >).map((m) => m.epoch).sort();

      // Without a key: a clear error naming the variable, nothing sent.
      const noKey = await run(
        ["sync", "--platform-url", again.url, "--journal", journal],
      );
      assertEquals(noKey.code, 1);
      assertOneLineError(noKey, /ULTRALYTICS_API_KEY/);
      assertEquals(await stored(ids[0]!), [0]);

      const flag = await run([
        "sync",
        "--platform-url",
        again.url,
        "--journal",
        journal,
        "--model",
        ids[0]!,
      ], { env: envOf({ ULTRALYTICS_API_KEY: TEST_PLATFORM_KEY }) });
      assertEquals(flag.code, 0, flag.err.join("\n"));
      assert(
        flag.out.some((line) =>
          line.startsWith(
            `model ${
              ids[0]
            }: found 2 epoch(s) and no weights; delivered 2 epoch(s)`,
          )
        ),
        flag.out.join("\n"),
      );
      assertEquals(await stored(ids[0]!), [0, 1, 2]);
      assertEquals(await stored(ids[1]!), [0]);

      // The environment's Platform URL is the default without --hub.
      const env = await run(["sync", "--journal", journal], {
        env: envOf({
          ULTRALYTICS_API_KEY: TEST_PLATFORM_KEY,
          ULTRALYTICS_PLATFORM_URL: again.url,
        }),
      });
      assertEquals(env.code, 0, env.err.join("\n"));
      assertEquals(await stored(ids[1]!), [0, 1, 2]);
      for (const line of [...flag.out, ...flag.err, ...env.out, ...env.err]) {
        assert(!line.includes(TEST_PLATFORM_KEY), line);
      }

      const both = await run([
        "sync",
        "--platform-url",
        again.url,
        "--hub",
        hub.url,
      ]);
      assertEquals(both.code, 2);
      const help = await run(["sync", "--help"]);
      assertMatch(help.out.join("\n"), /--platform-url URL/);
      assertMatch(help.out.join("\n"), /ULTRALYTICS_API_KEY/);
    } finally {
      await again?.close();
      await rm(first.dir, { recursive: true, force: true });
    }
  });

  test("serve runs the local HUB until stopped", async () => {
    const controller = new AbortController();
    const lines: string[] = [];
    const { promise: listening, resolve: onListening } = Promise
      .withResolvers<string>();
    const running = main(["serve", "--port", "0", "--data", join(dir, "s")], {
      signal: controller.signal,
      write: (line) => {
        lines.push(line);
        const url = /^HUB listening on (\S+)$/.exec(line)?.[1];
        if (url !== undefined) onListening(url);
      },
      writeError: (line) => lines.push(line),
    });
    const url = await listening;
    const reply = await fetch(`${url}/v1/models/AAAAAAAAAAAAAAAAAAAA`);
    assertEquals(reply.status, 404);
    await reply.body?.cancel();
    controller.abort();
    assertEquals(await running, 0);
    assertEquals(lines.at(-1), "HUB stopped");
    await assertRejects(() => fetch(url));
  });

  test("src/cli/mod.ts runs as a script and exits 0 on --help", async () => {
    const args = isDeno
      ? ["run", "-A", cliFile, "--help"]
      : [cliFile, "--help"];
    const result = await new Promise<{ code: number | null; stdout: string }>(
      (resolve, reject) => {
        const child = spawn(process.execPath, args, {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        child.stdout.on("data", (chunk) => stdout += chunk);
        child.stderr.on("data", () => {});
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.on("error", (error) => {
          clearTimeout(timer);
          reject(error);
        });
        child.on("close", (code) => {
          clearTimeout(timer);
          resolve({ code, stdout });
        });
      },
    );
    assertEquals(result.code, 0);
    assertMatch(result.stdout, /^hub-session <command> \[options\]/);
  });
});
