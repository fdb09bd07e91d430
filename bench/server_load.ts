/**
 * Load on the local HUB: 20 concurrent clients (loopback only) post metrics
 * and upload files for a bounded time (default 60 s), each to its own model
 * and some also to one shared model, with small uploads and a few of 8 MiB.
 *
 * The server runs as a child process (`deno task hub --port 0 --data DIR`);
 * its RSS is sampled from `/proc/<pid>/status` (VmRSS). Afterwards the bench
 * checks that no write was lost (every acknowledged epoch is on the server
 * with its value, every model's last.pt is the last acknowledged upload) and
 * that no JSON document is corrupted (every `.json` file in the data
 * directory parses), then prints requests/s, p50/p99 latency, peak RSS and
 * errors.
 *
 * With `--live-pages N` the run is split in two halves: the first without
 * any open model page, the second with N simulated pages open on the
 * clients' models (each an event stream that re-fetches `?part=live` on
 * every update, one fetch in flight, as the page's script does), and the
 * report puts the two ingest rates side by side (`--live-pages 0` gives the
 * control: the two halves with no page at all).
 *
 * Run: `deno task load [--seconds 60] [--clients 20] [--live-pages 50]`
 *
 * @module
 */

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { HUBClient } from "../src/transport/client.ts";
import { createModelPayload } from "../src/session/session.ts";

const MiB = 1024 * 1024;
const SHARED_WRITERS = 5;
/** Epochs per client's own model, then they are sent again. */
const OWN_EPOCHS = 5000;
/** Epochs per writer of the shared model: 5 × 1000 stay under 10,000. */
const SHARED_EPOCHS = 1000;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "60" },
    clients: { type: "string", default: "20" },
    "live-pages": { type: "string" },
    // Load a running HUB (e.g. the round-robin front of the scaled mode)
    // instead of starting one on files; its RSS and files are not checked.
    target: { type: "string" },
    // Files vs 2 processes on PostgreSQL + S3, in one run (scaled_load.ts).
    scaled: { type: "boolean", default: false },
  },
});
if (values.scaled) {
  const { runScaled } = await import("./scaled_load.ts");
  await runScaled(process.argv.slice(2).filter((a) => a !== "--scaled"));
  process.exit(0);
}
const target = values.target;
/** Pages to open at half time; `--live-pages 0` measures the halves alone. */
const splitRun = values["live-pages"] !== undefined;
const livePages = Number(values["live-pages"] ?? "0");
if (!(Number.isInteger(livePages) && livePages >= 0)) {
  throw new RangeError(
    "Cannot run the load bench: --live-pages must be a non-negative integer",
  );
}
const seconds = Number(values.seconds);
const clients = Number(values.clients);
if (!(seconds > 0 && seconds <= 60) || !Number.isInteger(clients)) {
  throw new RangeError(
    "Cannot run the load bench: --seconds must be in (0, 60] and --clients an integer",
  );
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const work = await mkdtemp(join(tmpdir(), "hub-load-"));
const dataDir = join(work, "data");

// ------------------------------------------------------------ the server ---

const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
const server = target !== undefined ? undefined : spawn(
  deno?.execPath() ?? "deno",
  ["task", "hub", "--port", "0", "--data", dataDir],
  { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
);
let serverStderr = "";
server?.stderr.setEncoding("utf8");
server?.stderr.on("data", (chunk: string) => serverStderr += chunk);
const apiRoot = server === undefined
  ? target!.replace(/\/+$/, "")
  : await new Promise<string>((resolve, reject) => {
    let out = "";
    server.stdout.setEncoding("utf8");
    const onData = (chunk: string): void => {
      out += chunk;
      const match = /HUB listening on (http:\/\/\S+)/.exec(out);
      if (match !== null) {
        server.stdout.off("data", onData);
        server.stdout.resume();
        resolve(match[1] ?? "");
      }
    };
    server.stdout.on("data", onData);
    server.on(
      "exit",
      (code) =>
        reject(new Error(`The server exited (${code}): ${serverStderr}`)),
    );
  });
if (!/^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/.test(apiRoot)) {
  server?.kill("SIGTERM");
  throw new Error(`Cannot load a non-loopback server: ${apiRoot}`);
}

/** The process that serves (`deno task` runs it as a descendant). */
async function descendants(pid: number): Promise<number[]> {
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const current = stack.pop()!;
    out.push(current);
    let tasks: string[] = [];
    try {
      tasks = await readdir(`/proc/${current}/task`);
    } catch {
      continue;
    }
    for (const task of tasks) {
      try {
        const children = await readFile(
          `/proc/${current}/task/${task}/children`,
          "utf8",
        );
        for (const child of children.trim().split(/\s+/)) {
          if (child !== "") stack.push(Number(child));
        }
      } catch {
        // The task ended.
      }
    }
  }
  return out;
}

async function serverPid(): Promise<number | undefined> {
  if (server === undefined) return undefined;
  for (const pid of await descendants(server.pid ?? 0)) {
    try {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline.includes("src/cli/mod.ts")) return pid;
    } catch {
      // Gone.
    }
  }
  return undefined;
}

