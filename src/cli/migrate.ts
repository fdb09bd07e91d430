/**
 * `hub-session migrate`: copies the file store of a data directory into
 * PostgreSQL (documents and metrics) and S3 or another directory (weights),
 * keeping every model id, checking each weights file's sha256 and each
 * model's epoch count. The source is left unchanged; running it again is
 * safe. `serve` applies the schema migrations itself; `migrate` also does,
 * for a database that no server has opened yet.
 *
 * @module
 */

import { resolve } from "node:path";
import type { BlobStore } from "../server/storage/contract.ts";
import { openFileStorage } from "../server/storage/files/mod.ts";
import { importHub } from "../server/storage/import.ts";
import { openHubStorage } from "../server/storage/open.ts";
import { PostgresModelStore } from "../server/storage/postgres/store.ts";
import { type Io, parse, positionals, text, UsageError } from "./args.ts";
import { HELP } from "./help.ts";
import { describeStorage, storageFlags } from "./storage_flags.ts";

/**
 * Runs `migrate`.
 *
 * @param args The arguments after `migrate`.
 * @param io Output, environment and stop signal.
 * @returns The exit code.
 */
export async function migrate(args: string[], io: Io): Promise<number> {
  const { values, positionals: rest } = parse("migrate", args, {
    string: ["data", "database", "weights"],
  });
  if (values.help === true) {
    io.write(HELP.migrate!);
    return 0;
  }
  positionals("migrate", rest, []);
  const dataDir = resolve(text(values, "data") ?? ".hub-data");
  const { database, weights } = storageFlags(values, io);
  if (database === undefined || weights === undefined) {
    throw new UsageError(
      "migrate needs a target: --database (or HUB_DATABASE_URL) and --weights (or HUB_WEIGHTS_URL)",
    );
  }
  const source = await openFileStorage(dataDir);
  let target: Awaited<ReturnType<typeof openHubStorage>> | undefined;
  try {
    target = await openHubStorage({ database, weights });
    const models = target.models;
    if (!(models instanceof PostgresModelStore)) {
      throw new UsageError("migrate copies into PostgreSQL: give --database");
    }
    io.write(`Copying the HUB in ${dataDir} to:`);
    for (
      const line of describeStorage(
        { dataDir: undefined, database, weights },
        io,
      )
    ) {
      io.write(`  ${line}`);
    }
    const report = await importHub(
      source,
      { models, weights: target.weights as BlobStore },
      {
        signal: io.signal,
        onModel: (id, epochs) => io.write(`  ${id}: ${epochs} epochs`),
      },
    );
    io.write(
      `Copied ${report.models} models, ${report.epochs} epochs, ${report.blobsCopied} weights files (${report.bytes} bytes; ${report.blobsPresent} already there), checked by sha256 and epoch counts`,
    );
    return 0;
  } finally {
    await source.models.close();
    await source.weights.close();
    await target?.models.close();
    await target?.weights.close();
  }
}
