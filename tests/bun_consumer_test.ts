// A Bun user's view of the package: a throwaway Bun project installs it by
// file path (`bun install` of a `file:` dependency, which copies it into
// node_modules as an installed package would be) and runs a training session
// against the local HUB with `bun`.
import { after, before, describe, test } from "node:test";
import { assert, assertEquals } from "@std/assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { HUBClient } from "../src/transport/client.ts";
import { serveHub } from "../src/server/mod.ts";

type Hub = Awaited<ReturnType<typeof serveHub>>;

const isBun = (globalThis as { Bun?: unknown }).Bun !== undefined;
const root = fileURLToPath(new URL("..", import.meta.url));

let dir: string;
let hub: Hub;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-bun-consumer-"));
  hub = await serveHub({ port: 0, dataDir: join(dir, "hub") });
});

after(async () => {
  await hub.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs bun (this one under `bun test`, else the pinned one through npx). */
function bun(
  args: string[],
  cwd: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [command, prefix] = isBun
    ? [process.execPath, []]
    : ["npx", ["-y", "bun@1.4.5"]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...prefix, ...args], {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        BUN_INSTALL_CACHE_DIR: join(dir, "bun-cache"),
        HUB_API_KEY: "",
        ULTRALYTICS_HUB_API: "",
        NO_COLOR: "1",
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => stdout += chunk);
    child.stderr.on("data", (chunk) => stderr += chunk);
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Lays the package out as it would arrive from a registry: the published
 * files plus a package.json generated from deno.json (name, version,
 * exports), as JSR's npm layer does.
 */
async function packageCopy(target: string): Promise<string> {
  const manifest = JSON.parse(
    await readFile(join(root, "deno.json"), "utf8"),
  ) as { name: string; version: string; license: string; exports: object };
  await mkdir(target, { recursive: true });
  for (const entry of ["mod.ts", "src", "deno.json", "LICENSE", "README.md"]) {
    await cp(join(root, entry), join(target, entry), { recursive: true });
  }
  await writeFile(
    join(target, "package.json"),
    JSON.stringify(
      {
        name: manifest.name,
        version: manifest.version,
        license: manifest.license,
        type: "module",
        exports: manifest.exports,
      },
      null,
      2,
    ),
  );
  return manifest.name;
}

const CONSUMER =
  `import { HUBTrainingSession, VERSION } from "@seed/hub-session";
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";

const [apiRoot, weights] = process.argv.slice(2);
const session = await HUBTrainingSession.create("consumer.yaml", {
  apiRoot,
  webRoot: apiRoot,
  settingsFile: false,
  logger: "quiet",
  journal: false,
  rateLimits: { metrics: 60_000, ckpt: 0 },
});
const modelId = await session.createModel({ data: "bun-data", epochs: 3 });
for (let epoch = 0; epoch < 3; epoch++) {
  session.queueMetrics(epoch, { "train/loss": 1 / (epoch + 1) });
}
await writeFile(weights, "weights written by a Bun consumer");
const final = await session.uploadModel(2, weights, { final: true, map: 0.5 });
const report = await session.close();
console.log(JSON.stringify({
  bun: Bun.version,
  version: VERSION,
  resolved: import.meta.resolve("@seed/hub-session"),
  modelId,
  pendingEpochs: report.pendingEpochs,
  sha256: final.sha256,
}));
`;

describe("the package in a Bun project", () => {
  test("installs by file path and runs a session against the local HUB under bun", async () => {
    const name = await packageCopy(join(dir, "package"));
    const app = join(dir, "app");
    await mkdir(app);
    await writeFile(
      join(app, "package.json"),
      JSON.stringify({
        name: "bun-consumer",
        private: true,
        type: "module",
        dependencies: { [name]: `file:${join(dir, "package")}` },
      }),
    );
    await writeFile(join(app, "index.ts"), CONSUMER);

    const install = await bun(["install"], app);
    assertEquals(install.code, 0, install.stderr);

    const weights = join(dir, "best.pt");
    const result = await bun(["index.ts", hub.url, weights], app);
    assertEquals(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split("\n");
    const out = JSON.parse(lines.at(-1)!) as {
      bun: string;
      version: string;
      resolved: string;
      modelId: string;
      pendingEpochs: number[];
      sha256: string;
    };
    assertEquals(out.bun, "1.4.5");
    // Imported from the installed copy, not from the working tree.
    assert(
      fileURLToPath(out.resolved).startsWith(
        join(app, "node_modules", ...name.split("/")),
      ),
      out.resolved,
    );
    assertEquals(out.pendingEpochs, []);

    const client = new HUBClient({ apiRoot: hub.url });
    const stored = await client.listMetrics(out.modelId);
    assertEquals(stored.map((s) => s.epoch), [0, 1, 2]);
    const local = createHash("sha256").update(await readFile(weights)).digest(
      "hex",
    );
    assertEquals(out.sha256, local);
    const doc = await client.getModel(out.modelId);
    const best = (doc.checkpoints as { best: { sha256: string } }).best;
    assertEquals(best.sha256, local);
    assertEquals(doc.name, "consumer.yaml");
  });
});
