// The README's main command, `npx -y deno@2.9.6 task demo`, must work as typed
// on a machine that reaches only the npm registry: the task resolves @std the
// way scripts/std.ts decides (the offline mirror beside the checkout when there
// is one, JSR otherwise), not through a JSR_URL the user had to export.
import { after, before, describe, test } from "node:test";
import { assertEquals, assertMatch } from "@std/assert";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isDeno } from "./support/common.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-tasks-test-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs `deno task …` in the repository with JSR_URL removed. */
function denoTask(
  args: string[],
): Promise<{ code: number | null; output: string }> {
  const [command, prefix] = isDeno
    ? [process.execPath, []]
    : ["npx", ["-y", "deno@2.9.6"]];
  const env: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: "1",
    HUB_API_KEY: "",
  };
  delete env.JSR_URL;
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...prefix, "task", ...args], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => output += chunk);
    child.stderr.on("data", (chunk) => output += chunk);
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("deno tasks", () => {
  test("`deno task demo` runs as typed, without JSR_URL in the environment", async () => {
    const data = join(dir, "demo");
    const { code, output } = await denoTask([
      "demo",
      "--epochs",
      "2",
      "--dir",
      data,
    ]);
    assertEquals(code, 0, output);
    assertMatch(output, /2 of 2 stored on the HUB/);
    assertMatch(output, /sha256 [0-9a-f]{64}: match/);
  });
});