async function rssOf(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const match = /VmRSS:\s+(\d+) kB/.exec(status);
    return match === null ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}

const pid = await serverPid();
const rssSamples: number[] = [];
const baseline = pid === undefined ? undefined : await rssOf(pid);
const sampler = setInterval(async () => {
  if (pid === undefined) return;
  const rss = await rssOf(pid);
  if (rss !== undefined) rssSamples.push(rss);
}, 250);

// ----------------------------------------------------------- the clients ---

const small = join(work, "small.pt");
const large = join(work, "large.pt");
await writeFile(small, randomBytes(64 * 1024));
await writeFile(large, randomBytes(8 * MiB));
const fileSha = new Map<string, string>();
for (const path of [small, large]) {
  fileSha.set(
    path,
    createHash("sha256").update(await readFile(path)).digest("hex"),
  );
}

const admin = new HUBClient({ apiRoot, timeout: 60_000 });
const payload = createModelPayload("load.yaml", { data: "load", epochs: 1 });
const shared = await admin.createModel(payload);
const own: string[] = [];
for (let i = 0; i < clients; i++) own.push(await admin.createModel(payload));

const latencies: number[] = [];
/** Completion time of every successful request (for the two halves). */
const completions: number[] = [];
const errors = new Map<string, number>();
/** model id -> epoch -> value the server acknowledged. */
const acknowledged = new Map<string, Map<number, number>>();
/** model id -> sha256 of the last acknowledged upload. */
const lastUpload = new Map<string, string>();
let uploads = 0;
let uploadedBytes = 0;

function ack(model: string, epoch: number, value: number): void {
  let epochs = acknowledged.get(model);
  if (epochs === undefined) acknowledged.set(model, epochs = new Map());
  epochs.set(epoch, value);
}

async function timed<T>(
  what: string,
  fn: () => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false }> {
  const start = performance.now();
  try {
    const value = await fn();
    latencies.push(performance.now() - start);
    completions.push(performance.now());
    return { ok: true, value };
  } catch (error) {
    const key = `${what}: ${
      error instanceof Error ? error.message.slice(0, 100) : String(error)
    }`;
    errors.set(key, (errors.get(key) ?? 0) + 1);
    return { ok: false };
  }
}

function errorCount(): number {
  let total = 0;
  for (const n of errors.values()) total += n;
  return total;
}

const started = performance.now();
const deadline = started + seconds * 1000;

