/**
 * `--database`, `--weights` and `--data` of `serve` and `migrate`: where the
 * HUB keeps its data, with the environment's `HUB_DATABASE_URL` and
 * `HUB_WEIGHTS_URL` as defaults. A database password is refused on the
 * command line (it shows in `ps`); nothing printed carries a secret.
 *
 * @module
 */

import {
  checkCommandLineDatabaseUrl,
  parseWeightsLocation,
} from "../server/storage/config.ts";
import { describeDatabase } from "../server/storage/postgres/store.ts";
import { type Io, text, UsageError, type Values } from "./args.ts";

/** Where documents+metrics and weights go, when not in the data directory. */
export interface StorageFlags {
  /** PostgreSQL URL, from `--database` or `HUB_DATABASE_URL`. */
  database: string | undefined;
  /** Weights location, from `--weights` or `HUB_WEIGHTS_URL`. */
  weights: string | undefined;
}

/**
 * Reads `--database` and `--weights`, defaulting to the environment.
 *
 * @param values Parsed flags.
 * @param io The environment.
 * @returns The locations (each `undefined` for the data directory).
 * @throws {UsageError} For a password on the command line or a location
 * that cannot be parsed.
 */
export function storageFlags(values: Values, io: Io): StorageFlags {
  const flag = text(values, "database");
  let database = io.env("HUB_DATABASE_URL");
  if (flag !== undefined) {
    try {
      database = checkCommandLineDatabaseUrl(flag);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  if (database !== undefined && !/^postgres(ql)?:\/\//.test(database)) {
    throw new UsageError(
      `Cannot use the database "${
        describeDatabase(database)
      }": give a postgres:// URL`,
    );
  }
  const weights = text(values, "weights") ?? io.env("HUB_WEIGHTS_URL");
  if (weights !== undefined) {
    try {
      parseWeightsLocation(weights);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  return { database, weights };
}

/**
 * Lines saying where the data lives, without any secret.
 *
 * @param where Data directory, database, weights.
 * @param io The environment (for the S3 endpoint).
 * @returns The lines.
 */
export function describeStorage(
  where: {
    dataDir: string | undefined;
    database: string | undefined;
    weights: string | undefined;
  },
  io: Io,
): string[] {
  const lines: string[] = [];
  if (where.dataDir !== undefined) {
    lines.push(`HUB data directory: ${where.dataDir}`);
  }
  if (where.database !== undefined) {
    lines.push(
      `HUB models and metrics: PostgreSQL at ${
        describeDatabase(where.database)
      }`,
    );
  }
  if (where.weights !== undefined) {
    const location = parseWeightsLocation(where.weights);
    lines.push(
      location.kind === "s3"
        ? `HUB weights: s3://${location.bucket}/${location.prefix} at ${
          origin(io.env("AWS_ENDPOINT_URL_S3") ?? io.env("AWS_ENDPOINT_URL"))
        }`
        : `HUB weights: ${location.dir}`,
    );
  }
  return lines;
}

function origin(endpoint: string | undefined): string {
  if (endpoint === undefined) return "AWS S3";
  try {
    return new URL(endpoint).origin;
  } catch {
    return "(unparsable AWS_ENDPOINT_URL)";
  }
}
