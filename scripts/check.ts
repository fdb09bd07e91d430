/**
 * The static checks, in order, stopping at the first failure: format, lint,
 * type check, doc lint, doc tests, publish dry run. `deno task check` runs it;
 * the `@std` mirror is used when this checkout has one (see `std.ts`).
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import process from "node:process";
import { denoEnv, ROOT } from "./std.ts";

const ENTRY_POINTS = ["mod.ts", "src/server/mod.ts", "src/cli/mod.ts"];

const steps: string[][] = [
  ["fmt", "--check"],
  ["lint"],
  ["check", "mod.ts", "src/", "tests/", "scripts/", "bench/", "examples/"],
  ["doc", "--lint", ...ENTRY_POINTS],
  ["test", "-A", "--doc", "mod.ts", "src/", "README.md"],
  ["publish", "--dry-run", "--allow-dirty"],
];

const env = denoEnv();
for (const step of steps) {
  console.log(`\n=== deno ${step.join(" ")}`);
  const result = spawnSync(process.execPath, step, {
    cwd: ROOT,
    env,
    stdio: "inherit",
  });
  if (result.status !== 0) {
    console.error(`deno ${step.join(" ")} failed (exit ${result.status})`);
    process.exit(result.status ?? 1);
  }
}
console.log("\nall checks passed");
