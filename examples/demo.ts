/**
 * The demo: a real tiny training against the embedded local HUB.
 *
 * ```sh
 * npx -y deno@2.9.6 task demo            # or: bun examples/demo.ts
 * deno task demo --epochs 5
 * deno task demo --hub https://my-hub.example --key "$HUB_API_KEY"
 * deno task demo --help
 * ```
 *
 * The logic lives in `src/demo/run.ts` (`runDemo()`); this is the command
 * line around it (`hub-session demo`).
 *
 * @module
 */

import process from "node:process";
import { main } from "../src/cli/mod.ts";

const code = await main(["demo", ...process.argv.slice(2)]);
if (code !== 0) process.exit(code);
