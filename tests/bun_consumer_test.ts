// A Bun user's view of the package: a throwaway Bun project installs it by
// file path (`bun install` of a `file:` dependency, which copies it into
// node_modules as an installed package would be), runs a training session
// against the local HUB with `bun`, and starts the HUB of the package's
// `./server` export (Hono) under Bun.
//
// Where the package's dependencies come from, as for a Bun user of JSR:
// - npm packages (`npm:` imports in deno.json, e.g. `hono`) are dependencies
//   of the generated package.json and come from the npm registry.
// - `@std/*` (`jsr:` imports): with JSR reachable (no offline mirror beside
//   the checkout) they are dependencies too, aliased the JSR way
//   (`"@std/async": "npm:@jsr/std__async@^1.5.0"`) with the `@jsr` scope in
//   the project's `.npmrc`, so `bun install` fetches them from JSR's npm
//   registry. With the offline mirror (../shared/jsr, see scripts/std.ts)
//   JSR cannot be reached: the package.json leaves them out and the project's
//   `node_modules/@std` is linked to the mirror (the same files as JSR's).
//
// What this checks in both cases: the published files install as a package;
// every `@std/*` package deno.json names resolves from the installed package,
// loads under Bun and has a version inside deno.json's range; `hono` resolves
// from the installed package; a session runs end to end; the `./server` HUB
// answers under Bun. What it cannot check, online or not: the build JSR
// makes for npm (transpiled .js and .d.ts with `@std/*` rewritten to
// `@jsr/std__*`), since the package here is its TypeScript source, nor that
// JSR accepts the package (`deno publish --dry-run` in `deno task check`
// covers that). Offline it also cannot check that `bun install` resolves the
// `@jsr` scope: it says so on stdout.
import { after, before, describe, test } from "node:test";
import { assert, assertEquals } from "@std/assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { HUBClient } from "../src/transport/client.ts";
import { serveHub } from "../src/server/mod.ts";
import { mirrorDir } from "../scripts/std.ts";

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

/** The package as laid out by {@linkcode packageCopy}. */
interface PackageCopy {
  name: string;
  /** `@std/<name>` -> the version range deno.json asks for. */
  std: Map<string, string>;
  /** npm package -> the version range deno.json asks for. */
  npm: Map<string, string>;
  /** Every `@std/...` module the published files import. */
  stdImports: string[];
}

/**
 * Lays the package out as it would arrive from a registry: the published
 * files plus a package.json generated from deno.json (name, version,
 * exports, dependencies), as JSR's npm layer does. `@std/*` are listed as
 * JSR npm aliases only when `withStd` (JSR reachable).
 */