async function runClient(index: number): Promise<void> {
  const client = new HUBClient({ apiRoot, timeout: 60_000 });
  const model = own[index]!;
  const writesShared = index < SHARED_WRITERS;
  for (let n = 0; performance.now() < deadline; n++) {
    const value = index * 1000 + n / 7;
    // Epochs cycle within the bounds of a model (protocol/metrics_rules.ts):
    // a re-sent epoch replaces the stored one, and the last value must win.
    const own = n % OWN_EPOCHS;
    const sent = await timed(
      "metrics",
      () => client.uploadMetrics(model, { [own]: { "train/loss": value } }),
    );
    if (sent.ok) ack(model, own, value);
    if (writesShared && performance.now() < deadline) {
      // Disjoint epoch ranges, so every acknowledged value must survive.
      const epoch = index * SHARED_EPOCHS + n % SHARED_EPOCHS;
      const result = await timed(
        "shared metrics",
        () =>
          client.uploadMetrics(shared, { [epoch]: { "train/loss": value } }),
      );
      if (result.ok) ack(shared, epoch, value);
    }
    if (n % 10 === 9 && performance.now() < deadline) {
      const file = index < 4 && n % 50 === 49 ? large : small;
      const result = await timed(
        "upload",
        () => client.uploadModel(model, { epoch: n, file, type: "epoch" }),
      );
      if (result.ok) {
        uploads++;
        uploadedBytes += result.value.size;
        lastUpload.set(model, result.value.sha256);
        if (result.value.sha256 !== fileSha.get(file)) {
          const key = "upload: wrong sha256 acknowledged";
          errors.set(key, (errors.get(key) ?? 0) + 1);
        }
      }
    }
  }
}

// ------------------------------------------------- simulated live pages ---

const half = started + seconds * 500;
const pages = new AbortController();
let pageUpdates = 0;
let pageFetches = 0;
let pageBytes = 0;

/** One open model page: its event stream, and a re-fetch per update. */
async function openPage(model: string): Promise<void> {
  const signal = pages.signal;
  const response = await fetch(`${apiRoot}/models/${model}`, {
    headers: { accept: "text/html" },
    signal,
  });
  pageBytes += (await response.arrayBuffer()).byteLength;
  let fetching = false;
  let pending = false;
  const refresh = async (): Promise<void> => {
    if (fetching) {
      pending = true;
      return;
    }
    fetching = true;
    try {
      do {
        pending = false;
        const part = await fetch(`${apiRoot}/models/${model}?part=live`, {
          headers: { accept: "text/html" },
          signal,
        });
        pageBytes += (await part.arrayBuffer()).byteLength;
        pageFetches++;
      } while (pending && !signal.aborted);
    } finally {
      fetching = false;
    }
  };
  const events = await fetch(`${apiRoot}/models/${model}/events`, { signal });
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  // Deno does not always end a read of a piped body when the fetch aborts.
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), {
    once: true,
  });
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (event.startsWith("event: update")) {
        pageUpdates++;
        refresh().catch(() => {});
      }
    }
  }
}

const openPages: Promise<void>[] = [];
const pagesTimer = livePages === 0 ? undefined : setTimeout(() => {
  for (let i = 0; i < livePages; i++) {
    openPages.push(
      openPage(own[i % own.length]!).catch((error) => {
        if (pages.signal.aborted) return;
        const key = `live page: ${String(error).slice(0, 100)}`;
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }),
    );
  }
}, half - started);

await Promise.all(Array.from({ length: clients }, (_, i) => runClient(i)));
const elapsed = (performance.now() - started) / 1000;
clearTimeout(pagesTimer);
pages.abort();
await Promise.all(openPages);
clearInterval(sampler);

// ------------------------------------------------------------ the checks ---

let lost = 0;
let wrong = 0;
let checked = 0;
for (const [model, epochs] of acknowledged) {
  const stored = new Map(
    (await admin.listMetrics(model)).map((m) => [m.epoch, m.metrics]),
  );
  for (const [epoch, value] of epochs) {
    checked++;
    const got = stored.get(epoch);
    if (got === undefined) lost++;
    else if (got["train/loss"] !== value) wrong++;
  }
}
let uploadMismatch = 0;
for (const [model, sha] of lastUpload) {
  const response = await fetch(`${apiRoot}/v1/models/${model}/files/last.pt`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (createHash("sha256").update(bytes).digest("hex") !== sha) {
    uploadMismatch++;
  }
}

// Stop the serving process itself (a signal to `deno task` is not forwarded).
if (pid !== undefined) process.kill(pid, "SIGTERM");
else server?.kill("SIGTERM");
const exitCode = server === undefined
  ? null
  : await new Promise<number | null>((resolve) => {
    if (server.exitCode !== null) resolve(server.exitCode);
    else server.on("exit", (code) => resolve(code));
  });

let documents = 0;
let corrupted = 0;
const corruptedFiles: string[] = [];
async function walk(path: string): Promise<void> {
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) await walk(full);
    else if (entry.name.endsWith(".json")) {
      documents++;
      try {
        JSON.parse(await readFile(full, "utf8"));
      } catch {
        corrupted++;
        corruptedFiles.push(full);
      }
    }
  }
}
if (server !== undefined) await walk(dataDir);
let leftovers = 0;
try {
  leftovers = (await readdir(join(dataDir, "weights", ".partial"))).length;
} catch {
  // No partial-upload directory.
}

