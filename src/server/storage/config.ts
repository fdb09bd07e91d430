/**
 * Where the HUB keeps its data, from options, flags and the environment:
 * documents+metrics in files or PostgreSQL, weights in files or an
 * S3-compatible bucket, chosen independently.
 *
 * - `database`: `postgres://user@host[:port]/db` (or `HUB_DATABASE_URL`);
 *   missing: the file store under the data directory. The password comes
 *   from `HUB_DATABASE_URL` or `PGPASSWORD`, never from the command line.
 * - `weights`: `s3://<bucket>[/<prefix>]` (or `HUB_WEIGHTS_URL`), a
 *   `file://` URL or a directory path (e.g. a shared volume); missing: the
 *   data directory. The S3 endpoint and credentials come from the standard
 *   `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), `AWS_ACCESS_KEY_ID`,
 *   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
 *   `AWS_DEFAULT_REGION`); an explicit endpoint uses path-style addressing.
 *
 * Internal to the server.
 *
 * @module
 */

import process from "node:process";
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { S3Config } from "./s3/client.ts";
import { describeDatabase } from "./postgres/store.ts";

/** Where weights go. */
export type WeightsLocation =
  | { kind: "s3"; bucket: string; prefix: string }
  | { kind: "files"; dir: string };

/** Reads an environment variable. */
export type EnvReader = (name: string) => string | undefined;

/** The process environment, without throwing where it is not readable. */
export const processEnv: EnvReader = (name) => {
  try {
    const value = process.env[name];
    return value === "" ? undefined : value;
  } catch {
    return undefined;
  }
};

/**
 * Parses a weights location: `s3://bucket[/prefix]`, `file:///dir`, or a
 * directory path (relative to the working directory).
 *
 * @param text The location.
 * @returns Its parts; an S3 prefix is `""` or ends in `/`.
 *
 * @example Parse an S3 location
 * ```ts
 * import { parseWeightsLocation } from "./config.ts";
 *
 * const where = parseWeightsLocation("s3://team-hub/weights");
 * console.log(where); // { kind: "s3", bucket: "team-hub", prefix: "weights/" }
 * ```
 */
export function parseWeightsLocation(text: string): WeightsLocation {
  if (text.startsWith("s3://")) {
    const rest = text.slice(5);
    const slash = rest.indexOf("/");
    const bucket = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? "" : rest.slice(slash + 1).replace(/^\/+/, "");
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw new TypeError(
        `Cannot use weights location "${text}" as "${bucket}" is not a bucket name: give s3://<bucket>[/<prefix>]`,
      );
    }
    if (path !== "" && !/^[A-Za-z0-9._\/-]+$/.test(path)) {
      throw new TypeError(
        `Cannot use weights location "${text}" as its prefix may only hold [A-Za-z0-9._/-]`,
      );
    }
    const prefix = path === "" || path.endsWith("/") ? path : `${path}/`;
    return { kind: "s3", bucket, prefix };
  }
  if (text.startsWith("file://")) {
    return { kind: "files", dir: fileURLToPath(text) };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw new TypeError(
      `Cannot use weights location "${text}": give s3://<bucket>[/<prefix>], a file:// URL or a directory`,
    );
  }
  if (text === "") {
    throw new TypeError("Cannot use an empty weights location");
  }
  return { kind: "files", dir: isAbsolute(text) ? text : resolve(text) };
}

/**
 * The S3 settings of a bucket location from the standard AWS variables.
 *
 * @param location Bucket and prefix.
 * @param env Reads the environment.
 * @returns The settings for the S3 client.
 *
 * @example Settings for a local Ceph gateway
 * ```ts
 * import { s3ConfigFromEnvironment } from "./config.ts";
 *
 * const env: Record<string, string> = {
 *   AWS_ENDPOINT_URL: "http://127.0.0.1:17480",
 *   AWS_ACCESS_KEY_ID: "KEY",
 *   AWS_SECRET_ACCESS_KEY: "SECRET",
 * };
 * const config = s3ConfigFromEnvironment(
 *   { bucket: "hub", prefix: "" },
 *   (name) => env[name],
 * );
 * console.log(config.pathStyle); // true
 * ```
 */
export function s3ConfigFromEnvironment(
  location: { bucket: string; prefix: string },
  env: EnvReader = processEnv,
): S3Config {
  const accessKeyId = env("AWS_ACCESS_KEY_ID");
  const secretAccessKey = env("AWS_SECRET_ACCESS_KEY");
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new TypeError(
      `Cannot use S3 bucket "${location.bucket}" as AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set: export both (and AWS_ENDPOINT_URL for a server other than AWS)`,
    );
  }
  const endpoint = env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL");
  const region = env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? "us-east-1";
  const sessionToken = env("AWS_SESSION_TOKEN");
  return {
    bucket: location.bucket,
    prefix: location.prefix,
    region,
    accessKeyId,
    secretAccessKey,
    ...(endpoint === undefined ? {} : { endpoint, pathStyle: true }),
    ...(sessionToken === undefined ? {} : { sessionToken }),
  };
}

/**
 * Refuses a database URL that carries a password where it would be visible
 * (a command line shows in `ps` and shell history).
 *
 * @param url The URL given on the command line.
 * @returns The URL, when it has no password.
 *
 * @example A URL without password passes
 * ```ts
 * import { checkCommandLineDatabaseUrl } from "./config.ts";
 *
 * console.log(checkCommandLineDatabaseUrl("postgres://hub@db/hub"));
 * ```
 */
export function checkCommandLineDatabaseUrl(url: string): string {
  let password = "";
  try {
    password = new URL(url).password;
  } catch {
    throw new TypeError(
      `Cannot use --database "${
        describeDatabase(url)
      }" as it is not a URL: give postgres://user@host[:port]/database`,
    );
  }
  if (password !== "") {
    throw new TypeError(
      `Cannot take a database password on the command line (it shows in ps and shell history): give --database postgres://<user>@${
        describeDatabase(url)
      } and the password in PGPASSWORD, or the whole URL in HUB_DATABASE_URL`,
    );
  }
  return url;
}
