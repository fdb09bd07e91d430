/**
 * Runs the whole test suite under Deno, then the same files under Bun, and
 * ends with one line summing both runtimes: `N passed, N failed`.
 *
 * Usage: `deno task test` (extra arguments are passed to both runners as test
 * file filters, e.g. `deno task test tests/client_test.ts`).
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { BUN, denoEnv, mirrorDir, prepareBun, ROOT } from "./std.ts";

interface RunResult {
  name: string;
  skipped: string[];
  passed: number;
  failed: number;
  code: number;
  counted: boolean;
}

const args = process.argv.slice(2);
const only = args.find((a) => a.startsWith("--only="))?.slice(7);
const files = args.filter((a) => !a.startsWith("--only="));

function run(
  name: string,
  command: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    console.log(`\n=== ${name}: ${command.join(" ")}\n`);
    const [cmd = "", ...args] = command;
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const forward = (target: NodeJS.WriteStream) => (chunk: Uint8Array) => {
      const text = new TextDecoder().decode(chunk);
      output += text;
      target.write(chunk);
    };
    child.stdout.on("data", forward(process.stdout));
    child.stderr.on("data", forward(process.stderr));
    child.on("error", (error) => {
      output += String(error);
      resolve({ code: 127, output });
    });
    child.on("close", (code) => resolve({ code: code ?? 1, output }));
  });
}

// deno-lint-ignore no-control-regex
const strip = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, "");

function parseDeno(
  output: string,
): { passed: number; failed: number } | undefined {
  // "ok | 4 passed (33 steps) | 1 failed (2 steps) | 0 ignored": node:test
  // describe() blocks run as tests with steps, so both numbers count.
  const line = strip(output).split("\n").reverse().find((l) =>
    /^(ok|FAILED) \| \d+ passed/.test(l.trim())
  );
  if (line === undefined) return undefined;
  const count = (what: string): number => {
    const match = new RegExp(`(\\d+) ${what}(?: \\((\\d+) steps?\\))?`).exec(
      line,
    );
    return Number(match?.[1] ?? 0) + Number(match?.[2] ?? 0);
  };
  return { passed: count("passed"), failed: count("failed") };
}

function parseBun(
  output: string,
): { passed: number; failed: number } | undefined {
  const text = strip(output);
  const pass = /^\s*(\d+) pass\s*$/m.exec(text);
  const fail = /^\s*(\d+) fail\s*$/m.exec(text);
  if (pass === null && fail === null) return undefined;
  return { passed: Number(pass?.[1] ?? 0), failed: Number(fail?.[1] ?? 0) };
}

/**
 * Suites skipped for want of a service (PostgreSQL, S3): the test files print
 * `!!! SKIPPED <suite>: needs ...` (tests/support/services.ts).
 */
function skippedSuites(output: string): string[] {
  return [...strip(output).matchAll(/^!!! SKIPPED (.+)$/gm)].map((m) =>
    m[1] ?? ""
  );
}

console.log(
  mirrorDir() === undefined
    ? "@std: from JSR (no offline mirror beside this checkout)"
    : `@std: offline mirror ${mirrorDir()}`,
);
const results: RunResult[] = [];
if (only !== "bun") {
  const targets = files.length > 0 ? files : ["tests/"];
  const { code, output } = await run("deno", [
    process.execPath,
    "test",
    "-A",
    ...targets,
  ], denoEnv());
  const counts = parseDeno(output);
  results.push({
    name: "deno",
    skipped: skippedSuites(output),
    code,
    counted: counts !== undefined,
    ...(counts ?? { passed: 0, failed: 0 }),
  });
}
if (only !== "deno") {
  prepareBun();
  const targets = files.length > 0
    ? files.map((f) => f.startsWith(".") ? f : `./${f}`)
    : ["./tests"];
  const { code, output } = await run("bun", [
    ...BUN,
    "test",
    "--timeout",
    "120000",
    ...targets,
  ], denoEnv()); // tests started under Bun may run Deno children
  const counts = parseBun(output);
  results.push({
    name: "bun",
    skipped: skippedSuites(output),
    code,
    counted: counts !== undefined,
    ...(counts ?? { passed: 0, failed: 0 }),
  });
}

console.log("");
let passed = 0;
let failed = 0;
let ok = true;
for (const r of results) {
  // A runner that exits non-zero without reporting a failure still fails the run.
  const runFailed = r.failed + (r.code !== 0 && r.failed === 0 ? 1 : 0) +
    (r.counted ? 0 : 1);
  console.log(
    `${r.name}: ${r.passed} passed, ${r.failed} failed (exit code ${r.code}${
      r.counted ? "" : ", no summary found"
    })`,
  );
  passed += r.passed;
  failed += runFailed;
  if (r.code !== 0 || !r.counted || r.passed === 0) ok = false;
}
for (const r of results) {
  if (r.skipped.length === 0) continue;
  console.log(
    `\n!!! ${r.name}: ${r.skipped.length} suite(s) SKIPPED for want of a service:`,
  );
  for (const line of r.skipped) console.log(`!!!   ${line}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(ok && failed === 0 ? 0 : 1);
