/**
 * Chaos run: a training of `--epochs` (default 500) epochs through a
 * {@linkcode HUBTrainingSession} whose server is the fault proxy in front of
 * the local HUB (30 % of requests faulted over every fault kind, plus two
 * 10 s outages during training), with checkpoints and a 64 MiB final upload.
 *
 * The training runs in a child process (Deno or Bun); this parent hosts the
 * HUB and the proxy, measures the time from the end of training (a timestamp
 * the child prints) to the child's exit, then reads the server directly (not
 * through the proxy) and prints one table: epochs on the server / epochs
 * trained, final sha256 match, checkpoint outcomes, retries by status, and
 * the seconds from the end of training to exit. Targets: 100 %, match,
 * exit <= 10 s.
 *
 * With `--mode platform` the same run reports through the Ultralytics
 * Platform transport (`ul://chaos/bench/run`, events, upload URLs and signed
 * `PUT`s) to the local HUB's Platform endpoints, through the same proxy;
 * `--mode both` runs both protocols side by side.
 *
 * Run: `deno task chaos [--seed N] [--runtime deno|bun|both] [--epochs N]
 * [--mode hub|platform|both]`
 *
 * @module
 */

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { sha256File } from "../src/common/hash.ts";
import { parseArgs } from "node:util";

const MiB = 1024 * 1024;
const FINAL_BYTES = 64 * MiB;
/** Target duration of one epoch (TinyTrainer's ~15 ms padded with a sleep). */
const EPOCH_MS = 70;
const OUTAGE_MS = 10_000;
/** A well-formed Platform key: the bench's HUB is open, any key passes. */
const PLATFORM_KEY = "ul_" + "0".repeat(40);

interface ChildResult {
  epochsTrained: number;
  checkpoints: Record<string, number>;
  retries: Record<string, number>;
  pendingEpochs: number[];
  failedUploads: number;
  settled: boolean;
  finalSha256: string;
  finalError?: string;
  warnings: number;
}

interface RunFigures {
  runtime: string;
  mode: string;
  epochsOnServer: number;
  epochsTrained: number;
  wrongValues: number;
  shaMatch: boolean;
  ckptOk: number;
  ckptFailed: number;
  ckptOther: string;
  sessionRetries: string;
  proxyFaults: string;
  proxyRequests: number;
  sessionErrors: string;
  serverErrors: number;
  exitSeconds: number | undefined;
  queuedAtEnd: number | undefined;
  drainedSeconds: number | undefined;
  finalSeconds: number | undefined;
  closedSeconds: number | undefined;
  checkpointsSeconds: number | undefined;
  metricsRequests: number;
  exitCode: number | null;
  notes: string[];
}

function formatCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts).filter(([, n]) => n > 0).sort();
  return entries.length === 0
    ? "none"
    : entries.map(([k, n]) => `${k}:${n}`).join(" ");
}

// ---------------------------------------------------------------- child ---

