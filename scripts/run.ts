/**
 * Runs a Deno program of this repository with the standard library resolved
 * the way `std.ts` decides: from the offline mirror beside the checkout when
 * there is one (`JSR_URL`), from JSR otherwise. The project's tasks (`demo`,
 * `hub`, the benches) go through it so that they work as typed on a machine
 * that reaches only the npm registry.
 *
 * Usage: `deno run -A scripts/run.ts [--bun] <file> [args...]` (runs
 * `deno run -A <file> [args...]`; standard input, output and the exit code are
 * the program's own). `--bun` first makes `node_modules` ready for the Bun
 * processes the program starts (`bun install`, `@std` for Bun), as the tests
 * do: the benches that compare both runtimes need it on a fresh checkout.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { constants } from "node:os";
import process from "node:process";
import { denoEnv, prepareBun } from "./std.ts";

const argv = process.argv.slice(2);
if (argv[0] === "--bun") {
  argv.shift();
  // Progress on standard error: standard output is the program's.
  prepareBun((line) => console.error(line));
}
const [file, ...args] = argv;
if (file === undefined) {
  console.error("usage: deno run -A scripts/run.ts [--bun] <file> [args...]");
  process.exit(2);
}

const child = spawn(process.execPath, ["run", "-A", file, ...args], {
  env: denoEnv(),
  stdio: "inherit",
});
// Ctrl-C reaches the program through the terminal's process group; this
// process only waits for it, so the program decides how to stop.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => child.kill(signal));
}
child.on("error", (error) => {
  console.error(`could not start deno: ${error.message}`);
  process.exit(127);
});
child.on("exit", (code, signal) => {
  process.exit(
    code ?? (signal === null ? 1 : 128 + (constants.signals[signal] ?? 0)),
  );
});
