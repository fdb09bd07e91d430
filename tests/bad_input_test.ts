// Bad input from every side: generated identifiers, malformed server replies
// and awkward files, each met with a typed error. Over 500 lines because it
// is a table of cases per source; shared set-up is in tests/support/.
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
  fail,
} from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { HUBClient } from "../src/transport/client.ts";
import {
  HUBConfigError,
  HUBError,
  HUBModelError,
  HUBRequestError,
} from "../src/common/errors.ts";
import { parseIdentifier } from "../src/session/identifier.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import type { SessionOptions } from "../src/session/options.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import type { Logger } from "../src/protocol/types.ts";
import { captureLogger, startTestHub, type TestHub } from "./support/common.ts";
import { localSessionOptions, newModel } from "./support/session.ts";

// ------------------------------------------------- unhandled rejections ---

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};
const onUnhandledEvent = (event: Event): void => {
  unhandled.push((event as PromiseRejectionEvent).reason);
  event.preventDefault();
};
process.on("unhandledRejection", onUnhandled);
const target = globalThis as {
  addEventListener?: (type: string, listener: (e: Event) => void) => void;
  removeEventListener?: (type: string, listener: (e: Event) => void) => void;
};
target.addEventListener?.("unhandledrejection", onUnhandledEvent);

let testHub: TestHub;
let dir: string;
let hub: TestHub["hub"];
let client: HUBClient;

before(async () => {
  testHub = await startTestHub("hub-bad-input-test-");
  ({ dir, hub, client } = testHub);
});

after(async () => {
  process.off("unhandledRejection", onUnhandled);
  target.removeEventListener?.("unhandledrejection", onUnhandledEvent);
  await testHub.close();
});

function assertNoUnhandled(): void {
  assertEquals(
    unhandled.map((r) => r instanceof Error ? r.message : String(r)),
    [],
    "unhandled rejections",
  );
}

function options(extra: SessionOptions = {}): SessionOptions {
  return localSessionOptions(hub.url, {
    rateLimits: { metrics: 1, ckpt: 0, heartbeat: 60_000 },
    budgets: {
      metrics: { maxAttempts: 2 },
      checkpoint: { maxAttempts: 2 },
      final: { maxAttempts: 2 },
      other: { maxAttempts: 2 },
    },
    ...extra,
  });
}

async function newModelId(): Promise<string> {
  return await newModel(client);
}

const sha256 = (bytes: Uint8Array): string =>
  createHash("sha256").update(bytes).digest("hex");

