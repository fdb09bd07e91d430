/**
 * The PostgreSQL schema of the HUB, as numbered migrations.
 *
 * {@linkcode migrate} applies the missing ones in order, each in the same
 * transaction as its row in `hub_schema_migrations`, under a transaction
 * advisory lock: several server processes starting at once apply each
 * migration exactly once. A database whose schema is newer than this server
 * knows is refused (an older server must not write a newer schema).
 *
 * Migrations are append-only: never edit one that was released; add the next
 * number.
 *
 * Internal to the server.
 *
 * @module
 */

import type { Sql } from "postgres";

/** One schema change. */
export interface Migration {
  /** Its number, 1, 2, ... without gaps. */
  version: number;
  /** What it does, for the migrations table and logs. */
  name: string;
  /** The SQL, run as one multi-statement string. */
  sql: string;
}

/** Every migration, oldest first. */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: "models and per-epoch metrics",
    sql: `
      CREATE TABLE hub_models (
        id text PRIMARY KEY,
        document jsonb NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        deleted_at bigint
      );
      CREATE TABLE hub_metrics (
        model_id text NOT NULL REFERENCES hub_models (id) ON DELETE CASCADE,
        epoch bigint NOT NULL CHECK (epoch >= 0),
        metrics jsonb NOT NULL,
        recorded_at bigint NOT NULL,
        PRIMARY KEY (model_id, epoch)
      );
    `,
  },
  {
    version: 2,
    name: "index of recently changed models (live updates)",
    sql: `CREATE INDEX hub_models_updated_at ON hub_models (updated_at);`,
  },
  {
    version: 3,
    name: "distinct metric names of each model (the per-model name bound)",
    sql: `
      ALTER TABLE hub_models
        ADD COLUMN metric_names text[] NOT NULL DEFAULT '{}';
      UPDATE hub_models m SET metric_names = ARRAY(
        SELECT DISTINCT k FROM hub_metrics h, jsonb_object_keys(h.metrics) k
        WHERE h.model_id = m.id);
    `,
  },
]);

/** Arbitrary constant naming the migration lock (`pg_advisory_xact_lock`). */
const LOCK_KEY = 0x48554231; // "HUB1"

/**
 * The schema is newer than this server: refuse to touch it.
 *
 * @example Tell the operator what to do
 * ```ts
 * import { SchemaVersionError } from "./migrations.ts";
 *
 * const error = new SchemaVersionError(3, 1);
 * console.log(error.message.includes("upgrade")); // true
 * ```
 */
export class SchemaVersionError extends Error {
  /**
   * Creates the error.
   *
   * @param found Version in the database.
   * @param known Latest version this server knows.
   */
  constructor(found: number, known: number) {
    super(
      `Cannot use the database as its HUB schema is version ${found} and this server knows up to ${known}: upgrade the server`,
    );
    this.name = "SchemaVersionError";
  }
}

/**
 * Applies the migrations the database lacks.
 *
 * @param sql A connection pool.
 * @param migrations The migrations to apply (tests pass their own).
 * @returns The versions applied now (empty when up to date).
 *
 * @example Bring a database up to date
 * ```ts ignore
 * import postgres from "postgres";
 * const sql = postgres(url);
 * console.log(await migrate(sql)); // [1] on a new database, then []
 * ```
 */
export async function migrate(
  sql: Sql,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number[]> {
  const known = migrations.at(-1)?.version ?? 0;
  return await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${LOCK_KEY})`;
    await tx`
      CREATE TABLE IF NOT EXISTS hub_schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
    const rows = await tx<{ version: number }[]>`
      SELECT version FROM hub_schema_migrations`;
    const applied = new Set(rows.map((r) => r.version));
    const newest = Math.max(0, ...applied);
    if (newest > known) throw new SchemaVersionError(newest, known);
    const done: number[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await tx.unsafe(migration.sql);
      await tx`
        INSERT INTO hub_schema_migrations (version, name)
        VALUES (${migration.version}, ${migration.name})`;
      done.push(migration.version);
    }
    return done;
  }) as number[];
}
