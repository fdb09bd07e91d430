/**
 * Helpers shared by the test files: a logger that captures lines, a child
 * process runner for the current runtime, and a local HUB in a temp dir.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { HUBClient } from "../../src/transport/client.ts";
import { serveHub } from "../../src/server/mod.ts";
import type { HubServer } from "../../src/server/mod.ts";
import type { Logger } from "../../src/protocol/types.ts";

/** A logger that keeps every line as `"<level> <message>"`. */
export interface CapturedLogger extends Logger {
  /** The lines logged so far. */
  lines: string[];
}

/** Returns a logger that captures its lines. */
export function captureLogger(): CapturedLogger {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
    error: (m) => lines.push(`error ${m}`),
  };
}

/** A logger that drops every line. */
export const quietLogger: Logger = { info() {}, warn() {}, error() {} };

/** Whether the tests run under Deno (else Bun). */
export const isDeno: boolean =
  (globalThis as { Deno?: unknown }).Deno !== undefined;

/** What a child process did. */
export interface ScriptResult {
  /** Exit code, `null` when killed by a signal. */
  code: number | null;
  /** Whether the runner killed it after the timeout. */
  killed: boolean;
  /** Its standard output. */
  stdout: string;
  /** Its standard error. */
  stderr: string;
}

/**
 * Runs a TypeScript file as a child process of the current runtime (Deno:
 * `deno run -A`; Bun: `bun file`), killing it after `timeout` ms.
 */
export function runScript(
  file: string,
  args: string[] = [],
  { timeout = 20_000 }: { timeout?: number } = {},
): Promise<ScriptResult> {
  const argv = isDeno ? ["run", "-A", file, ...args] : [file, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let killed = false;
    child.stdout.on("data", (chunk) => stdout += chunk);
    child.stderr.on("data", (chunk) => stderr += chunk);
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, timeout);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, killed, stdout, stderr });
    });
  });
}

/** A local HUB on loopback with its data in a temp dir. */
export interface TestHub {
  /** The temp dir (the HUB's data is in `<dir>/hub`). */
  dir: string;
  /** The running server. */
  hub: HubServer;
  /** A client without key for that server. */
  client: HUBClient;
  /** Stops the server and removes the temp dir. */
  close(): Promise<void>;
}

/** Starts a local HUB on a free port with its data in a new temp dir. */
export async function startTestHub(prefix = "hub-test-"): Promise<TestHub> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const hub = await serveHub({ port: 0, dataDir: join(dir, "hub") });
  const client = new HUBClient({ apiRoot: hub.url, logger: quietLogger });
  return {
    dir,
    hub,
    client,
    async close() {
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `tests/fixtures/<name>` as a child of the current runtime; rejects when
 * it fails (a kill after the timeout is reported as `killed`, not thrown).
 */
export async function runFixture(
  name: string,
  args: string[] = [],
): Promise<ScriptResult> {
  const file = fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
  const result = await runScript(file, args);
  if (result.code !== 0 && !result.killed) {
    throw new Error(`${name} exited with ${result.code}: ${result.stderr}`);
  }
  return result;
}

/**
 * Polls `condition` every 5 ms until it holds; fails after `timeout` ms (a
 * generous bound for a loaded machine, not a speed expectation).
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeout = 15_000,
): Promise<void> {
  const deadline = performance.now() + timeout;
  while (!(await condition())) {
    if (performance.now() > deadline) {
      throw new Error(`Timed out waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
