/**
 * Where the real PostgreSQL and S3 servers of the backend tests are, from the
 * environment `.ci/setup/30-services.sh` exports (start them by hand with
 * `scripts/services/postgres.sh` and `scripts/services/s3.sh`, see the
 * README's "Working on hub-session").
 *
 * A suite whose service is not configured is skipped LOUDLY (a line on
 * stderr saying what is missing and how to set it up), except in CI
 * (`CI=true` or `HUB_TEST_REQUIRE_SERVICES=1`), where it fails instead:
 * nothing may skip there.
 *
 * @module
 */

import process from "node:process";
import { test } from "node:test";
import { randomBytes } from "node:crypto";
import type { S3Config } from "../../src/server/storage/s3/client.ts";

/** Whether a missing service must fail the run instead of skipping. */
export const servicesRequired: boolean = process.env.CI === "true" ||
  process.env.HUB_TEST_REQUIRE_SERVICES === "1";

const HOW =
  "as root: `source .ci/setup/30-services.sh` (starts both and exports the variables; stop with hub_services_stop)";

/** The test PostgreSQL URL, or `undefined` when none is configured. */
export const databaseUrl: string | undefined =
  process.env.HUB_TEST_DATABASE_URL || undefined;

/** The PostgreSQL cluster directory (restart fault tests), if known. */
export const postgresDir: string | undefined =
  process.env.HUB_TEST_POSTGRES_DIR || undefined;

/** The test S3 bucket URL (`http://host:port/bucket`), if configured. */
export const s3Url: string | undefined = process.env.HUB_TEST_S3_URL ||
  undefined;

/**
 * S3 settings for a test: the configured bucket with a fresh random prefix,
 * so tests never see each other's objects.
 *
 * @returns The settings, or `undefined` when no S3 is configured.
 */
export function s3Config(): S3Config | undefined {
  if (s3Url === undefined) return undefined;
  const url = new URL(s3Url);
  return {
    endpoint: url.origin,
    bucket: url.pathname.replace(/^\/|\/$/g, ""),
    prefix: `test-${randomBytes(6).toString("hex")}/`,
    region: process.env.AWS_REGION ?? "us-east-1",
    accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "",
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? "",
  };
}

/**
 * Decides whether a suite that needs `services` runs: returns `true` when
 * they are configured. Otherwise prints a loud line and returns `false`
 * (the suite is then skipped), or, in CI, registers a failing test that
 * names what is missing and returns `false`.
 *
 * @param suite Name of the suite, for the message.
 * @param services Which services it needs.
 * @returns Whether to run the suite.
 */
export function haveServices(
  suite: string,
  services: readonly ("postgres" | "s3" | "postgres-dir")[],
): boolean {
  const missing = services.filter((s) =>
    s === "postgres"
      ? databaseUrl === undefined
      : s === "s3"
      ? s3Url === undefined
      : postgresDir === undefined
  ).map((s) =>
    s === "postgres"
      ? "HUB_TEST_DATABASE_URL"
      : s === "s3"
      ? "HUB_TEST_S3_URL"
      : "HUB_TEST_POSTGRES_DIR"
  );
  if (missing.length === 0) return true;
  const message = `${suite}: needs ${missing.join(" and ")} (${HOW})`;
  if (servicesRequired) {
    test(`${suite} has its services`, () => {
      throw new Error(`${message}; nothing may skip in CI`);
    });
  } else {
    console.error(`\n!!! SKIPPED ${message}\n`);
  }
  return false;
}

/** A database of its own for one test file. */
export interface TestDatabase {
  /** Its URL. */
  url: string;
  /** Drops it (closing other sessions first). */
  drop(): Promise<void>;
}

/**
 * Creates a fresh, empty database on the test PostgreSQL, so test files never
 * see each other's rows.
 *
 * @returns The database; drop it when done.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const { default: postgres } = await import("postgres");
  const admin = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  const name = `hub_test_${randomBytes(6).toString("hex")}`;
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(databaseUrl!);
  url.pathname = `/${name}`;
  return {
    url: url.href,
    async drop() {
      const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await sql.end();
    },
  };
}
