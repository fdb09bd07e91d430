import { describe, test } from "node:test";
import { assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { resolve } from "node:path";
import {
  checkCommandLineDatabaseUrl,
  parseWeightsLocation,
  s3ConfigFromEnvironment,
} from "../src/server/storage/config.ts";

describe("storage configuration", () => {
  test("parseWeightsLocation() reads s3:// buckets with and without a prefix", () => {
    assertEquals(parseWeightsLocation("s3://team-hub"), {
      kind: "s3",
      bucket: "team-hub",
      prefix: "",
    });
    assertEquals(parseWeightsLocation("s3://team-hub/a/b"), {
      kind: "s3",
      bucket: "team-hub",
      prefix: "a/b/",
    });
    assertEquals(parseWeightsLocation("s3://team-hub/a/"), {
      kind: "s3",
      bucket: "team-hub",
      prefix: "a/",
    });
  });

  test("parseWeightsLocation() reads directories and file:// URLs", () => {
    assertEquals(parseWeightsLocation("/mnt/shared/weights"), {
      kind: "files",
      dir: "/mnt/shared/weights",
    });
    assertEquals(parseWeightsLocation("file:///mnt/w"), {
      kind: "files",
      dir: "/mnt/w",
    });
    assertEquals(parseWeightsLocation("weights"), {
      kind: "files",
      dir: resolve("weights"),
    });
  });

  test("parseWeightsLocation() refuses other schemes and bad buckets with what to give", () => {
    const scheme = assertThrows(
      () => parseWeightsLocation("gs://bucket"),
      TypeError,
    );
    assertStringIncludes(scheme.message, "s3://<bucket>");
    assertThrows(() => parseWeightsLocation("s3://UPPER"), TypeError);
    assertThrows(() => parseWeightsLocation("s3://ok-bucket/a b"), TypeError);
  });

  test("s3ConfigFromEnvironment() takes the standard AWS variables, path-style for an endpoint", () => {
    const env: Record<string, string> = {
      AWS_ENDPOINT_URL: "http://127.0.0.1:9000",
      AWS_ACCESS_KEY_ID: "KEY",
      AWS_SECRET_ACCESS_KEY: "SECRET",
      AWS_REGION: "eu-west-1",
    };
    assertEquals(
      s3ConfigFromEnvironment({ bucket: "hub", prefix: "w/" }, (n) => env[n]),
      {
        bucket: "hub",
        prefix: "w/",
        region: "eu-west-1",
        accessKeyId: "KEY",
        secretAccessKey: "SECRET",
        endpoint: "http://127.0.0.1:9000",
        pathStyle: true,
      },
    );
    const aws = s3ConfigFromEnvironment(
      { bucket: "hub", prefix: "" },
      (n) => ({ AWS_ACCESS_KEY_ID: "K", AWS_SECRET_ACCESS_KEY: "S" })[n],
    );
    assertEquals(aws.endpoint, undefined);
    assertEquals(aws.region, "us-east-1");
  });

  test("s3ConfigFromEnvironment() names the missing credentials", () => {
    const error = assertThrows(
      () =>
        s3ConfigFromEnvironment({ bucket: "hub", prefix: "" }, () => undefined),
      TypeError,
    );
    assertStringIncludes(error.message, "AWS_ACCESS_KEY_ID");
  });

  test("a database password on the command line is refused without echoing it", () => {
    assertEquals(
      checkCommandLineDatabaseUrl("postgres://hub@db:5432/hub"),
      "postgres://hub@db:5432/hub",
    );
    const error = assertThrows(
      () => checkCommandLineDatabaseUrl("postgres://hub:hunter2secret@db/hub"),
      TypeError,
    );
    assertStringIncludes(error.message, "PGPASSWORD");
    assertEquals(error.message.includes("hunter2secret"), false);
  });
});
