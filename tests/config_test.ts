import { test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "@std/assert";
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
  assertEquals(config, {
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
    assertEquals(fromEnv, {
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
    assertEquals(fromOptions.apiRoot, "https://hub.example.org/api");
    assertEquals(fromOptions.webRoot, "https://hub.example.org");
    assertEquals(fromOptions.apiKey, "o".repeat(42));
    const fromIdentifier = await resolveConfig(
      { env, apiKey: "o".repeat(42) },
      "i".repeat(42),
    );
    assertEquals(fromIdentifier.apiKey, "i".repeat(42));
    const fromSettings = await resolveConfig({
      env: envOf({}),
      settingsFile: settings,
    });
    assertEquals(fromSettings.apiKey, "s".repeat(42));
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
    assertEquals(config.apiKey, "y".repeat(42));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("resolveConfig() treats a missing settings file as no key", async () => {
  const config = await resolveConfig({
    env: envOf({}),
    settingsFile: join(tmpdir(), "does-not-exist", "settings.json"),
  });
  assertEquals(config.apiKey, undefined);
});

test("resolveConfig() ignores empty variables", async () => {
  const config = await resolveConfig({
    env: envOf({ ULTRALYTICS_HUB_API: " ", HUB_API_KEY: "" }),
    settingsFile: false,
  });
  assertEquals(config.apiRoot, DEFAULT_API_ROOT);
  assertEquals(config.apiKey, undefined);
});

test("resolveConfig() refuses a key over plain HTTP to a remote host", async () => {
  const error = await assertRejects(
    () =>
      resolveConfig({
        apiRoot: "http://hub.example.org",
        apiKey: KEY,
        settingsFile: false,
      }),
    HUBConfigError,
  );
  assertMatch(error.message, /plain HTTP/);
  assert(!error.message.includes(KEY));
  // Without a key there is nothing to leak.
  const config = await resolveConfig({
    apiRoot: "http://hub.example.org",
    settingsFile: false,
    env: envOf({}),
  });
  assertEquals(config.apiRoot, "http://hub.example.org");
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
    await assertRejects(
      () => resolveConfig({ apiRoot, settingsFile: false }),
      HUBConfigError,
      undefined,
      apiRoot,
    );
  }
});

test("assertSafeTransport() allows HTTPS and loopback HTTP", () => {
  assertSafeTransport("https://hub.example.org", KEY);
  assertSafeTransport("http://127.0.0.1:8080", KEY);
  assertSafeTransport("http://localhost:8080", KEY);
  assertSafeTransport("http://[::1]:8080", KEY);
  assertThrows(
    () => assertSafeTransport("http://10.0.0.1", KEY),
    HUBConfigError,
  );
  assertThrows(
    () => assertSafeTransport("http://127.0.0.1.example.org", KEY),
    HUBConfigError,
  );
});

test("isLoopback() recognises loopback hosts only", () => {
  assertEquals(isLoopback(new URL("http://127.5.6.7")), true);
  assertEquals(isLoopback(new URL("http://example.com")), false);
});

test("readEnv() returns undefined for an unset variable", () => {
  assertEquals(readEnv("HUB_SESSION_TEST_UNSET_VARIABLE"), undefined);
});
