/**
 * Opens the storage pair a server runs on, from where the data lives:
 * documents+metrics in files under the data directory or in PostgreSQL,
 * weights in files (the data directory or another directory) or in an S3
 * bucket, chosen independently (see `config.ts` for the formats).
 *
 * Internal to the server.
 *
 * @module
 */

import { join } from "node:path";
import type { HubStorage } from "./contract.ts";
import {
  type EnvReader,
  parseWeightsLocation,
  processEnv,
  s3ConfigFromEnvironment,
} from "./config.ts";
import { FileBlobStore } from "./files/blobs.ts";
import { openFileStorage } from "./files/mod.ts";
import { FileModelStore } from "./files/models.ts";
import { openPostgresModelStore } from "./postgres/store.ts";
import { openS3BlobStore } from "./s3/blobs.ts";

/** Where the data lives. */
export interface StorageLocation {
  /**
   * Directory for whatever is not given elsewhere (documents+metrics
   * without `database`, weights without `weights`).
   *
   * @default {undefined}
   */
  dataDir?: string | undefined;
  /**
   * PostgreSQL URL for documents and metrics.
   *
   * @default {undefined}
   */
  database?: string | undefined;
  /**
   * Weights location: `s3://<bucket>[/<prefix>]`, a `file://` URL or a
   * directory.
   *
   * @default {undefined}
   */
  weights?: string | undefined;
  /**
   * Reads `AWS_*` variables.
   *
   * @default {the process environment}
   */
  env?: EnvReader | undefined;
}

/**
 * Opens documents+metrics and weights where `location` says. Both from the
 * data directory is the embedded file store (one process owns it); any other
 * pair may be shared by several processes, so unreferenced blobs get the
 * default grace period before they are collected.
 *
 * @param location Data directory, database URL, weights location.
 * @returns The opened pair; close both halves when done.
 *
 * @example The embedded default
 * ```ts
 * import { openHubStorage } from "./open.ts";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dataDir = await mkdtemp(join(tmpdir(), "hub-"));
 * const storage = await openHubStorage({ dataDir });
 * console.log(storage.models.kind, storage.weights.kind);
 * await storage.models.close();
 * await storage.weights.close();
 * await rm(dataDir, { recursive: true, force: true });
 * ```
 */
export async function openHubStorage(
  location: StorageLocation,
): Promise<HubStorage> {
  const { dataDir, database, weights, env = processEnv } = location;
  const where = weights === undefined
    ? undefined
    : parseWeightsLocation(weights);
  if (
    dataDir === undefined && (database === undefined || where === undefined)
  ) {
    throw new TypeError(
      "Cannot open the HUB's storage without a data directory unless both the database and the weights location are given",
    );
  }
  if (database === undefined && where === undefined) {
    return await openFileStorage(dataDir!);
  }
  const s3 = where?.kind === "s3"
    ? s3ConfigFromEnvironment(where, env)
    : undefined;
  const models = database !== undefined
    ? await openPostgresModelStore(database)
    : await FileModelStore.open(dataDir!);
  try {
    const blobs = s3 !== undefined
      ? await openS3BlobStore(s3)
      : await FileBlobStore.open(
        where?.kind === "files" ? where.dir : join(dataDir!, "weights"),
        // Beside PostgreSQL the directory may be a volume other server
        // processes write to: keep their uploads in progress.
        { staleAfterMs: database === undefined ? 0 : 3_600_000 },
      );
    return { models, weights: blobs };
  } catch (error) {
    await models.close();
    throw error;
  }
}
