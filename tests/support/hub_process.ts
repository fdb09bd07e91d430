/**
 * Runs `hub-session serve` as a child process of the current runtime (Deno:
 * `deno run -A src/cli/mod.ts serve`; Bun: `bun src/cli/mod.ts serve`), for
 * tests that need several server processes or a SIGKILL.
 *
 * @module
 */

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isDeno } from "./common.ts";

/** A running server process. */
export interface HubProcess {
  /** Its base URL. */
  url: string;
  /** The child. */
  child: ChildProcess;
  /** What it printed on stdout and stderr so far. */
  output(): string;
  /** Sends a signal and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const CLI = fileURLToPath(new URL("../../src/cli/mod.ts", import.meta.url));

/**
 * Starts `serve --port 0` with extra arguments and environment, and waits
 * for "HUB listening on <url>".
 *
 * @param args Extra `serve` arguments (e.g. `--database`, `--weights`).
 * @param env Extra environment variables.
 * @returns The running process.
 */
export function startHubProcess(
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<HubProcess> {
  return startHubScript(CLI, ["serve", "--port", "0", ...args], env);
}

/**
 * Starts a script that serves a HUB and prints "HUB listening on <url>"
 * (e.g. a fixture calling `serveHub` with options the CLI has no flag for),
 * and waits for that line.
 *
 * @param script Path of the script.
 * @param args Its arguments.
 * @param env Extra environment variables.
 * @returns The running process.
 */
export async function startHubScript(
  script: string,
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<HubProcess> {
  const argv = isDeno ? ["run", "-A", script, ...args] : [script, ...args];
  const child = spawn(process.execPath, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let output = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => output += chunk);
  const exited = new Promise<void>((resolve) =>
    child.on("exit", () => resolve())
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`The HUB process did not start within 60 s: ${output}`));
    }, 60_000);
    child.stdout!.on("data", (chunk: string) => {
      output += chunk;
      const match = /HUB listening on (http:\/\/\S+)/.exec(output);
      if (match !== null) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`The HUB process exited with ${code}: ${output}`));
    });
  });
  return {
    url,
    child,
    output: () => output,
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
      }
      await exited;
    },
  };
}
