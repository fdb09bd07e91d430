/**
 * The file store seen through the read contract the web app uses
 * ({@linkcode WebSource}), until the store implements the storage contract's
 * paged `listIds` itself.
 *
 * @module
 */

import type { HubStore } from "../store.ts";
import type { WebSource } from "./app.ts";

/**
 * Adapts a {@linkcode HubStore} to {@linkcode WebSource}.
 *
 * @param store The store.
 * @returns The read side the web app needs.
 *
 * @example Adapt a store
 * ```ts
 * import { HubStore } from "../store.ts";
 * import { storeSource } from "./source.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = await mkdtemp(join(tmpdir(), "hub-"));
 * const source = storeSource(await HubStore.open(dir));
 * console.assert((await source.listIds()).items.length === 0);
 * await rm(dir, { recursive: true, force: true });
 * ```
 */
export function storeSource(store: HubStore): WebSource {
  return {
    listIds: async () => ({ items: await store.ids(), next: undefined }),
    get: (id) => store.get(id),
    listMetrics: (id) => store.listMetrics(id),
    epochCount: (id) => store.epochCount(id),
  };
}
