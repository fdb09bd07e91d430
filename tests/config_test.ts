import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  assertSafeTransport,
  DEFAULT_API_ROOT,
  DEFAULT_WEB_ROOT,
  isLoopback,
  readEnv,
  resolveConfig,
} from "../src/session/config.ts";
import { HUBConfigError } from "../src/common/errors.ts";

const KEY = "k".repeat(42);
const envOf =
  (vars: Record<string, string>) => (name: string): string | undefined =>
    vars[name];

test("resolveConfig() falls back to the defaults", async () => {
  const config = await resolveConfig({ env: envOf({}), settingsFile: false });
  assert.deepEqual(config, {
    apiRoot: DEFAULT_API_ROOT,
    webRoot: DEFAULT_WEB_ROOT,
    apiKey: undefined,
  });
});

test("resolveConfig() prefers options over the environment over the settings file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hub-config-"));
  try {
    const settings = join(dir, "settings.json");
    await writeFile(settings, JSON.stringify({ api_key: "s".repeat(42) }));
    const env = envOf({
      ULTRALYTICS_HUB_API: "http://127.0.0.1:9/",
      ULTRALYTICS_HUB_WEB: "http://localhost:10",
      HUB_API_KEY: "e".repeat(42),
    });
    const fromEnv = await resolveConfig({ env, settingsFile: settings });
    assert.deepEqual(fromEnv, {
      apiRoot: "http://127.0.0.1:9",
      webRoot: "http://localhost:10",
      apiKey: "e".repeat(42),
    });
    const fromOptions = await resolveConfig({
      env,
      settingsFile: settings,
      apiRoot: "https://hub.example.org/api/",
      webRoot: "https://hub.example.org",
      apiKey: "o".repeat(42),
    });
    assert.equal(fromOptions.apiRoot, "https://hub.example.org/api");
    assert.equal(fromOptions.webRoot, "https://hub.example.org");
    assert.equal(fromOptions.apiKey, "o".repeat(42));
    const fromIdentifier = await resolveConfig(
      { env, apiKey: "o".repeat(42) },
      "i".repeat(42),
    );
    assert.equal(fromIdentifier.apiKey, "i".repeat(42));
    const fromSettings = await resolveConfig({
      env: envOf({}),
      settingsFile: settings,
    });
    assert.equal(fromSettings.apiKey, "s".repeat(42));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("resolveConfig() reads the key from a YAML settings file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "hub-config-"));
  try {
    const settings = join(dir, "settings.yaml");
    await writeFile(
      settings,
      `datasets_dir: /data\napi_key: ${"y".repeat(42)}\nsync: true\n`,
    );
    const config = await resolveConfig({
      env: envOf({}),
      settingsFile: settings,
    });
    assert.equal(config.apiKey, "y".repeat(42));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("resolveConfig() treats a missing settings file as no key", async () => {
  const config = await resolveConfig({
    env: envOf({}),
    settingsFile: join(tmpdir(), "does-not-exist", "settings.json"),
  });
  assert.equal(config.apiKey, undefined);
});

test("resolveConfig() ignores empty variables", async () => {
  const config = await resolveConfig({
    env: envOf({ ULTRALYTICS_HUB_API: " ", HUB_API_KEY: "" }),
    settingsFile: false,
  });
  assert.equal(config.apiRoot, DEFAULT_API_ROOT);
  assert.equal(config.apiKey, undefined);
});

test("resolveConfig() refuses a key over plain HTTP to a remote host", async () => {
  await assert.rejects(
    resolveConfig({
      apiRoot: "http://hub.example.org",
      apiKey: KEY,
      settingsFile: false,
    }),
    (error: unknown) => {
      assert.ok(error instanceof HUBConfigError);
      assert.match(error.message, /plain HTTP/);
      assert.ok(!error.message.includes(KEY));
      return true;
    },
  );
  // Without a key there is nothing to leak.
  const config = await resolveConfig({
    apiRoot: "http://hub.example.org",
    settingsFile: false,
    env: envOf({}),
  });
  assert.equal(config.apiRoot, "http://hub.example.org");
});

test("resolveConfig() rejects roots that are not http(s) URLs or carry credentials", async () => {
  for (
    const apiRoot of [
      "not a url",
      "ftp://hub.example.org",
      "https://user:pw@hub.example.org",
      "https://hub.example.org/?api_key=x",
    ]
  ) {
    await assert.rejects(
      resolveConfig({ apiRoot, settingsFile: false }),
      HUBConfigError,
      apiRoot,
    );
  }
});

test("assertSafeTransport() allows HTTPS and loopback HTTP", () => {
  assertSafeTransport("https://hub.example.org", KEY);
  assertSafeTransport("http://127.0.0.1:8080", KEY);
  assertSafeTransport("http://localhost:8080", KEY);
  assertSafeTransport("http://[::1]:8080", KEY);
  assert.throws(
    () => assertSafeTransport("http://10.0.0.1", KEY),
    HUBConfigError,
  );
  assert.throws(
    () => assertSafeTransport("http://127.0.0.1.example.org", KEY),
    HUBConfigError,
  );
});

test("isLoopback() recognises loopback hosts only", () => {
  assert.equal(isLoopback(new URL("http://127.5.6.7")), true);
  assert.equal(isLoopback(new URL("http://example.com")), false);
});

test("readEnv() returns undefined for an unset variable", () => {
  assert.equal(readEnv("HUB_SESSION_TEST_UNSET_VARIABLE"), undefined);
});
