/**
 * Where the Deno standard library comes from for the project's own commands.
 *
 * Real users get `@std/*` from JSR (Deno through `deno.json`'s `jsr:`
 * imports, Bun through JSR's npm layer). Machines that cannot reach JSR keep
 * an offline mirror of the same packages beside the checkout
 * (`../shared/jsr`): when it is there, Deno reads it through `JSR_URL` and Bun
 * through a `node_modules/@std` link to it. Without the mirror, Deno uses JSR
 * and Bun installs the packages from JSR's npm registry (the `@jsr` scope in
 * `.npmrc`) without touching `package.json`.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The repository root. */
export const ROOT: string = resolve(
  dirname(fileURLToPath(import.meta.url)),
  "..",
);

/** The command that runs the pinned Bun. */
export const BUN: string[] = ["npx", "-y", "bun@1.4.5"];

/** The offline mirror, when this checkout has one beside it. */
export function mirrorDir(): string | undefined {
  const dir = process.env.HUB_STD_MIRROR ?? join(ROOT, "..", "shared", "jsr");
  return existsSync(join(dir, "jsr.io")) ? resolve(dir) : undefined;
}

/**
 * The environment for Deno children: `JSR_URL` pointing at the mirror when
 * there is one (and none was set), the caller's environment otherwise.
 */
export function denoEnv(): NodeJS.ProcessEnv {
  const mirror = mirrorDir();
  if (process.env.JSR_URL !== undefined || mirror === undefined) {
    return { ...process.env };
  }
  return {
    ...process.env,
    JSR_URL: pathToFileURL(join(mirror, "jsr.io")).href + "/",
  };
}

/** The `@std` packages Bun needs: every `@std/*` import in `deno.json`. */
function stdImports(): Map<string, string> {
  const config = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")) as {
    imports?: Record<string, string>;
  };
  const out = new Map<string, string>();
  for (const [name, target] of Object.entries(config.imports ?? {})) {
    const match = /^jsr:@std\/([a-z-]+)@(.+)$/.exec(target);
    if (name.startsWith("@std/") && match) out.set(match[1]!, match[2]!);
  }
  return out;
}

/**
 * Makes `node_modules` ready for Bun: the npm dependencies of `package.json`
 * (`bun install`), then `@std/*` from the mirror (a link) or from JSR's npm
 * layer (`bun add --no-save`).
 */
export function prepareBun(log: (line: string) => void = console.log): void {
  const run = (args: string[]): void => {
    log(`$ ${[...BUN, ...args].join(" ")}`);
    const [cmd = "", ...rest] = BUN;
    const result = spawnSync(cmd, [...rest, ...args], {
      cwd: ROOT,
      stdio: "inherit",
    });
    if (result.status !== 0) {
      throw new Error(`bun ${args.join(" ")} failed (exit ${result.status})`);
    }
  };
  run(["install", "--no-save"]);
  const mirror = mirrorDir();
  const link = join(ROOT, "node_modules", "@std");
  if (mirror !== undefined) {
    const target = join(mirror, "node_modules", "@std");
    let present = false;
    try {
      present = lstatSync(link).isSymbolicLink();
    } catch { /* absent */ }
    if (present) rmSync(link);
    else if (existsSync(link)) rmSync(link, { recursive: true, force: true });
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(target, link, "dir");
    log(`@std for Bun: linked to the offline mirror ${target}`);
    return;
  }
  const specs = [...stdImports()].map(([name, range]) =>
    `@std/${name}@npm:@jsr/std__${name}@${range}`
  );
  run(["add", "--no-save", ...specs]);
}