// ---------------------------------------------------------- identifiers ---

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** Seeded identifiers of every awkward kind, with a label each. */
function generateIdentifiers(
  seed: number,
  webRoot: string,
): Array<{ kind: string; value: string }> {
  const random = mulberry32(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const alnum = (n: number): string =>
    Array.from({ length: n }, () => ALNUM[int(ALNUM.length)]).join("");
  const unicode = (n: number): string =>
    Array.from({ length: n }, () => {
      const ranges = [
        [0x20, 0x7e],
        [0x00, 0x1f],
        [0xa0, 0x2fff],
        [0x1f300, 0x1faff],
        [0xd800, 0xdfff], // lone surrogates
        [0xfff0, 0xffff],
      ] as const;
      const [lo, hi] = ranges[int(ranges.length)]!;
      return String.fromCodePoint(lo + int(hi - lo + 1));
    }).join("");
  const hosts = [
    "https://evil.example.com",
    "http://hub.ultralytics.com.evil.example",
    "https://hub.ultralytics.com",
    "http://127.0.0.2:9",
    "ftp://example.com",
    "https://user:pass@example.com",
    "javascript:",
    "file://",
  ];
  const out: Array<{ kind: string; value: string }> = [];
  const add = (kind: string, value: string): void => {
    out.push({ kind, value });
  };
  add("empty", "");
  for (const ws of [" ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "  \t \n "]) {
    add("whitespace", ws);
  }
  for (let i = 0; i < 30; i++) add("unicode", unicode(1 + int(40)));
  for (let i = 0; i < 10; i++) {
    add("very long", alnum(1_000 + int(100_000)));
  }
  add("very long", `${"a".repeat(200_000)}.pt`);
  add("very long", `${webRoot}/models/${"a".repeat(50_000)}`);
  for (let i = 0; i < 30; i++) {
    const host = hosts[int(hosts.length)]!;
    const key = random() < 0.5 ? `?api_key=${alnum(42)}` : "";
    add("other host URL", `${host}/models/${alnum(20)}${key}`);
  }
  for (let i = 0; i < 30; i++) {
    const length = [0, 1, 19, 21, 41, 43, 62, 63, 64][int(9)]!;
    add("wrong length", alnum(length));
    add("wrong length", `${alnum(40 + int(5))}_${alnum(18 + int(5))}`);
  }
  for (let i = 0; i < 30; i++) {
    const key = alnum(42);
    const variants = [
      key,
      `${key}_`,
      `_${key}`,
      `${key}_${alnum(20)}_${alnum(3)}`,
      `${key}_${alnum(19)}!`,
      `${key.slice(0, 41)}-_${alnum(20)}`,
      `${key}__${alnum(20)}`,
      `${key} ${alnum(20)}`,
      `${key}_${alnum(20)}.pt\u0000`,
      `${webRoot}/models/${alnum(19)}?api_key=${key}`,
      `${webRoot}/models/${alnum(20)}?api_key=${key}x`,
      `https://evil.example.com/models/${alnum(20)}?api_key=${key}`,
      `${key}\n${alnum(20)}`,
    ];
    add("key-like", variants[int(variants.length)]!);
  }
  for (let i = 0; i < 20; i++) {
    const names = [
      `${unicode(5)}.pt`,
      ".pt",
      ".yaml",
      `dir/${alnum(5)}.yaml`,
      `${alnum(5)}.PT`,
      `${alnum(5)}.pt.exe`,
      `..${"/.."} .pt`,
      `${alnum(5)}\u0007.pt`,
    ];
    add("file-like", names[int(names.length)]!);
  }
  // A few valid ones, so that the accepted shapes are exercised too.
  for (let i = 0; i < 5; i++) {
    add("valid id", alnum(20));
    add("valid key_id", `${alnum(42)}_${alnum(20)}`);
    add("valid url", `${webRoot}/models/${alnum(20)}`);
    add("valid file", `${alnum(6)}.yaml`);
  }
  return out;
}

/** Every 42-letters-or-digits run in a string (candidate API keys). */
function keyLike(value: string): string[] {
  return value.match(/[A-Za-z0-9]{42}/g) ?? [];
}

function assertShape(kind: string, value: string, parsed: unknown): void {
  const label = `${kind} ${JSON.stringify(value.slice(0, 80))}`;
  assertEquals(typeof parsed, "object", label);
  const p = parsed as Record<string, unknown>;
  const keys = Object.keys(p).sort().join(",");
  if (keys === "modelId") {
    assertMatch(p.modelId as string, /^[A-Za-z0-9]{20}$/, label);
  } else if (keys === "apiKey,modelId") {
    assertMatch(p.modelId as string, /^[A-Za-z0-9]{20}$/, label);
    assertMatch(p.apiKey as string, /^[A-Za-z0-9]{42}$/, label);
  } else if (keys === "filename") {
    assertMatch(p.filename as string, /\.(pt|yaml)$/, label);
    const name = p.filename as string;
    assertEquals(
      [...name].some((c) => c.charCodeAt(0) < 0x20 || c === "\u007f"),
      false,
      label,
    );
  } else {
    fail(`${label} parsed to an undocumented shape: ${keys}`);
  }
}

function assertTypedAndClean(
  kind: string,
  value: string,
  error: unknown,
): void {
  const label = `${kind} ${JSON.stringify(value.slice(0, 80))}`;
  assert(
    error instanceof HUBModelError || error instanceof TypeError ||
      error instanceof HUBConfigError,
    `${label} threw ${
      error instanceof Error ? error.constructor.name : typeof error
    }: ${String(error)}`,
  );
  for (const key of keyLike(value)) {
    assertEquals(
      (error as Error).message.includes(key),
      false,
      `${label}: the message echoes a key-like string`,
    );
  }
}

describe("generated identifiers", () => {
  const webRoot = "http://127.0.0.1:8765";
  const identifiers = generateIdentifiers(20_240_601, webRoot);

  test("at least 200 are generated, of every kind", () => {
    assert(identifiers.length >= 200, `${identifiers.length} identifiers`);
    const kinds = new Set(identifiers.map((i) => i.kind));
    for (
      const kind of [
        "empty",
        "whitespace",
        "unicode",
        "very long",
        "other host URL",
        "wrong length",
        "key-like",
      ]
    ) {
      assert(kinds.has(kind), kind);
    }
  });

  test("each parses to a documented shape or throws HUBModelError or TypeError without echoing a key", () => {
    let parsed = 0;
    let refused = 0;
    for (const { kind, value } of identifiers) {
      let result: unknown;
      try {
        result = parseIdentifier(value, { webRoot });
      } catch (error) {
        assert(
          error instanceof HUBModelError || error instanceof TypeError,
          `${kind} ${JSON.stringify(value.slice(0, 80))} threw ${
            String(error)
          }`,
        );
        assertTypedAndClean(kind, value, error);
        refused++;
        continue;
      }
      assertShape(kind, value, result);
      parsed++;
    }
    assert(parsed >= 20 && refused >= 150, `${parsed} / ${refused}`);
  });

  test("non-strings are refused with a TypeError", () => {
    for (const value of [undefined, null, 42, {}, [], Symbol("x")]) {
      assertThrows(
        () => parseIdentifier(value as unknown as string),
        TypeError,
      );
    }
  });

  test("each opens a session or fails with a typed error, and no log line or message holds a key", async () => {
    // A server that knows no model: ids end in 404, files open a session.
    const fetchFn = (() =>
      Promise.resolve(
        Response.json({ success: false, message: "Model not found" }, {
          status: 404,
        }),
      )) as unknown as typeof fetch;
    for (const { kind, value } of identifiers) {
      const logger = captureLogger();
      try {
        const session = await HUBTrainingSession.create(
          value,
          options({ apiRoot: webRoot, webRoot, fetch: fetchFn, logger }),
        );
        assert(session.filename !== undefined, `${kind} opened a session`);
        await session.close();
      } catch (error) {
        assertTypedAndClean(kind, value, error);
      }
      for (const key of keyLike(value)) {
        assertEquals(
          logger.lines.some((line) => line.includes(key)),
          false,
          `${kind}: a log line holds a key`,
        );
      }
    }
  });
});

// -------------------------------------------------- malformed replies ---

interface BadReply {
  name: string;
  reply: () => Response;
}

const BAD_REPLIES: BadReply[] = [
  {
    name: "an HTML page with 200",
    reply: () =>
      new Response("<!doctype html><html><body>Welcome</body></html>", {
        status: 200,
        headers: { "content-type": "text/html" },
      }),
  },
  {
    name: "truncated JSON",
    reply: () =>
      new Response('{"success": true, "data": {"id": "abc', {
        status: 200,
        headers: { "content-type": "application/json" },
      }),
  },
  {
    name: "success false with 200",
    reply: () =>
      Response.json({ success: false, message: "Quota exceeded" }, {
        status: 200,
      }),
  },
  {
    name: "a 10 MB body",
    reply: () =>
      new Response("x".repeat(10 * 1024 * 1024), {
        status: 200,
        headers: { "content-type": "application/json" },
      }),
  },
  {
    name: "a wrong content type",
    reply: () =>
      new Response("OK", {
        status: 200,
        headers: { "content-type": "text/plain" },
      }),
  },
  {
    name: "an envelope without data",
    reply: () => Response.json({ success: true, message: "done" }),
  },
  {
    name: "JSON that is not an envelope",
    reply: () => Response.json([1, 2, 3]),
  },
];

describe("malformed server replies", () => {
  let file: string;
  before(async () => {
    file = join(dir, "reply.pt");
    await writeFile(file, randomBytes(1_000));
  });

  for (const bad of BAD_REPLIES) {
    test(`client methods that need data throw a non-retriable HUBRequestError on ${bad.name}`, async () => {
      const fetchFn = ((_input: RequestInfo | URL, init?: RequestInit) => {
        // Consume an upload body, as a server would.
        const body = init?.body;
        if (body instanceof ReadableStream) {
          return new Response(body).arrayBuffer().then(() => bad.reply());
        }
        return Promise.resolve(bad.reply());
      }) as unknown as typeof fetch;
      const c = new HUBClient({ apiRoot: hub.url, fetch: fetchFn });
      const id = "AbCdEfGhIj0123456789";
      const calls: Array<[string, () => Promise<unknown>]> = [
        ["getModel", () => c.getModel(id)],
        [
          "createModel",
          () => c.createModel(createModelPayload("a.yaml", { data: "d" })),
        ],
        ["listMetrics", () => c.listMetrics(id)],
        ["heartbeat", () => c.heartbeat(id, { agentId: null })],
        [
          "uploadModel",
          () => c.uploadModel(id, { epoch: 1, file, type: "epoch" }),
        ],
      ];
      for (const [name, call] of calls) {
        const error = await assertRejects(
          () => call(),
          HUBRequestError,
          undefined,
          name,
        );
        assertEquals(error.retriable, false, name);
        assert(error.message.length > 0, name);
      }
      // Calls that need no data either resolve or throw the same typed error.
      for (
        const [name, call] of [
          ["uploadMetrics", () => c.uploadMetrics(id, { "0": { a: 1 } })],
          ["updateModel", () => c.updateModel(id, { a: 1 })],
        ] as Array<[string, () => Promise<unknown>]>
      ) {
        try {
          await call();
          assert(
            bad.name === "an envelope without data",
            `${name} accepted ${bad.name}`,
          );
        } catch (error) {
          assert(
            error instanceof HUBRequestError && !error.retriable,
            `${name}: ${String(error)}`,
          );
        }
      }
    });
  }

  test("a session whose server answers HTML with 200 fails to open with a HUBRequestError and does not go offline", async () => {
    const fetchFn = (() =>
      Promise.resolve(
        new Response("<html>login</html>", {
          headers: { "content-type": "text/html" },
        }),
      )) as unknown as typeof fetch;
    await assertRejects(
      () =>
        HUBTrainingSession.create(
          "AbCdEfGhIj0123456789",
          options({ fetch: fetchFn, journal: join(dir, "unused-journal") }),
        ),
      HUBRequestError,
    );
  });

  for (const bad of BAD_REPLIES) {
    test(`a session keeps metrics queued, reports a failed checkpoint and rejects the final upload on ${bad.name}`, async () => {
      const id = await newModelId();
      let broken = false;
      const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
        if (!broken) return await fetch(input, init);
        const body = init?.body;
        if (body instanceof ReadableStream) {
          await new Response(body).arrayBuffer();
        }
        return bad.reply();
      }) as typeof fetch;
      const logger = captureLogger();
      const session = await HUBTrainingSession.create(
        id,
        options({ fetch: fetchFn, logger }),
      );
      broken = true;
      session.queueMetrics(0, { "train/loss": 1 });
      const metrics = await session.uploadMetrics();
      const checkpoint = await session.uploadModel(0, file);
      let finalError: unknown;
      try {
        await session.uploadModel(0, file, { final: true });
      } catch (error) {
        finalError = error;
      }
      const report = await session.close();
      if (bad.name === "an envelope without data") {
        // Metrics need no data: the upload counts as acknowledged.
        assertEquals(metrics.sent, [0]);
      } else {
        assert(metrics.error instanceof HUBRequestError);
        assertEquals(metrics.sent, []);
        assertEquals(report.pendingEpochs, [0]);
        assert(
          logger.lines.some((l) =>
            l.startsWith("warn") && l.includes("not delivered")
          ),
          logger.lines.join("\n"),
        );
      }
      assertEquals(checkpoint.status, "failed");
      if (checkpoint.status === "failed") {
        assert(checkpoint.error instanceof HUBRequestError);
      }
      assert(finalError instanceof HUBRequestError, String(finalError));
      assertEquals(report.failedUploads.length, 1);
    });
  }
});