// ------------------------------------------------------------ the report ---

latencies.sort((a, b) => a - b);
const pct = (p: number): number =>
  latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ??
    NaN;
const peak = rssSamples.length > 0 ? Math.max(...rssSamples) : undefined;
const last = rssSamples.at(-1);
const mib = (bytes: number | undefined): string =>
  bytes === undefined ? "n/a" : `${(bytes / MiB).toFixed(1)} MiB`;
const totalErrors = errorCount();
const rows: Array<[string, string]> = [
  ["duration", `${elapsed.toFixed(1)} s, ${clients} clients`],
  ["requests (ok)", String(latencies.length)],
  ["requests/s", (latencies.length / elapsed).toFixed(1)],
  ["latency p50", `${pct(0.5).toFixed(1)} ms`],
  ["latency p99", `${pct(0.99).toFixed(1)} ms`],
  ["latency max", `${(latencies.at(-1) ?? NaN).toFixed(1)} ms`],
  ["uploads", `${uploads} (${(uploadedBytes / MiB).toFixed(1)} MiB)`],
  ["errors", String(totalErrors)],
  ["acknowledged epochs checked", String(checked)],
  ["lost writes", String(lost)],
  ["wrong values", String(wrong)],
  ["last.pt not the last upload", String(uploadMismatch)],
  ["JSON documents parsed", String(documents)],
  ["corrupted JSON documents", String(corrupted)],
  ["files left in tmp/", String(leftovers)],
  ["server RSS baseline", mib(baseline)],
  ["server RSS peak", mib(peak)],
  ["server RSS at end", mib(last)],
  [
    "server RSS at 25/50/75 % of the run",
    [0.25, 0.5, 0.75].map((q) =>
      mib(rssSamples[Math.floor(rssSamples.length * q)])
    ).join(" / "),
  ],
  ["RSS samples", String(rssSamples.length)],
  ["server exit code (SIGTERM)", String(exitCode)],
];
if (splitRun) {
  // Skip the first second of each half: the pages open at the half.
  const rate = (from: number, to: number): number =>
    completions.filter((t) => t >= from && t < to).length /
    ((to - from) / 1000);
  const without = rate(started + 1000, half);
  const withPages = rate(half + 1000, deadline);
  rows.push(
    ["ingest requests/s, no page open", without.toFixed(1)],
    [`ingest requests/s, ${livePages} live pages open`, withPages.toFixed(1)],
    ["ratio (with pages / without)", (withPages / without).toFixed(2)],
    [
      "live pages: updates / part fetches / MiB read",
      `${pageUpdates} / ${pageFetches} / ${(pageBytes / MiB).toFixed(1)}`,
    ],
  );
}
const width = Math.max(...rows.map(([k]) => k.length));
console.log(`\nLocal HUB under load (${apiRoot})\n`);
for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
for (const [k, n] of errors) console.log(`error x${n}: ${k}`);
for (const file of corruptedFiles) console.log(`corrupted: ${file}`);
const serverLines = serverStderr.split("\n").filter((line) =>
  line.trim() !== "" && !line.includes("Task") // deno task's own banner
);
if (serverLines.length > 0) {
  console.log(`server stderr (${serverLines.length} lines, last 10):`);
  console.log(serverLines.slice(-10).join("\n"));
}
await rm(work, { recursive: true, force: true });
