/**
 * The HUB's instance id: a random id stored once in the data directory, sent
 * as the `x-hub-instance` header of every API reply, so that a client
 * recognises the same HUB when it comes back on another address (e.g. a
 * demo's random port) and finds the journals it left for it.
 *
 * @module
 */

import { randomUUID } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export { INSTANCE_HEADER } from "../protocol/instance.ts";

/**
 * Reads the instance id of a data directory, creating it on first use (a
 * concurrent creation keeps the first one written).
 *
 * @param dataDir The HUB's data directory.
 * @returns The instance id.
 *
 * @example Read the id of a new data directory
 * ```ts
 * import { readInstanceId } from "./instance.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "hub-"));
 * const id = await readInstanceId(dir);
 * console.assert(id === await readInstanceId(dir));
 * await rm(dir, { recursive: true });
 * ```
 */
export async function readInstanceId(dataDir: string): Promise<string> {
  const file = join(dataDir, "instance-id");
  try {
    const id = (await readFile(file, "utf8")).trim();
    if (id !== "") return id;
  } catch {
    // not created yet
  }
  await mkdir(dataDir, { recursive: true });
  try {
    await writeFile(file, `${randomUUID()}\n`, { flag: "wx" });
  } catch (error) {
    if ((error as { code?: string }).code !== "EEXIST") throw error;
  }
  return (await readFile(file, "utf8")).trim();
}