async function packageCopy(
  target: string,
  withStd: boolean,
): Promise<PackageCopy> {
  const manifest = JSON.parse(
    await readFile(join(root, "deno.json"), "utf8"),
  ) as {
    name: string;
    version: string;
    license: string;
    exports: object;
    imports: Record<string, string>;
  };
  const std = new Map<string, string>();
  const npm = new Map<string, string>();
  for (const [name, target] of Object.entries(manifest.imports)) {
    const jsr = /^jsr:(@std\/[a-z-]+)@(.+)$/.exec(target);
    const npmTarget = /^npm:((?:@[^/@]+\/)?[^/@]+)@([^/]+)$/.exec(target);
    if (jsr !== null && name === jsr[1]) std.set(jsr[1]!, jsr[2]!);
    else if (npmTarget !== null && name === npmTarget[1]) {
      npm.set(npmTarget[1]!, npmTarget[2]!);
    }
  }
  const dependencies: Record<string, string> = Object.fromEntries(npm);
  if (withStd) {
    for (const [name, range] of std) {
      dependencies[name] = `npm:@jsr/${
        name.slice(1).replace("/", "__")
      }@${range}`;
    }
  }
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
        dependencies,
      },
      null,
      2,
    ),
  );
  const stdImports = new Set<string>();
  const files = await readdir(target, { recursive: true });
  for (const file of files.filter((f) => f.endsWith(".ts"))) {
    const text = await readFile(join(target, file), "utf8");
    for (
      const match of text.matchAll(/["'](@std\/[a-z-]+(?:\/[\w-]+)*)["']/g)
    ) {
      stdImports.add(match[1]!);
    }
  }
  return { name: manifest.name, std, npm, stdImports: [...stdImports].sort() };
}

const CONSUMER = `import {
  createModelPayload,
  HUBClient,
  HUBTrainingSession,
  VERSION,
} from "@seed/hub-session";
import { serveHub } from "@seed/hub-session/server";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [apiRoot, weights, wanted, imported] = process.argv.slice(2);
const packageDir = dirname(fileURLToPath(import.meta.resolve("@seed/hub-session")));

// Every @std package deno.json names, found from the installed package the
// way a bare import is (the nearest node_modules/<name> up the tree), and
// one of its entry points loaded.
const std = {};
for (const [name, range] of Object.entries(JSON.parse(wanted))) {
  let home;
  for (let dir = packageDir; home === undefined; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (await Bun.file(join(candidate, "package.json")).exists()) home = candidate;
    else if (dir === dirname(dir)) throw new Error("no " + name + " above " + packageDir);
  }
  const manifest = await Bun.file(join(home, "package.json")).json();
  const entries = Object.keys(manifest.exports ?? { ".": "" });
  const entry = entries.includes(".") ? name : name + entries[0].slice(1);
  const file = Bun.resolveSync(entry, packageDir);
  std[name] = {
    entry,
    file,
    exports: Object.keys(await import(file)).length,
    version: manifest.version,
    inRange: Bun.semver.satisfies(manifest.version, range),
  };
}
// Every @std module the package's own files import, loaded from the package.
const imports = {};
for (const specifier of JSON.parse(imported)) {
  const file = Bun.resolveSync(specifier, packageDir);
  imports[specifier] = { file, exports: Object.keys(await import(file)).length };
}
const hono = Bun.resolveSync("hono", packageDir);

// The package's own HUB (./server, on Hono) under Bun.
const own = await serveHub({ port: 0, dataDir: await mkdtemp(join(tmpdir(), "own-hub-")) });
const ownClient = new HUBClient({ apiRoot: own.url });
const ownId = await ownClient.createModel(createModelPayload("own.yaml", {}));
const ownName = (await ownClient.getModel(ownId)).name;
await own.close();

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
  std,
  imports,
  hono,
  ownName,
}));
`;

describe("the package in a Bun project", () => {
  test("installs by file path, finds its dependencies, and runs a session and the HUB under bun", async () => {
    const mirror = mirrorDir();
    const pkg = await packageCopy(join(dir, "package"), mirror === undefined);
    const app = join(dir, "app");
    await mkdir(app);
    await writeFile(
      join(app, "package.json"),
      JSON.stringify({
        name: "bun-consumer",
        private: true,
        type: "module",
        dependencies: { [pkg.name]: `file:${join(dir, "package")}` },
      }),
    );
    if (mirror === undefined) {
      // What a Bun user of JSR writes once: JSR's npm registry for @jsr/*.
      await writeFile(
        join(app, ".npmrc"),
        "@jsr:registry=https://npm.jsr.io\n",
      );
    }
    await writeFile(join(app, "index.ts"), CONSUMER);

    const install = await bun(["install"], app);
    assertEquals(install.code, 0, install.stderr);
    if (mirror !== undefined) {
      await symlink(
        join(mirror, "node_modules", "@std"),
        join(app, "node_modules", "@std"),
        "dir",
      );
      console.log(
        `bun consumer: @std linked from the offline mirror ${mirror}; ` +
          "installing @std from JSR's npm registry (@jsr scope) is not checked",
      );
    }

    const weights = join(dir, "best.pt");
    const result = await bun([
      "index.ts",
      hub.url,
      weights,
      JSON.stringify(Object.fromEntries(pkg.std)),
      JSON.stringify(pkg.stdImports),
    ], app);
    assertEquals(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split("\n");
    const out = JSON.parse(lines.at(-1)!) as {
      bun: string;
      version: string;
      resolved: string;
      modelId: string;
      pendingEpochs: number[];
      sha256: string;
      std: Record<
        string,
        {
          entry: string;
          file: string;
          exports: number;
          version: string;
          inRange: boolean;
        }
      >;
      imports: Record<string, { file: string; exports: number }>;
      hono: string;
      ownName: string;
    };
    assertEquals(out.bun, "1.4.5");
    // Imported from the installed copy, not from the working tree.
    assert(
      fileURLToPath(out.resolved).startsWith(
        join(app, "node_modules", ...pkg.name.split("/")),
      ),
      out.resolved,
    );
    assertEquals(out.pendingEpochs, []);

    // Each dependency comes from the consumer's node_modules (for @std: the
    // JSR install or the mirror link), never from this checkout.
    const installed = (file: string, name: string): boolean =>
      realpathSync(file).startsWith(
        realpathSync(join(app, "node_modules", ...name.split("/"))) + sep,
      );
    assert(pkg.std.size > 0, "deno.json names no @std package");
    assertEquals(Object.keys(out.std).sort(), [...pkg.std.keys()].sort());
    for (const [name, range] of pkg.std) {
      const found = out.std[name]!;
      assert(installed(found.file, name), `${name}: ${found.file}`);
      assert(found.exports > 0, `${found.entry} exports nothing`);
      assert(found.inRange, `${name} ${found.version} is not in ${range}`);
    }
    assertEquals(Object.keys(out.imports), pkg.stdImports);
    for (const [specifier, found] of Object.entries(out.imports)) {
      const name = specifier.split("/").slice(0, 2).join("/");
      assert(pkg.std.has(name), `${specifier} is not in deno.json's imports`);
      assert(installed(found.file, name), `${specifier}: ${found.file}`);
      assert(found.exports > 0, `${specifier} exports nothing`);
    }
    assert(pkg.npm.has("hono"), "deno.json names no hono");
    assert(installed(out.hono, "hono"), out.hono);
    assertEquals(out.ownName, "own.yaml");

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
