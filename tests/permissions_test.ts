// The library never triggers a Deno permission prompt: a user script run
// with exactly the README's flags, under a pseudo-terminal (where a prompt
// would wait for an answer forever), finishes by itself.
import { after, before, test } from "node:test";
import { assert, assertEquals, assertMatch, assertNotMatch } from "@std/assert";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isDeno, startTestHub, type TestHub } from "./support/common.ts";

const hasScript = spawnSync("script", ["--version"]).status === 0;
const skip = !hasScript
  ? "SKIPPED LOUDLY: `script` (util-linux) is missing, install util-linux"
  : false;
if (typeof skip === "string") console.warn(skip);
// The script always runs on Deno (prompts are Deno's); under `bun test` the
// pinned Deno is started through npx.
const deno = isDeno ? [process.execPath] : ["npx", "-y", "deno@2.9.6"];

let testHub: TestHub;

before(async () => {
  testHub = await startTestHub("hub-permissions-");
});

after(async () => {
  await testHub.close();
});

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

test(
  "a user script with --allow-net --allow-read --allow-write --allow-env never stops at a permission prompt",
  {
    skip,
  },
  async () => {
    const work = await mkdtemp(join(testHub.dir, "user-"));
    const script = fileURLToPath(
      new URL("./fixtures/train_script.ts", import.meta.url),
    );
    const command = [
      ...deno,
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      script,
      testHub.hub.url,
      work,
    ].map(shellQuote).join(" ");
    // HOME is a fresh directory: the journal and the settings lookup go there.
    const env: Record<string, string | undefined> = {
      ...process.env,
      HOME: work,
      NO_COLOR: "1",
    };
    delete env.XDG_CACHE_HOME;
    delete env.HUB_API_KEY;
    const child = spawn("script", ["-qec", command, "/dev/null"], {
      env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => output += chunk);
    child.stderr.on("data", (chunk) => output += chunk);
    // A prompt waits for an answer on the terminal: none ever comes.
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, 60_000);
    const code = await new Promise<number | null>((resolve) =>
      child.on("close", resolve)
    );
    clearTimeout(timer);
    child.stdin.end();
    assertNotMatch(output, /requests? \w+ access|Allow\?|\[y\/n/i, output);
    assert(!killed, `the script hung:\n${output}`);
    assertEquals(code, 0, output);
    assertMatch(output, /DONE pending=0/);
  },
);
