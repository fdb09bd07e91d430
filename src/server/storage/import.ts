/**
 * Copies a whole HUB from one storage pair to another (typically the file
 * store of a laptop into PostgreSQL + S3 for a team) without loss: every
 * model keeps its id, document and every epoch of metrics; every weights
 * file is copied and checked by sha256 on the way. Models are imported one
 * at a time; running it again is safe and skips weights already there.
 *
 * Internal to the server (used by `hub-session migrate`).
 *
 * @module
 */

import type {
  BlobStore,
  EpochEntry,
  HubStorage,
  ModelRecord,
} from "./contract.ts";

/** A model store that can take a model as is (same id). */
export interface ModelImporter {
  /**
   * Writes a model exactly as given, replacing what is stored for its id.
   *
   * @param record The document.
   * @param metrics Every epoch of the model.
   */
  importModel(
    record: ModelRecord,
    metrics: readonly EpochEntry[],
  ): Promise<void>;
}

/** What {@linkcode importHub} copied. */
export interface ImportReport {
  /** Models imported. */
  models: number;
  /** Epochs of metrics imported (the sum over models). */
  epochs: number;
  /** Weights files copied now. */
  blobsCopied: number;
  /** Weights files already in the target with the right size. */
  blobsPresent: number;
  /** Bytes of weights copied now. */
  bytes: number;
}

/** Options of {@linkcode importHub}. */
export interface ImportOptions {
  /** Called after each model, e.g. to print progress. @default {undefined} */
  onModel?: ((id: string, epochs: number) => void) | undefined;
  /** Aborts between (and inside) copies. @default {undefined} */
  signal?: AbortSignal | undefined;
}

async function copyBlob(
  from: BlobStore,
  to: BlobStore,
  key: string,
  prefix: string,
  sha256: string,
  signal: AbortSignal | undefined,
): Promise<{ key: string; bytes: number }> {
  const read = await from.read(key, { signal });
  if (read === undefined) {
    throw new Error(
      `Cannot import weights "${key}" as the source store has no such blob`,
    );
  }
  const writer = await to.createWriter(prefix, { signal });
  try {
    for await (const chunk of read.body) await writer.write(chunk);
    const stored = await writer.finish(sha256);
    return { key: stored.key, bytes: stored.size };
  } catch (error) {
    await writer.abort();
    await read.body.cancel().catch(() => {});
    throw error;
  }
}

/**
 * Imports every model of `source` into `target` and checks the result:
 * the target's epoch count of each model equals the source's, and each
 * weights file's sha256 (checked while it streamed) equals the document's.
 *
 * @param source The storage to read (left unchanged).
 * @param target The storage to fill; its model store must take models as
 * they are ({@linkcode ModelImporter}).
 * @param options Progress callback, signal.
 * @returns What was copied.
 *
 * @example Import a file store into PostgreSQL + S3
 * ```ts ignore
 * const report = await importHub(fileStorage, { models: postgres, weights: s3 });
 * console.log(`${report.models} models, ${report.epochs} epochs`);
 * ```
 */
export async function importHub(
  source: HubStorage,
  target: { models: HubStorage["models"] & ModelImporter; weights: BlobStore },
  options: ImportOptions = {},
): Promise<ImportReport> {
  const { onModel, signal } = options;
  const report: ImportReport = {
    models: 0,
    epochs: 0,
    blobsCopied: 0,
    blobsPresent: 0,
    bytes: 0,
  };
  let cursor: string | undefined;
  do {
    signal?.throwIfAborted();
    const page = await source.models.listIds({ cursor, signal });
    for (const id of page.items) {
      const original = await source.models.get(id, { signal });
      if (original === undefined) continue; // deleted meanwhile
      const record = structuredClone(original);
      const metrics = await source.models.listMetrics(id, { signal }) ?? [];
      // What an earlier run already copied: the target's document names it
      // (the target may have stored it under another key than the source).
      const earlier = await target.models.get(id, {
        signal,
        includeDeleted: true,
      });
      for (const kind of ["last", "best"] as const) {
        const info = record.weights[kind];
        if (info?.blob === undefined) continue;
        const before = earlier?.weights[kind];
        const candidates = before?.sha256 === info.sha256 &&
            before.blob !== undefined
          ? [before.blob, info.blob]
          : [info.blob];
        let reused: string | undefined;
        for (const key of candidates) {
          const present = await target.weights.stat(key, { signal });
          if (present !== undefined && present.size === info.size) {
            reused = key;
            break;
          }
        }
        if (reused !== undefined) {
          info.blob = reused;
          report.blobsPresent++;
          continue;
        }
        const copied = await copyBlob(
          source.weights,
          target.weights,
          info.blob,
          `${id}/`,
          info.sha256,
          signal,
        );
        info.blob = copied.key;
        report.blobsCopied++;
        report.bytes += copied.bytes;
      }
      await target.models.importModel(record, metrics);
      const count = await target.models.epochCount(id, { signal });
      if (count !== metrics.length) {
        throw new Error(
          `Cannot confirm the import of model "${id}": the target holds ${count} epochs, the source ${metrics.length}`,
        );
      }
      report.models++;
      report.epochs += metrics.length;
      onModel?.(id, metrics.length);
    }
    cursor = page.next;
  } while (cursor !== undefined);
  return report;
}
