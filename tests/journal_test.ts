import { after, before, describe, test } from "node:test";
import { assert, assertEquals } from "@std/assert";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { HUBClient } from "../src/transport/client.ts";
import {
  deferredWeightsIn,
  journalDir,
  MetricsJournal,
} from "../src/session/journal.ts";
import type { SessionOptions } from "../src/session/options.ts";
import { HUBTrainingSession } from "../src/session/session.ts";
import { syncJournal } from "../src/session/sync.ts";
import type { StoredEpochMetrics } from "../src/protocol/types.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { startTestHub, type TestHub } from "./support/common.ts";
import { localSessionOptions, newModel } from "./support/session.ts";

let testHub: TestHub;
let dir: string;
let hub: TestHub["hub"];
let client: HUBClient;

before(async () => {
  testHub = await startTestHub("hub-journal-test-");
  ({ dir, hub, client } = testHub);
});

after(async () => {
  await testHub.close();
});

let journals = 0;
/** A fresh journal root in the test's temp dir (never the real cache dir). */
async function journalRoot(): Promise<string> {
  const root = join(dir, `journal-${++journals}`);
  await mkdir(root, { recursive: true });
  return root;
}

function options(extra: SessionOptions = {}): SessionOptions {
  return localSessionOptions(hub.url, {
    rateLimits: { metrics: 1, ckpt: 0, heartbeat: 60_000 },
    ...extra,
  });
}

async function newModelId(): Promise<string> {
  return await newModel(client);
}

const sha256 = (bytes: Uint8Array): string =>
  createHash("sha256").update(bytes).digest("hex");

async function fileSha(apiRoot: string, id: string, name: string) {
  const response = await fetch(`${apiRoot}/v1/models/${id}/files/${name}`);
  if (!response.ok) {
    await response.body?.cancel();
    return `missing (${response.status})`;
  }
  return sha256(new Uint8Array(await response.arrayBuffer()));
}

function byEpoch(stored: StoredEpochMetrics[]): Map<number, unknown> {
  return new Map(stored.map((s) => [s.epoch, s.metrics]));
}

/** A fetch that fails the test if the session touches the network. */
function noNetwork(): { fetch: typeof fetch; calls: string[] } {
  const calls: string[] = [];
  const fetchFn = (input: RequestInfo | URL): Promise<Response> => {
    calls.push(String(input instanceof Request ? input.url : input));
    return Promise.reject(new TypeError("network call in an offline test"));
  };
  return { fetch: fetchFn as typeof fetch, calls };
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const isDeno = (globalThis as { Deno?: unknown }).Deno !== undefined;
const childFile = fileURLToPath(
  new URL("./fixtures/journal_child.ts", import.meta.url),
);

/**
 * Runs the journal child until it reported `stopAfter` epochs, then kills it
 * with SIGKILL; resolves with the epochs it reported.
 */
function trainAndKill(
  apiRoot: string,
  modelId: string,
  journal: string,
  stopAfter: number,
): Promise<{ epochs: number[]; signal: string | null }> {
  const args = isDeno
    ? ["run", "-A", childFile, apiRoot, modelId, journal]
    : [childFile, apiRoot, modelId, journal];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const epochs: number[] = [];
    let buffered = "";
    let stderr = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const match = /^epoch (\d+)$/.exec(line);
        if (match !== null) epochs.push(Number(match[1]));
      }
      if (epochs.length >= stopAfter && child.exitCode === null) {
        child.kill("SIGKILL");
      }
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => stderr += chunk);
    const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", (error) => {
      clearTimeout(guard);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(guard);
      if (epochs.length < stopAfter) {
        reject(
          new Error(
            `The child exited (code ${code}, ${signal}) after ${epochs.length} epochs: ${stderr}`,
          ),
        );
      } else resolve({ epochs, signal });
    });
  });
}

