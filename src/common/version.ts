/**
 * The package version and the agent name sent with every request.
 *
 * @module
 */

/**
 * Version of this package.
 *
 * @example Print the version
 * ```ts
 * import { VERSION } from "./version.ts";
 *
 * console.log(`hub-session ${VERSION}`);
 * ```
 */
export const VERSION = "0.1.0";

interface RuntimeGlobals {
  Deno?: { version?: { deno?: string } } | undefined;
  Bun?: { version?: string } | undefined;
  process?: { versions?: { node?: string } } | undefined;
}

function runtimeName(): string {
  const g = globalThis as RuntimeGlobals;
  if (typeof g.Deno?.version?.deno === "string") {
    return `deno ${g.Deno.version.deno}`;
  }
  if (typeof g.Bun?.version === "string") return `bun ${g.Bun.version}`;
  if (typeof g.process?.versions?.node === "string") {
    return `node ${g.process.versions.node}`;
  }
  return "unknown runtime";
}

/**
 * Agent name sent as `user-agent` and in heartbeats, such as
 * `hub-session/0.1.0 (deno 2.9.6)` or `hub-session/0.1.0 (bun 1.4.5)`.
 *
 * @example Print the agent name
 * ```ts
 * import { AGENT } from "./version.ts";
 *
 * console.assert(AGENT.startsWith("hub-session/"));
 * ```
 */
export const AGENT: string = `hub-session/${VERSION} (${runtimeName()})`;