// ------------------------------------------------------- awkward files ---

describe("awkward files", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(dir, "files-"));
  });

  async function open(logger: Logger = captureLogger()) {
    const id = await newModelId();
    return await HUBTrainingSession.create(id, options({ logger }));
  }

  test("a missing file: the checkpoint is skipped with a warning, the final upload throws a HUBError", async () => {
    const logger = captureLogger();
    const session = await open(logger);
    try {
      const missing = join(work, "missing", "last.pt");
      const outcome = await session.uploadModel(1, missing);
      assertEquals(outcome, {
        status: "skipped",
        epoch: 1,
        reason: "missing-file",
      });
      assert(logger.lines.some((l) => l.startsWith("warn")));
      await assertRejects(
        () =>
          session.uploadModel(1, join(work, "missing", "best.pt"), {
            final: true,
          }),
        HUBError,
      );
    } finally {
      await session.close();
    }
  });

  test("a directory: the checkpoint is skipped, the final upload throws a HUBError", async () => {
    const session = await open();
    try {
      const folder = join(work, "folder.pt");
      await mkdir(folder, { recursive: true });
      const outcome = await session.uploadModel(1, folder);
      assertEquals(outcome.status, "skipped");
      await assertRejects(
        () => session.uploadModel(1, folder, { final: true }),
        HUBError,
      );
    } finally {
      await session.close();
    }
  });

  test("a 0-byte file is uploaded as 0 bytes, or refused with a typed error", async () => {
    const session = await open();
    try {
      const empty = join(work, "empty.pt");
      await writeFile(empty, new Uint8Array(0));
      const outcome = await session.uploadModel(1, empty);
      if (outcome.status === "uploaded") {
        assertEquals(outcome.size, 0);
        assertEquals(outcome.sha256, sha256(new Uint8Array(0)));
      } else {
        assertEquals(outcome.status, "failed");
      }
      try {
        const final = await session.uploadModel(1, empty, { final: true });
        assertEquals(final.size, 0);
      } catch (error) {
        assert(error instanceof HUBError, String(error));
      }
    } finally {
      await session.close();
    }
  });

  const isRoot = process.getuid?.() === 0;
  test(
    `an unreadable file (chmod 000): the checkpoint is skipped, the final upload throws a HUBError${
      isRoot
        ? " (running as root: the file stays readable, so the test asserts that both uploads succeed)"
        : ""
    }`,
    async () => {
      const session = await open();
      const locked = join(work, "locked.pt");
      await writeFile(locked, randomBytes(100));
      await chmod(locked, 0o000);
      try {
        let readable = true;
        try {
          await readFile(locked);
        } catch {
          readable = false;
        }
        const outcome = await session.uploadModel(1, locked);
        let finalError: unknown;
        try {
          await session.uploadModel(1, locked, { final: true });
        } catch (error) {
          finalError = error;
        }
        if (!readable) {
          assertEquals(outcome.status, "skipped");
          assert(finalError instanceof HUBError, String(finalError));
          assertMatch((finalError as Error).message, /permission|read/i);
        } else {
          // Root reads anything: the uploads simply succeed.
          assertEquals(outcome.status, "uploaded");
          assertEquals(finalError, undefined);
        }
      } finally {
        await chmod(locked, 0o600);
        await session.close();
      }
    },
  );

  test("a checkpoint the trainer rewrites during its upload is sent as it was when submitted", async () => {
    const original = randomBytes(300_000);
    const ckpt = join(work, "growing.pt");
    await writeFile(ckpt, original);
    const id = await newModelId();
    const session = await HUBTrainingSession.create(id, options());
    try {
      const outcome = session.uploadModel(1, ckpt);
      await writeFile(ckpt, randomBytes(900_000));
      const result = await outcome;
      assertEquals(result.status, "uploaded");
      if (result.status === "uploaded") {
        assertEquals(result.sha256, sha256(original));
      }
    } finally {
      await session.close();
    }
  });

  test("a final weights file that shrinks during its upload ends in a HUBError", async () => {
    const weights = join(work, "shrinking.pt");
    await writeFile(weights, randomBytes(4 * 1024 * 1024));
    const id = await newModelId();
    let shrunk = false;
    const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (!shrunk && init?.body instanceof ReadableStream) {
        shrunk = true;
        await truncate(weights, 1_000);
      }
      return await fetch(input, init);
    }) as typeof fetch;
    const session = await HUBTrainingSession.create(
      id,
      options({ fetch: fetchFn }),
    );
    try {
      await assertRejects(
        () => session.uploadModel(1, weights, { final: true }),
        HUBError,
      );
    } finally {
      await session.close();
    }
  });

  test("a final weights file that grows during its upload is stored whole or refused with a HUBError", async () => {
    const weights = join(work, "growing-final.pt");
    const first = randomBytes(2 * 1024 * 1024);
    await writeFile(weights, first);
    const id = await newModelId();
    let grown = false;
    const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (!grown && init?.body instanceof ReadableStream) {
        grown = true;
        await writeFile(weights, randomBytes(1_000), { flag: "a" });
      }
      return await fetch(input, init);
    }) as typeof fetch;
    const session = await HUBTrainingSession.create(
      id,
      options({ fetch: fetchFn }),
    );
    try {
      const result = await session.uploadModel(1, weights, { final: true });
      // What the server stored is what the result says: a consistent file.
      const stored = new Uint8Array(
        await (await fetch(`${hub.url}/v1/models/${id}/files/best.pt`))
          .arrayBuffer(),
      );
      assertEquals(stored.byteLength, result.size);
      assertEquals(sha256(stored), result.sha256);
    } catch (error) {
      assert(error instanceof HUBError, String(error));
    } finally {
      await session.close();
    }
  });
});

test("no promise rejection went unhandled", async () => {
  // Let rejections of the tests above surface.
  await new Promise((resolve) => setTimeout(resolve, 20));
  assertNoUnhandled();
});