async function child(
  apiRoot: string,
  modelId: string,
  epochs: number,
  dir: string,
): Promise<void> {
  const { HUBTrainingSession } = await import("../src/session/session.ts");
  const { TinyTrainer } = await import("../src/demo/trainer.ts");
  const retries: Record<string, number> = {};
  let warnings = 0;
  const logger = {
    info: (_: string) => {},
    warn: (message: string) => {
      warnings++;
      const retry = /failed \((.*?)\): retrying in/.exec(message);
      if (retry !== null) {
        const what = retry[1] ?? "";
        const status = /^HTTP (\d+)/.exec(what)?.[1];
        const key = status ??
          (what.startsWith("network error") ? "network" : "timeout/other");
        retries[key] = (retries[key] ?? 0) + 1;
      }
    },
    error: (message: string) => {
      console.error(`session error: ${message}`);
    },
  };
  // The final weights exist before training ends (written now so that their
  // generation does not count in the time after training).
  const finalPath = join(dir, "best.pt");
  await writeFile(finalPath, randomBytes(FINAL_BYTES));
  const platform = modelId === "platform";
  const session = await HUBTrainingSession.create(
    platform ? "ul://chaos/bench/run" : modelId,
    {
      apiRoot,
      webRoot: apiRoot,
      platformUrl: apiRoot,
      apiKey: platform ? PLATFORM_KEY : undefined,
      settingsFile: false,
      env: () => undefined,
      logger,
      journal: join(dir, "journal"),
      rateLimits: { metrics: 50, ckpt: 1_000, heartbeat: 2_000 },
      timeout: 5_000,
      budgets: { metrics: { attemptTimeout: 5_000 } },
      backoff: { minTimeout: 250, maxTimeout: 4_000 },
    },
  );
  if (platform) {
    // training_started: the run (and its model id) exists from here on.
    const id = await session.createModel({ data: "two-spirals", epochs });
    console.log(`MODEL ${id}`);
  }
  const trainer = new TinyTrainer({ epochs, seed: 7 });
  const sent: Record<string, Record<string, number>> = {};
  const outcomes: Promise<{ status: string }>[] = [];
  const ckptPath = join(dir, "last.pt");
  for (let epoch = 0; epoch < epochs; epoch++) {
    const started = performance.now();
    const result = await trainer.trainEpoch();
    session.queueMetrics(result.epoch, result.metrics);
    sent[result.epoch] = result.metrics;
    if (epoch % 5 === 4) {
      await trainer.save(ckptPath);
      outcomes.push(
        session.uploadModel(result.epoch, ckptPath, { isBest: result.isBest }),
      );
    }
    const rest = EPOCH_MS - (performance.now() - started);
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  }
  await writeFile(join(dir, "sent.json"), JSON.stringify(sent));
  console.log(`TRAINING_END ${Date.now()}`);
  // Where the time after training goes: the backlog left (by the outages
  // and faults), when the server has acknowledged every epoch, when the
  // final weights are stored, when the session is closed.
  console.log(`QUEUED_AT_END ${session.pendingEpochs.length}`);
  const drained = setInterval(() => {
    if (session.pendingEpochs.length > 0) return;
    console.log(`METRICS_DRAINED ${Date.now()}`);
    clearInterval(drained);
  }, 20);
  let finalSha256 = "";
  let finalError: string | undefined;
  try {
    const final = await session.uploadModel(epochs - 1, finalPath, {
      final: true,
      map: 0.5,
      onProgress: () => {},
    });
    finalSha256 = final.sha256;
  } catch (error) {
    finalError = error instanceof Error ? error.message : String(error);
  }
  console.log(`FINAL_DONE ${Date.now()}`);
  void Promise.all(outcomes).then(() =>
    console.log(`CHECKPOINTS_SETTLED ${Date.now()}`)
  );
  const report = await session.close();
  clearInterval(drained);
  console.log(`CLOSED ${Date.now()}`);
  const checkpoints: Record<string, number> = {};
  for (const outcome of await Promise.all(outcomes)) {
    const key = outcome.status === "skipped"
      ? `skipped-${(outcome as { reason?: string }).reason}`
      : outcome.status;
    checkpoints[key] = (checkpoints[key] ?? 0) + 1;
  }
  const result: ChildResult = {
    epochsTrained: epochs,
    checkpoints,
    retries,
    pendingEpochs: report.pendingEpochs,
    failedUploads: report.failedUploads.length,
    settled: report.settled,
    finalSha256,
    warnings,
    ...(finalError === undefined ? {} : { finalError }),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

// --------------------------------------------------------------- parent ---

function runtimeCommand(runtime: string, script: string): [string, string[]] {
  if (runtime === "bun") return ["npx", ["-y", "bun@1.4.5", script]];
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  return [deno?.execPath() ?? "deno", ["run", "-A", script]];
}

async function runOnce(
  runtime: string,
  mode: string,
  seed: number,
  epochs: number,
): Promise<RunFigures> {
  const { serveHub } = await import("../src/server/mod.ts");
  const { HUBClient } = await import("../src/transport/client.ts");
  const { createModelPayload } = await import("../src/session/session.ts");
  const { startFaultProxy } = await import("../tests/support/fault_proxy.ts");
  const { closedPort: freePort } = await import("../tests/support/server.ts");
  const dir = await mkdtemp(join(tmpdir(), "hub-chaos-"));
  let serverErrors = 0;
  const serverErrorKinds = new Map<string, number>();
  // The proxy needs the HUB's address, and the HUB the proxy's (the
  // Platform's signed upload URLs point at it): reserve the HUB's port.
  const hubPort = await freePort();
  const training = epochs * EPOCH_MS;
  // Two outages inside training (child start-up takes about a second).
  const first = 1_500 + Math.round(training * 0.15);
  const second = Math.max(
    first + OUTAGE_MS + 1_000,
    1_500 + Math.round(training * 0.55),
  );
  const proxy = await startFaultProxy({
    upstream: `http://127.0.0.1:${hubPort}`,
    seed,
    faultRate: 0.3,
    latencyMs: 300,
    retryAfterSeconds: 1,
    outages: [
      { start: first, end: first + OUTAGE_MS },
      { start: second, end: second + OUTAGE_MS },
    ],
  });
  const hub = await serveHub({
    port: hubPort,
    publicUrl: proxy.url,
    dataDir: join(dir, "hub"),
    onError: (error: unknown) => {
      serverErrors++;
      const text = error instanceof Error
        ? `${error.name}: ${error.message}`
        : String(error);
      serverErrorKinds.set(text, (serverErrorKinds.get(text) ?? 0) + 1);
    },
  });
  const direct = new HUBClient({ apiRoot: hub.url });
  const notes: string[] = [];
  try {
    let modelId = mode === "platform" ? "platform" : await direct.createModel(
      createModelPayload("mlp.yaml", { data: "two-spirals", epochs }),
    );
    const script = fileURLToPath(import.meta.url);
    const [command, args] = runtimeCommand(runtime, script);
    let trainingEnd: number | undefined;
    let exitAt: number | undefined;
    let queuedAtEnd: number | undefined;
    const marks = new Map<string, number>();
    let result: ChildResult | undefined;
    let stderr = "";
    const exitCode = await new Promise<number | null>((resolve, reject) => {
      const proc = spawn(command, [
        ...args,
        "--child",
        proxy.url,
        modelId,
        String(epochs),
        dir,
      ], { stdio: ["ignore", "pipe", "pipe"] });
      let buffered = "";
      proc.stdout.setEncoding("utf8");
      proc.stdout.on("data", (chunk: string) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line.startsWith("MODEL ")) {
            modelId = line.slice(6);
          } else if (line.startsWith("TRAINING_END ")) {
            trainingEnd = Number(line.slice(13));
          } else if (line.startsWith("QUEUED_AT_END ")) {
            queuedAtEnd = Number(line.slice(14));
          } else if (
            /^(METRICS_DRAINED|FINAL_DONE|CHECKPOINTS_SETTLED|CLOSED) \d+$/
              .test(line)
          ) {
            const [mark = "", at = ""] = line.split(" ");
            marks.set(mark, Number(at));
          } else if (line.startsWith("RESULT ")) {
            result = JSON.parse(line.slice(7));
          }
        }
      });
      proc.stderr.setEncoding("utf8");
      proc.stderr.on("data", (chunk: string) => stderr += chunk);
      const killer = setTimeout(() => {
        notes.push("child killed after 10 min");
        proc.kill("SIGKILL");
      }, 600_000);
      proc.on("error", reject);
      proc.on("exit", (code) => {
        exitAt = Date.now();
        clearTimeout(killer);
        resolve(code);
      });
    });
    await proxy.close();
    const sessionErrors: Record<string, number> = {};
    for (const line of stderr.split("\n")) {
      const error = /^session error: (\w+ \w+).*? failed: (.*)$/.exec(line);
      if (error !== null) {
        const what = (error[1] ?? "").toLowerCase().replace(" ", "-");
        const why = error[2] ?? "";
        const reason = /^\d+ attempts failed/.test(why)
          ? "budget spent"
          : /attempt timeout/.test(why)
          ? "timeout"
          : why.slice(0, 60);
        const key = `${what} (${reason})`;
        sessionErrors[key] = (sessionErrors[key] ?? 0) + 1;
      } else if (line.trim() !== "" && !/^npm /.test(line)) {
        notes.push(line.trim());
      }
    }
    // Read the server directly, not through the proxy.
    const stored = await direct.listMetrics(modelId);
    let sent: Record<string, Record<string, number>> = {};
    try {
      sent = JSON.parse(await readFile(join(dir, "sent.json"), "utf8"));
    } catch {
      notes.push("the child wrote no sent.json");
    }
    const onServer = new Map(stored.map((s) => [s.epoch, s.metrics]));
    let present = 0;
    let wrong = 0;
    for (const [epoch, metrics] of Object.entries(sent)) {
      const got = onServer.get(Number(epoch));
      if (got === undefined) continue;
      present++;
      for (const [name, value] of Object.entries(metrics)) {
        const stored = (got as Record<string, unknown>)[name];
        if (
          !(stored === value || (stored === null && !Number.isFinite(value)))
        ) {
          wrong++;
          break;
        }
      }
    }
    let shaMatch = false;
    const local = await sha256File(join(dir, "best.pt"));
    const response = await fetch(
      `${hub.url}/v1/models/${modelId}/files/best.pt`,
    );
    if (response.ok && response.body !== null) {
      const hash = createHash("sha256");
      for await (const chunk of response.body) hash.update(chunk);
      shaMatch = hash.digest("hex") === local;
    } else {
      await response.body?.cancel();
      notes.push(`best.pt not on the server (${response.status})`);
    }
    if (result?.finalError !== undefined) {
      notes.push(`final upload: ${result.finalError}`);
    }
    if (result !== undefined && result.pendingEpochs.length > 0) {
      notes.push(`pending at close: ${result.pendingEpochs.join(",")}`);
    }
    for (const [text, n] of serverErrorKinds) {
      notes.push(`server onError x${n}: ${text}`);
    }
    const faults: Record<string, number> = {};
    for (const entry of proxy.log) {
      if (entry.fault !== "pass") {
        faults[entry.fault] = (faults[entry.fault] ?? 0) + 1;
      }
    }
    const checkpoints = result?.checkpoints ?? {};
    const other = { ...checkpoints };
    delete other.uploaded;
    delete other.failed;
    return {
      runtime,
      mode,
      epochsOnServer: present,
      epochsTrained: Object.keys(sent).length,
      wrongValues: wrong,
      shaMatch,
      ckptOk: checkpoints.uploaded ?? 0,
      ckptFailed: checkpoints.failed ?? 0,
      ckptOther: formatCounts(other),
      sessionRetries: formatCounts(result?.retries ?? {}),
      proxyFaults: formatCounts(faults),
      proxyRequests: proxy.stats.requests,
      sessionErrors: formatCounts(sessionErrors),
      serverErrors,
      exitSeconds: trainingEnd === undefined || exitAt === undefined
        ? undefined
        : (exitAt - trainingEnd) / 1000,
      queuedAtEnd,
      drainedSeconds: since(trainingEnd, marks.get("METRICS_DRAINED")),
      finalSeconds: since(trainingEnd, marks.get("FINAL_DONE")),
      closedSeconds: since(trainingEnd, marks.get("CLOSED")),
      checkpointsSeconds: since(
        trainingEnd,
        marks.get("CHECKPOINTS_SETTLED"),
      ),
      metricsRequests: proxy.log.filter((e) =>
        e.method === "POST" && e.path.endsWith("/training/metrics") ||
        e.method === "POST" &&
          /^\/v1\/models\/[^/]+$/.test(e.path)
      ).length,
      exitCode,
      notes,
    };
  } finally {
    await proxy.close();
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function since(
  start: number | undefined,
  end: number | undefined,
): number | undefined {
  return start === undefined || end === undefined
    ? undefined
    : Math.max(0, end - start) / 1000;
}

function seconds(value: number | undefined): string {
  return value === undefined ? "n/a" : value.toFixed(2);
}

function printTable(runs: RunFigures[], seed: number, epochs: number): void {
  const rows: Array<[string, (r: RunFigures) => string]> = [
    ["epochs on server / trained", (r) => {
      const pct = r.epochsTrained === 0
        ? 0
        : (100 * r.epochsOnServer) / r.epochsTrained;
      return `${r.epochsOnServer}/${r.epochsTrained} (${pct.toFixed(1)} %)`;
    }],
    ["epochs with a wrong value", (r) => String(r.wrongValues)],
    ["final sha256", (r) => r.shaMatch ? "match" : "MISMATCH"],
    ["checkpoint uploads ok", (r) => String(r.ckptOk)],
    ["checkpoint uploads failed", (r) => String(r.ckptFailed)],
    ["checkpoints not sent", (r) => r.ckptOther],
    ["retries by status (session)", (r) => r.sessionRetries],
    ["faults injected (proxy)", (r) => r.proxyFaults],
    ["requests through the proxy", (r) => String(r.proxyRequests)],
    ["requests given up (session)", (r) => r.sessionErrors],
    ["server 500s (onError)", (r) => String(r.serverErrors)],
    ["metrics and event POSTs (proxy)", (r) => String(r.metricsRequests)],
    ["epochs queued at training end", (r) => String(r.queuedAtEnd ?? "n/a")],
    ["training end -> epochs acked (s)", (r) => seconds(r.drainedSeconds)],
    ["training end -> final stored (s)", (r) => seconds(r.finalSeconds)],
    [
      "training end -> checkpoints settled (s)",
      (r) => seconds(r.checkpointsSeconds),
    ],
    ["training end -> closed (s)", (r) => seconds(r.closedSeconds)],
    ["training end -> exit (s)", (r) => seconds(r.exitSeconds)],
    ["child exit code", (r) => String(r.exitCode)],
  ];
  console.log(
    `\nChaos run: ${epochs} epochs, seed ${seed}, 30 % faults, two ${
      OUTAGE_MS / 1000
    } s outages, 64 MiB final upload\n`,
  );
  const width = Math.max(...rows.map(([name]) => name.length));
  const cols = runs.map((r) =>
    Math.max(
      r.runtime.length + 1 + r.mode.length,
      ...rows.map(([, get]) => get(r).length),
    )
  );
  console.log(
    `${"".padEnd(width)} | ${
      runs.map((r, i) => `${r.runtime} ${r.mode}`.padEnd(cols[i] ?? 0)).join(
        " | ",
      )
    }`,
  );
  console.log(
    `${"-".repeat(width)}-|-${
      runs.map((_, i) => "-".repeat(cols[i] ?? 0)).join("-|-")
    }`,
  );
  for (const [name, get] of rows) {
    console.log(
      `${name.padEnd(width)} | ${
        runs.map((r, i) => get(r).padEnd(cols[i] ?? 0)).join(" | ")
      }`,
    );
  }
  for (const run of runs) {
    for (const note of run.notes.slice(0, 10)) {
      console.log(`note (${run.runtime}): ${note.slice(0, 240)}`);
    }
  }
  const ok = runs.every((r) =>
    r.epochsOnServer === r.epochsTrained && r.epochsTrained > 0 &&
    r.wrongValues === 0 && r.shaMatch && r.exitSeconds !== undefined &&
    r.exitSeconds <= 10
  );
  console.log(
    `\nTargets (100 %, match, exit <= 10 s): ${ok ? "met" : "NOT met"}`,
  );
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") {
    const [apiRoot = "", modelId = "", epochs = "500", dir = ""] = argv.slice(
      1,
    );
    await child(apiRoot, modelId, Number(epochs), dir);
    return;
  }
  const { values } = parseArgs({
    args: argv,
    options: {
      seed: { type: "string", default: "1" },
      runtime: { type: "string", default: "both" },
      epochs: { type: "string", default: "500" },
      mode: { type: "string", default: "hub" },
    },
  });
  const seed = Number(values.seed);
  const epochs = Number(values.epochs);
  if (!Number.isInteger(seed) || !Number.isInteger(epochs) || epochs < 1) {
    throw new RangeError(
      "Cannot run the chaos bench: --seed and --epochs must be integers, --epochs >= 1",
    );
  }
  const runtimes = values.runtime === "both"
    ? ["deno", "bun"]
    : [values.runtime ?? "deno"];
  for (const runtime of runtimes) {
    if (runtime !== "deno" && runtime !== "bun") {
      throw new TypeError(
        `Cannot run the chaos bench on runtime "${runtime}": use deno, bun or both`,
      );
    }
  }
  const modes = values.mode === "both" ? ["hub", "platform"] : [values.mode];
  for (const mode of modes) {
    if (mode !== "hub" && mode !== "platform") {
      throw new TypeError(
        `Cannot run the chaos bench in mode "${mode}": use hub, platform or both`,
      );
    }
  }
  const runs: RunFigures[] = [];
  for (const mode of modes) {
    for (const runtime of runtimes) {
      console.log(`Running ${epochs} epochs on ${runtime} (${mode})...`);
      runs.push(await runOnce(runtime, mode ?? "hub", seed, epochs));
    }
  }
  printTable(runs, seed, epochs);
}

await main();