describe("a trainer killed with SIGKILL", () => {
  test("a new session on the same model and journal delivers every epoch the child reported", async () => {
    const id = await newModelId();
    const root = await journalRoot();
    const { epochs, signal } = await trainAndKill(hub.url, id, root, 25);
    assertEquals(signal, "SIGKILL");
    assert(epochs.length >= 25);
    // The one-hour rate limit kept most epochs from the server.
    const before = byEpoch(await client.listMetrics(id));
    const missing = epochs.filter((e) => !before.has(e));
    assert(
      missing.length >= 20,
      `expected the kill to leave epochs undelivered, ${missing.length} were`,
    );

    const session = await HUBTrainingSession.create(
      id,
      options({ journal: root }),
    );
    assert(session.pendingEpochs.length >= missing.length);
    const report = await session.close();
    assertEquals(report.pendingEpochs, []);

    const stored = byEpoch(await client.listMetrics(id));
    const lost = epochs.filter((e) => !stored.has(e));
    assertEquals(lost, [], "epochs lost");
    for (const epoch of epochs) {
      assertEquals(stored.get(epoch), {
        "train/loss": 1 / (epoch + 1),
        epoch,
      });
    }
    // Fully delivered: the model's journal is removed.
    assertEquals(existsSync(journalDir(root, hub.url, id)), false);
  });
});

describe("offline, then sync", () => {
  test("an offline session journals metrics, a checkpoint and the final weights without network calls, and syncJournal() delivers them once", async () => {
    const id = await newModelId();
    const root = await journalRoot();
    const { fetch, calls } = noNetwork();
    const work = await mkdtemp(join(dir, "weights-"));
    const last = join(work, "last.pt");
    const best = join(work, "best.pt");
    const lastBytes = randomBytes(50_000);
    const bestBytes = randomBytes(70_000);
    await writeFile(last, lastBytes);
    await writeFile(best, bestBytes);

    const session = await HUBTrainingSession.create(
      id,
      options({ journal: root, offline: true, fetch }),
    );
    assertEquals(session.offline, true);
    for (let epoch = 0; epoch < 5; epoch++) {
      session.queueMetrics(epoch, { "train/loss": 10 - epoch });
    }
    const checkpoint = await session.uploadModel(3, last, { isBest: true });
    assertEquals(checkpoint.status, "deferred");
    // The trainer overwrites its checkpoint at once: the journal kept a copy.
    await writeFile(last, randomBytes(10));
    const final = await session.uploadModel(4, best, { final: true, map: 0.7 });
    assertEquals(final.deferred, true);
    assertEquals(final.sha256, sha256(bestBytes));
    const report = await session.close();
    assertEquals(report.pendingEpochs, [0, 1, 2, 3, 4]);
    assertEquals(calls, [], "offline session made network calls");
    assertEquals(await client.listMetrics(id), []);

    const sync = {
      apiRoot: hub.url,
      journal: root,
      modelId: id,
      settingsFile: false as const,
      env: () => undefined,
      logger: "quiet" as const,
      backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
    };
    const [first] = await syncJournal(sync);
    assertEquals(first?.epochs, [0, 1, 2, 3, 4]);
    assertEquals(first?.pendingEpochs, []);
    assertEquals(first?.weights, ["checkpoint", "final"]);
    assertEquals(first?.errors, []);
    const metrics = await client.listMetrics(id);
    assertEquals(
      metrics.map((m) => [m.epoch, m.metrics["train/loss"]]),
      [[0, 10], [1, 9], [2, 8], [3, 7], [4, 6]],
    );
    const lastSha = await fileSha(hub.url, id, "last.pt");
    const bestSha = await fileSha(hub.url, id, "best.pt");
    assertEquals(lastSha, sha256(lastBytes));
    assertEquals(bestSha, sha256(bestBytes));
    const model = await client.getModel(id);

    // Nothing is left for that model: no report, and nothing changes.
    const second = await syncJournal(sync);
    assertEquals(second, []);
    assertEquals(await client.listMetrics(id), metrics);
    assertEquals(await fileSha(hub.url, id, "last.pt"), lastSha);
    assertEquals(await fileSha(hub.url, id, "best.pt"), bestSha);
    assertEquals(await client.getModel(id), model);
  });

  test("a session whose server is unreachable at open goes offline and journals everything", async () => {
    const id = await newModelId();
    const root = await journalRoot();
    const apiRoot = `http://127.0.0.1:${await closedPort()}`;
    const work = await mkdtemp(join(dir, "weights-"));
    const last = join(work, "last.pt");
    const best = join(work, "best.pt");
    await writeFile(last, randomBytes(1_000));
    await writeFile(best, randomBytes(2_000));
    const warnings: string[] = [];
    const session = await HUBTrainingSession.create(
      id,
      options({
        apiRoot,
        webRoot: apiRoot,
        journal: root,
        budgets: { other: { maxAttempts: 1 } },
        logger: { info() {}, warn: (m) => warnings.push(m), error() {} },
      }),
    );
    assertEquals(session.offline, true);
    assert(warnings.some((w) => w.includes("working offline")));
    session.queueMetrics(0, { "train/loss": 1 });
    session.queueMetrics(1, { "train/loss": 0.5 });
    assertEquals((await session.uploadModel(1, last)).status, "deferred");
    assertEquals(
      (await session.uploadModel(1, best, { final: true })).deferred,
      true,
    );
    const report = await session.close();
    assertEquals(report.pendingEpochs, [0, 1]);
    const journal = MetricsJournal.open(journalDir(root, apiRoot, id));
    try {
      assertEquals([...journal.unacknowledged.keys()], [0, 1]);
      assertEquals(
        deferredWeightsIn(journal.dir).map((w) => w.kind),
        ["checkpoint", "final"],
      );
    } finally {
      await journal.close();
    }
  });

  test("a session that finds the server down at open delivers through syncJournal() once it is back", async () => {
    const id = await newModelId();
    const root = await journalRoot();
    const proxy = await startFaultProxy({ upstream: hub.url });
    try {
      proxy.setOutage(true);
      const session = await HUBTrainingSession.create(
        id,
        options({
          apiRoot: proxy.url,
          webRoot: proxy.url,
          journal: root,
          budgets: { other: { maxAttempts: 1 } },
        }),
      );
      assertEquals(session.offline, true);
      session.queueMetrics(0, { "train/loss": 3 });
      session.queueMetrics(1, { "train/loss": 2 });
      await session.close();
      proxy.setOutage(false);
      const sync = {
        apiRoot: proxy.url,
        journal: root,
        settingsFile: false as const,
        env: () => undefined,
        logger: "quiet" as const,
        backoff: { minTimeout: 1, maxTimeout: 5, jitter: 0 },
      };
      const first = await syncJournal(sync);
      assertEquals(first.map((r) => [r.modelId, r.epochs]), [[id, [0, 1]]]);
      const second = await syncJournal(sync);
      assertEquals(second, []);
      assertEquals(
        (await client.listMetrics(id)).map((m) => m.epoch),
        [0, 1],
      );
    } finally {
      await proxy.close();
    }
  });
});

