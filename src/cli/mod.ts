/**
 * The `hub-session` command line: serve the local HUB, run the demo, deliver
 * a journal, upload final weights with a progress bar, print a model.
 *
 * Run it as `deno run -A src/cli/mod.ts <command>` or `bun src/cli/mod.ts <command>`;
 * `--help` after any command explains it. Exit codes: 0 success, 1 failure,
 * 2 wrong usage. Errors are one line, `error: <message>`, never a stack trace
 * and never an API key.
 *
 * @example Print the help from code
 * ```ts
 * import { main } from "./mod.ts";
 *
 * let out = "";
 * const code = await main(["--help"], { write: (line) => out += line + "\n" });
 * console.assert(code === 0 && out.includes("hub-session <command>"));
 * ```
 *
 * @module
 */

import process from "node:process";
import { readEnv } from "../session/config.ts";
import { redact } from "../common/redact.ts";
import { VERSION } from "../common/version.ts";
import { type Io, UsageError } from "./args.ts";
import { demo, model, sync, upload } from "./commands.ts";
import { HELP, USAGE } from "./help.ts";
import { migrate } from "./migrate.ts";
import { serve } from "./serve.ts";

/**
 * Where {@linkcode main} writes and what it reads from its surroundings;
 * tests pass their own.
 *
 * @example Capture the output of a command
 * ```ts
 * import { main } from "./mod.ts";
 * import type { CliOptions } from "./mod.ts";
 *
 * const lines: string[] = [];
 * const options: CliOptions = { write: (l) => lines.push(l), writeError: (l) => lines.push(l) };
 * const code = await main(["model", "--help"], options);
 * console.assert(code === 0 && lines.length > 0);
 * ```
 */
export interface CliOptions {
  /**
   * Receives each line of standard output.
   *
   * @default {console.log}
   */
  write?: ((line: string) => void) | undefined;
  /**
   * Receives each line of standard error (errors, warnings).
   *
   * @default {console.error}
   */
  writeError?: ((line: string) => void) | undefined;
  /**
   * Reads an environment variable (`ULTRALYTICS_HUB_API`, `HUB_API_KEY`, ...).
   *
   * @default {the runtime's environment}
   */
  env?: ((name: string) => string | undefined) | undefined;
  /**
   * Stops a running command: `serve` closes the server and returns 0, the
   * others are aborted. Without it, `serve` stops on SIGINT or SIGTERM.
   *
   * @default {undefined}
   */
  signal?: AbortSignal | undefined;
}

const COMMANDS: Record<string, (args: string[], io: Io) => Promise<number>> = {
  serve,
  demo,
  sync,
  upload,
  model,
  migrate,
};

function oneLine(message: string, secrets: ReadonlyArray<string>): string {
  return redact(message.replace(/\s*\n\s*/g, " ").trim(), secrets);
}

/**
 * Runs the command line: `args` are the arguments after the program name.
 * Never throws: failures are printed as one `error:` line.
 *
 * @param args Command and options, e.g. `["model", "<id>", "--hub", url]`.
 * @param options Output, environment and a stop signal (for tests).
 * @returns The exit code: 0 ok, 1 failure, 2 wrong usage.
 *
 * @example Show the help of a command
 * ```ts
 * import { main } from "./mod.ts";
 *
 * const lines: string[] = [];
 * const code = await main(["upload", "--help"], { write: (l) => lines.push(l) });
 * console.assert(code === 0 && lines[0]!.startsWith("hub-session upload"));
 * ```
 */
export async function main(
  args: string[],
  options: CliOptions = {},
): Promise<number> {
  const io: Io = {
    write: options.write ?? ((line) => console.log(line)),
    writeError: options.writeError ?? ((line) => console.error(line)),
    env: options.env ?? readEnv,
    signal: options.signal,
  };
  // Values that must never reach the output, whatever went wrong.
  const secrets: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const match = /^--(?:key|api-key)=(.*)$/.exec(arg);
    if (match !== null) secrets.push(match[1]!);
    else if (arg === "--key" || arg === "--api-key") {
      if (args[i + 1] !== undefined) secrets.push(args[i + 1]!);
    }
  }
  const envKey = io.env("HUB_API_KEY");
  if (envKey !== undefined) secrets.push(envKey);
  for (
    const name of ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD"]
  ) {
    const value = io.env(name);
    if (value !== undefined && value.length >= 4) secrets.push(value);
  }
  try {
    const password = new URL(io.env("HUB_DATABASE_URL") ?? "").password;
    if (password !== "") secrets.push(password, decodeURIComponent(password));
  } catch {
    // No database URL.
  }
  const [command, ...rest] = args;
  try {
    if (command === undefined) {
      io.writeError(USAGE);
      return 2;
    }
    if (command === "-h" || command === "--help" || command === "help") {
      io.write(
        rest[0] !== undefined && HELP[rest[0]] !== undefined
          ? HELP[rest[0]]!
          : USAGE,
      );
      return 0;
    }
    if (command === "--version" || command === "-v") {
      io.write(`hub-session ${VERSION}`);
      return 0;
    }
    const run = Object.hasOwn(COMMANDS, command)
      ? COMMANDS[command]
      : undefined;
    if (run === undefined) {
      throw new UsageError(
        `Unknown command "${command}": use serve, demo, sync, upload, model or migrate (see hub-session --help)`,
      );
    }
    return await run(rest, io);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.writeError(`error: ${oneLine(message, secrets)}`);
    return error instanceof UsageError ? 2 : 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Exit explicitly only on failure, so that a leaked handle would show up
  // as a process that does not end.
  if (code !== 0) process.exit(code);
}
