// API keys never sit on a command line: `serve` and `demo` read HUB_API_KEY
// or --api-key-file, a key passed as an argument prints a warning that says
// why, and neither `ps` nor `deno task`'s echo shows the key.
import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { main } from "../src/cli/mod.ts";
import { isDeno } from "./support/common.ts";

const SECRET = "k3yFromTheEnvironment0123456789abcdefghij";
const ROOT = fileURLToPath(new URL("..", import.meta.url));
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hub-keys-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Every process command line on the machine that contains `needle`. */
function commandLinesWith(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const line = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll(
        "\0",
        " ",
      );
      if (line.includes(needle)) found.push(`${pid}: ${line}`);
    } catch {
      // the process ended meanwhile
    }
  }
  return found;
}

/** Starts `serve` as a user would; resolves once it listens. */
function startServe(
  env: Record<string, string | undefined>,
  args: string[],
): Promise<{ url: string; output: () => string; stop: () => Promise<void> }> {
  // On Deno through the README's task (its echo is checked); on Bun the CLI.
  const argv = isDeno
    ? ["task", "hub", ...args]
    : [join(ROOT, "src/cli/mod.ts"), "serve", ...args];
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const onData = (chunk: Buffer): void => {
    output += chunk;
    const url = /HUB listening on (\S+)/.exec(output)?.[1];
    // The line after the URL says which keys are accepted: wait for it too.
    if (url !== undefined && /HUB accepts/.test(output)) resolve(url);
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  child.on("exit", () => reject(new Error(`serve exited:\n${output}`)));
  const timer = setTimeout(
    () => reject(new Error(`serve did not start:\n${output}`)),
    60_000,
  );
  return promise.then((url) => {
    clearTimeout(timer);
    return {
      url,
      output: () => output,
      stop: async () => {
        const exited = new Promise((r) => child.on("close", r));
        process.kill(-child.pid!, "SIGTERM");
        await exited;
      },
    };
  });
}

describe("keys for serve", () => {
  test("serve takes its key from HUB_API_KEY: not in ps, not in the task echo, and enforced", async () => {
    const server = await startServe({ HUB_API_KEY: SECRET }, [
      "--port",
      "0",
      "--data",
      join(dir, "env-data"),
    ]);
    try {
      assertEquals(commandLinesWith(SECRET), []);
      assert(!server.output().includes(SECRET), server.output());
      assertMatch(server.output(), /HUB accepts 1 API key/);
      const refused = await fetch(
        `${server.url}/v1/models/AAAAAAAAAAAAAAAAAAAA`,
      );
      await refused.body?.cancel();
      assertEquals(refused.status, 401);
      const allowed = await fetch(
        `${server.url}/v1/models/AAAAAAAAAAAAAAAAAAAA`,
        { headers: { "x-api-key": SECRET } },
      );
      await allowed.body?.cancel();
      assertEquals(allowed.status, 404);
    } finally {
      await server.stop();
    }
  });

  test("serve with HUB_API_KEY unset accepts every request instead of failing", async () => {
    const server = await startServe({ HUB_API_KEY: undefined }, [
      "--port",
      "0",
      "--data",
      join(dir, "open-data"),
    ]);
    try {
      assertMatch(server.output(), /HUB accepts every request/);
    } finally {
      await server.stop();
    }
  });

  test("serve reads --api-key-file, and warns when a key is passed as an argument", async () => {
    const keyFile = join(dir, "keys.txt");
    await writeFile(keyFile, `# one key per line\n${SECRET}\n`);
    for (
      const [args, warned] of [
        [["--api-key-file", keyFile], false],
        [["--api-key", SECRET], true],
      ] as const
    ) {
      const controller = new AbortController();
      const out: string[] = [];
      const err: string[] = [];
      const { promise: listening, resolve } = Promise.withResolvers<void>();
      const running = main(
        ["serve", "--port", "0", "--data", join(dir, "file-data"), ...args],
        {
          signal: controller.signal,
          env: () => undefined,
          write: (line) => {
            out.push(line);
            if (line.startsWith("HUB listening on")) resolve();
          },
          writeError: (line) => err.push(line),
        },
      );
      await listening;
      controller.abort();
      assertEquals(await running, 0);
      assert(out.includes("HUB accepts 1 API key"), out.join("\n"));
      assertEquals(
        err.some((l) => /visible to every local user \(ps/.test(l)),
        warned,
        err.join("\n"),
      );
      assert(![...out, ...err].join("\n").includes(SECRET));
    }
  });
});

describe("keys for demo", () => {
  test("demo --key warns that the key is visible, and never prints it", async () => {
    const err: string[] = [];
    const out: string[] = [];
    const code = await main([
      "demo",
      "--hub",
      "http://127.0.0.1:9",
      "--key",
      SECRET,
      "--epochs",
      "1",
      "--dir",
      join(dir, "demo"),
    ], {
      env: () => undefined,
      write: (line) => out.push(line),
      writeError: (line) => err.push(line),
    });
    assertEquals(code, 1);
    assertMatch(err[0] ?? "", /visible to every local user/);
    assert(![...out, ...err].join("\n").includes(SECRET));
  });
});