describe("a torn journal", () => {
  async function tornJournal(): Promise<string> {
    const jdir = join(await journalRoot(), "model");
    await mkdir(jdir, { recursive: true });
    await writeFile(
      join(jdir, "metrics.jsonl"),
      [
        JSON.stringify({ t: "m", s: 1, e: 0, m: { "train/loss": 1 } }),
        JSON.stringify({ t: "m", s: 2, e: 1, m: { "train/loss": 0.5 } }),
        JSON.stringify({ t: "a", s: [1] }),
        // A crash in the middle of writing epoch 2: no newline, cut JSON.
        '{"t":"m","s":3,"e":2,"m":{"train/lo',
      ].join("\n"),
    );
    return jdir;
  }

  test("a torn last line in metrics.jsonl is ignored", async () => {
    const jdir = await tornJournal();
    const journal = MetricsJournal.open(jdir);
    try {
      assertEquals([...journal.unacknowledged.keys()], [1]);
      assertEquals(journal.unacknowledged.get(1)?.metrics, {
        "train/loss": 0.5,
      });
    } finally {
      await journal.close();
    }
  });

  test("an epoch appended after a torn last line survives the next reopen", async () => {
    const jdir = await tornJournal();
    const journal = MetricsJournal.open(jdir);
    journal.append(7, { "train/loss": 0.1 });
    await journal.close();
    const again = MetricsJournal.open(jdir);
    try {
      assertEquals(
        [...again.unacknowledged.keys()],
        [1, 7],
        `metrics.jsonl:\n${await readFile(
          join(jdir, "metrics.jsonl"),
          "utf8",
        )}`,
      );
    } finally {
      await again.close();
    }
  });
});
