/**
 * Upload bench (`deno task bench`): time and client memory of a final upload
 * of a large file, against `curl -F` of the same multipart form to the same
 * server, with the runtimes' own ceilings measured beside them.
 *
 * The bench starts the local HUB (`src/cli/mod.ts serve`) as a child process on
 * Deno and on Bun, and a discarding sink server on each runtime, writes a
 * random file into a temporary directory, then runs each case `--runs` times
 * (interleaved) and prints medians:
 * - our final upload (`HUBClient.uploadModel`) in a child process on Deno
 *   and on Bun, and `curl -F` of the same form, to the Deno HUB; also our
 *   multipart body with `releaseChunks` posted by plain `fetch` to the same
 *   upload URL (what `uploadModel` sends once it sets that option);
 * - a raw streamed `fetch` of the file (`FileHandle#readableWebStream()` as
 *   the body) and our multipart body alone (no server work) to the sink, on
 *   both runtimes, against `curl -F` to the sink: the client-side ceiling;
 * - the server's cost: `curl -F` to the storing HUB against `curl -F` to the
 *   sink on the same runtime;
 * - sha256 of the same number of bytes with `node:crypto` alone on each
 *   runtime, and with the digest of `curl` (`sha256sum`) for comparison.
 *
 * Each client child resets its peak RSS (`/proc/self/clear_refs`) after an
 * idle pause, then reports `VmHWM` minus its idle RSS (falling back to
 * sampling `process.memoryUsage().rss` every 10 ms where `/proc` is missing).
 * Nothing is written into the repository; the temporary directory is deleted
 * at the end.
 *
 * For the curl cases the CPU time of curl (bash `times`) and of the server
 * process (`/proc/PID/stat`) is recorded: on a small machine the sum divided
 * by the number of cores bounds how fast storing can possibly be.
 *
 * Run: `deno task bench [--size MiB] [--runs N]` (defaults: 1024 MiB, 3 runs).
 *
 * @module
 */

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { availableParallelism, tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const MiB = 1024 * 1024;
const BUN_VERSION = "1.4.5";

interface DenoLike {
  args: string[];
  execPath(): string;
  serve(
    options: { port: number; hostname: string; onListen?: () => void },
    handler: (request: Request) => Response | Promise<Response>,
  ): { addr: { port: number } };
}
interface BunLike {
  serve(options: {
    port: number;
    hostname: string;
    maxRequestBodySize: number;
    fetch: (request: Request) => Response | Promise<Response>;
  }): { port: number };
}
const deno = (globalThis as { Deno?: DenoLike }).Deno;
const bun = (globalThis as { Bun?: BunLike }).Bun;
const argv: string[] = deno?.args ??
  (globalThis as unknown as { process: { argv: string[] } }).process.argv
    .slice(2);
const runtimeName = bun !== undefined ? "bun" : "deno";

/** What a client child prints as its last stdout line. */
interface ChildReport {
  ms: number;
  /** CPU seconds of curl plus the server during the run (curl cases). */
  cpu?: number;
  /** Idle RSS right before the upload, bytes. */
  baseline: number;
  /** Peak RSS during the upload, bytes. */
  peak: number;
  bytes: number;
}

// ---------------------------------------------------------------------------
// Child side

async function procStatus(
  field: "VmRSS" | "VmHWM",
): Promise<number | undefined> {
  try {
    const text = await readFile("/proc/self/status", "utf8");
    const match = text.match(new RegExp(`${field}:\\s+(\\d+) kB`));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function rssNow(): number {
  return (globalThis as unknown as {
    process: { memoryUsage(): { rss: number } };
  }).process.memoryUsage().rss;
}

/** Runs `work` with peak RSS measured above the idle baseline. */
async function measured(
  work: () => Promise<number>,
): Promise<ChildReport> {
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((resolve) => setTimeout(resolve, 300));
  let reset = false;
  try {
    await writeFile("/proc/self/clear_refs", "5");
    reset = true;
  } catch {
    // No /proc: sample instead.
  }
  const baseline = (await procStatus("VmRSS")) ?? rssNow();
  let sampled = baseline;
  const sampler = setInterval(() => {
    sampled = Math.max(sampled, rssNow());
  }, 10);
  const start = performance.now();
  let bytes: number;
  try {
    bytes = await work();
  } finally {
    clearInterval(sampler);
  }
  const ms = performance.now() - start;
  const hwm = reset ? await procStatus("VmHWM") : undefined;
  return { ms, baseline, peak: Math.max(sampled, hwm ?? 0), bytes };
}

async function childUpload(
  url: string,
  id: string,
  file: string,
): Promise<void> {
  const { HUBClient } = await import("../src/transport/client.ts");
  const client = new HUBClient({ apiRoot: url, timeout: 120_000 });
  const report = await measured(async () => {
    const result = await client.uploadModel(id, {
      epoch: 1,
      file,
      type: "final",
      map: 0.5,
      onProgress: () => {},
    });
    return result.size;
  });
  console.log(JSON.stringify(report));
}

async function childBody(url: string, file: string): Promise<void> {
  // `url` is the full target: a sink, or a HUB model's upload URL (the HUB
  // checks the sha256 field, so a corrupted body fails the run).
  const { createMultipartUpload } = await import(
    "../src/transport/multipart_body.ts"
  );
  const report = await measured(async () => {
    const upload = await createMultipartUpload({
      file,
      partName: "best.pt",
      fields: [["epoch", "1"], ["type", "final"], ["map", "0.5"]],
    });
    const body = upload.body({
      onProgress: () => {},
      releaseChunks: !argv.includes("--keep-chunks"),
    });
    const init: RequestInit & { duplex: "half" } = {
      method: "POST",
      headers: {
        "content-type": upload.contentType,
        "content-length": String(upload.contentLength),
      },
      body: body.stream,
      duplex: "half",
    };
    const response = await fetch(url, init);
    await response.text();
    body.finish();
    if (!response.ok) throw new Error(`sink answered ${response.status}`);
    return body.loaded();
  });
  console.log(JSON.stringify(report));
}

async function childRaw(
  url: string,
  file: string,
  native: boolean,
): Promise<void> {
  const report = await measured(async () => {
    const handle = await open(file);
    const size = (await handle.stat()).size;
    // The runtime's own file stream: Deno's resource-backed `FsFile#readable`
    // (fetch sends it without JavaScript per chunk), Bun's `BunFile#stream()`.
    const stream = !native
      ? handle.readableWebStream() as ReadableStream<Uint8Array>
      : bun !== undefined
      ? (bun as unknown as {
        file(path: string): { stream(): ReadableStream<Uint8Array> };
      }).file(file).stream()
      : (await (deno as unknown as {
        open(path: string): Promise<{ readable: ReadableStream<Uint8Array> }>;
      }).open(file)).readable;
    const init: RequestInit & { duplex: "half" } = {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: stream,
      duplex: "half",
    };
    try {
      const response = await fetch(`${url}/sink`, init);
      await response.text();
      if (!response.ok) throw new Error(`sink answered ${response.status}`);
    } finally {
      await handle.close().catch(() => {});
    }
    return size;
  });
  console.log(JSON.stringify(report));
}

async function childHash(sizeMiB: number): Promise<void> {
  const { createHash } = await import("node:crypto");
  const block = new Uint8Array(64 * MiB);
  randomFillSync(block);
  const hash = createHash("sha256");
  const start = performance.now();
  for (let done = 0; done < sizeMiB; done++) {
    const at = (done % 64) * MiB;
    hash.update(block.subarray(at, at + MiB));
  }
  hash.digest("hex");
  const ms = performance.now() - start;
  console.log(
    JSON.stringify({ ms, baseline: 0, peak: 0, bytes: sizeMiB * MiB }),
  );
}

/** A server that reads every request body to the end and discards it. */
function sink(): void {
  const handler = async (request: Request): Promise<Response> => {
    let bytes = 0;
    if (request.body !== null) {
      const reader = request.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
      }
    }
    return Response.json({
      success: true,
      data: { bytes },
      message: "Discarded",
    });
  };
  if (bun !== undefined) {
    const server = bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      fetch: handler,
    });
    console.log(`SINK listening on http://127.0.0.1:${server.port}`);
  } else if (deno !== undefined) {
    const server = deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      handler,
    );
    console.log(`SINK listening on http://127.0.0.1:${server.addr.port}`);
  }
}

// ---------------------------------------------------------------------------
// Parent side

interface Runtime {
  name: "deno" | "bun";
  /** Command and leading arguments to run a TypeScript file. */
  run: (file: string, args: string[]) => [string, string[]];
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    proc.stdout!.on("data", (d: Uint8Array) => (out += d.toString()));
    proc.stderr!.on("data", (d: Uint8Array) => (err += d.toString()));
    proc.on("error", reject);
    proc.on("close", (code: number | null) => {
      if (code === 0) resolve(out);
      else {
        reject(
          new Error(
            `${command} ${args.join(" ")} exited with ${code}: ${
              err.trim().slice(-500)
            }`,
          ),
        );
      }
    });
  });
}

interface Started {
  url: string;
  proc: ChildProcess;
}

/** Starts a server child and reads `... listening on URL` from its stdout. */
function startServer(command: string, args: string[]): Promise<Started> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const onData = (d: Uint8Array): void => {
      out += d.toString();
      const line = out.split("\n")[0]!;
      if (out.includes("\n")) {
        proc.stdout!.off("data", onData);
        proc.stdout!.resume();
        const match = line.match(/listening on (\S+)/);
        if (match) resolve({ url: match[1]!, proc });
        else {reject(
            new Error(`${command} printed "${line}" instead of its URL`),
          );}
      }
    };
    proc.stdout!.on("data", onData);
    proc.on("error", reject);
    proc.on(
      "exit",
      (code) => reject(new Error(`${command} exited with ${code}`)),
    );
  });
}

function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    proc.once("exit", () => resolve());
    proc.kill("SIGTERM");
    setTimeout(() => proc.kill("SIGKILL"), 5000).unref?.();
  });
}

/** CPU seconds (user + system) a process used so far, from `/proc`. */
async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

interface CurlResult {
  ms: number;
  /** CPU seconds of curl itself. */
  curlCpu: number;
}

async function curlForm(
  url: string,
  file: string,
  path: string,
): Promise<CurlResult> {
  // `times` prints the CPU time of the shell's children: curl's.
  const out = await run("bash", [
    "-c",
    'curl "$@"; times',
    "curl",
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{time_total}\\n",
    "-F",
    "epoch=1",
    "-F",
    "type=final",
    "-F",
    "map=0.5",
    "-F",
    `best.pt=@${file};filename=best.pt`,
    `${url}${path}`,
  ]);
  const lines = out.trim().split("\n");
  const [code, seconds] = lines[0]!.trim().split(" ");
  if (code !== "200") {
    throw new Error(`curl got HTTP ${code} from ${url}${path}`);
  }
  const cpu = [...(lines.at(-1) ?? "").matchAll(/(\d+)m([\d.]+)s/g)]
    .reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
  return { ms: Number(seconds) * 1000, curlCpu: cpu };
}

async function createModel(url: string): Promise<string> {
  const response = await fetch(`${url}/v1/models`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      config: {
        batchSize: -1,
        epochs: 1,
        imageSize: 640,
        patience: 100,
        device: "",
        cache: "ram",
      },
      dataset: { name: "coco8.yaml" },
      lineage: { architecture: { name: "yolov8n" }, parent: {} },
      meta: { name: "bench" },
    }),
  });
  const envelope = await response.json() as { data?: { id?: string } };
  const id = envelope.data?.id;
  if (!response.ok || typeof id !== "string") {
    throw new Error(`Cannot create the bench model: HTTP ${response.status}`);
  }
  return id;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface Case {
  label: string;
  run: () => Promise<ChildReport>;
  ms: number[];
  rss: number[];
  /** CPU seconds per run: client (curl) and server, where measured. */
  cpu: number[];
  error?: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: "string", default: "1024" },
      runs: { type: "string", default: "3" },
    },
    strict: true,
    allowPositionals: false,
  });
  const sizeMiB = Number(values.size);
  const runs = Number(values.runs);
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) {
    throw new RangeError(
      `Cannot run the bench as --size must be a positive integer (MiB), got ${values.size}`,
    );
  }
  if (!Number.isInteger(runs) || runs < 1) {
    throw new RangeError(
      `Cannot run the bench as --runs must be a positive integer, got ${values.runs}`,
    );
  }
  const self = fileURLToPath(import.meta.url);
  const root = fileURLToPath(new URL("..", import.meta.url));
  const cliTs = join(root, "src", "cli", "mod.ts");
  const denoPath = deno?.execPath() ?? "deno";
  console.error(`Resolving bun ${BUN_VERSION} through npx`);
  const bunPath = (await run("npx", [
    "-y",
    `bun@${BUN_VERSION}`,
    "-e",
    "console.log(process.execPath)",
  ])).trim().split("\n").at(-1)!;
  const runtimes: Record<"deno" | "bun", Runtime> = {
    deno: { name: "deno", run: (f, a) => [denoPath, ["run", "-A", f, ...a]] },
    bun: { name: "bun", run: (f, a) => [bunPath, [f, ...a]] },
  };

  const dir = await mkdtemp(join(tmpdir(), "upload-bench-"));
  const children: ChildProcess[] = [];
  try {
    const file = join(dir, "best.pt");
    console.error(`Writing ${sizeMiB} MiB of random bytes to ${file}`);
    const handle = await open(file, "w");
    const block = new Uint8Array(8 * MiB);
    for (let left = sizeMiB * MiB; left > 0; left -= block.byteLength) {
      randomFillSync(block);
      await handle.write(block, 0, Math.min(left, block.byteLength));
    }
    await handle.close();

    const servers: Record<string, Started> = {};
    for (const rt of [runtimes.deno, runtimes.bun]) {
      const [hc, ha] = rt.run(cliTs, [
        "serve",
        "--port",
        "0",
        "--data",
        join(dir, `data-${rt.name}`),
      ]);
      servers[`hub-${rt.name}`] = await startServer(hc, ha);
      const [sc, sa] = rt.run(self, ["--sink"]);
      servers[`sink-${rt.name}`] = await startServer(sc, sa);
    }
    for (const s of Object.values(servers)) children.push(s.proc);
    const hub = servers["hub-deno"]!.url;
    const hubBun = servers["hub-bun"]!.url;
    const sinkDeno = servers["sink-deno"]!.url;
    const id = await createModel(hub);
    const idBun = await createModel(hubBun);
    const uploadPath = (model: string) => `/v1/models/${model}/upload`;

    const child =
      (rt: Runtime, args: string[]) => async (): Promise<ChildReport> => {
        const [c, a] = rt.run(self, args);
        const out = await run(c, a);
        return JSON.parse(out.trim().split("\n").at(-1)!) as ChildReport;
      };
    const curl = (
      server: Started,
      path: string | (() => Promise<string>),
    ) =>
    async (): Promise<ChildReport> => {
      const target = typeof path === "string" ? path : await path();
      const before = await cpuSeconds(server.proc.pid);
      const result = await curlForm(server.url, file, target);
      const used = await cpuSeconds(server.proc.pid) - before;
      return {
        ms: result.ms,
        cpu: result.curlCpu + used,
        baseline: 0,
        peak: 0,
        bytes: 0,
      };
    };
    const mk = (label: string, fn: () => Promise<ChildReport>): Case => ({
      label,
      run: fn,
      ms: [],
      rss: [],
      cpu: [],
    });
    const cases = {
      curlHub: mk(
        "curl -F → HUB (deno)",
        curl(servers["hub-deno"]!, uploadPath(id)),
      ),
      denoUpload: mk(
        "uploadModel, deno → HUB (deno)",
        child(runtimes.deno, ["--child-upload", hub, id, file]),
      ),
      bunUpload: mk(
        "uploadModel, bun → HUB (deno)",
        child(runtimes.bun, ["--child-upload", hub, id, file]),
      ),
      curlHubFresh: mk(
        "curl -F → HUB (deno), new model: nothing to replace",
        curl(
          servers["hub-deno"]!,
          async () => uploadPath(await createModel(hub)),
        ),
      ),
      curlSinkDeno: mk(
        "curl -F → sink (deno)",
        curl(servers["sink-deno"]!, "/sink"),
      ),
      denoRaw: mk(
        "readableWebStream() fetch, deno → sink (deno)",
        child(runtimes.deno, ["--child-raw", sinkDeno, file]),
      ),
      bunRaw: mk(
        "readableWebStream() fetch, bun → sink (deno)",
        child(runtimes.bun, ["--child-raw", sinkDeno, file]),
      ),
      denoNative: mk(
        "Deno.open().readable fetch, deno → sink (deno)",
        child(runtimes.deno, ["--child-native", sinkDeno, file]),
      ),
      bunNative: mk(
        "Bun.file().stream() fetch, bun → sink (deno)",
        child(runtimes.bun, ["--child-native", sinkDeno, file]),
      ),
      denoBody: mk(
        "our body + releaseChunks, deno → sink (deno)",
        child(runtimes.deno, ["--child-body", `${sinkDeno}/sink`, file]),
      ),
      denoBodyHub: mk(
        "our body + releaseChunks, deno → HUB (deno)",
        child(runtimes.deno, ["--child-body", hub + uploadPath(id), file]),
      ),
      bunBody: mk(
        "our body + releaseChunks, bun → sink (deno)",
        child(runtimes.bun, ["--child-body", `${sinkDeno}/sink`, file]),
      ),
      bunBodyHub: mk(
        "our body + releaseChunks, bun → HUB (deno)",
        child(runtimes.bun, ["--child-body", hub + uploadPath(id), file]),
      ),
      curlHubBun: mk(
        "curl -F → HUB (bun)",
        curl(servers["hub-bun"]!, uploadPath(idBun)),
      ),
      curlSinkBun: mk(
        "curl -F → sink (bun)",
        curl(servers["sink-bun"]!, "/sink"),
      ),
      hashDeno: mk(
        "sha256 alone, deno (node:crypto)",
        child(runtimes.deno, ["--child-hash", String(sizeMiB)]),
      ),
      hashBun: mk(
        "sha256 alone, bun (node:crypto)",
        child(runtimes.bun, ["--child-hash", String(sizeMiB)]),
      ),
      sha256sum: mk("sha256sum of the file", async () => {
        const start = performance.now();
        await run("sha256sum", [file]);
        return {
          ms: performance.now() - start,
          baseline: 0,
          peak: 0,
          bytes: 0,
        };
      }),
    };
    // Warm the page cache and both servers once, unmeasured.
    await cases.curlHub.run();
    await cases.curlSinkDeno.run();
    for (let i = 0; i < runs; i++) {
      for (const c of Object.values(cases)) {
        if (c.error !== undefined) continue;
        console.error(`run ${i + 1}/${runs}: ${c.label}`);
        try {
          const r = await c.run();
          c.ms.push(r.ms);
          c.rss.push(r.peak - r.baseline);
          if (r.cpu !== undefined) c.cpu.push(r.cpu);
        } catch (error) {
          c.error = (error as Error).message;
          console.error(c.error);
        }
      }
    }

    const ms = (c: Case): number => c.ms.length === 0 ? NaN : median(c.ms);
    const rssMiB = (c: Case): number => Math.max(...c.rss) / MiB;
    const rows: string[][] = [];
    const fmtMs = (c: Case): string =>
      c.error !== undefined ? "failed" : `${ms(c).toFixed(0)} ms`;
    const cpu = (c: Case): number => c.cpu.length === 0 ? NaN : median(c.cpu);
    const blank = (label: string): void => {
      rows.push([label, "", "", "", "", "", ""]);
    };
    const row = (
      c: Case,
      reference: Case | undefined,
      opts: { maxRatio?: number; maxRss?: number; rss?: boolean } = {},
    ): void => {
      const ratio = reference === undefined ? NaN : ms(c) / ms(reference);
      const rss = opts.rss ? rssMiB(c) : NaN;
      const targets: string[] = [];
      let pass = true;
      if (opts.maxRatio !== undefined) {
        targets.push(`≤ ${opts.maxRatio}×`);
        pass &&= ratio <= opts.maxRatio;
      }
      if (opts.maxRss !== undefined) {
        targets.push(`≤ ${opts.maxRss} MiB`);
        pass &&= rss <= opts.maxRss;
      }
      rows.push([
        c.label,
        fmtMs(c),
        Number.isNaN(ratio) ? "" : `${ratio.toFixed(2)}×`,
        Number.isNaN(rss) ? "" : `${rss.toFixed(1)} MiB`,
        Number.isNaN(cpu(c)) ? "" : `${cpu(c).toFixed(2)} s`,
        targets.join(", "),
        c.error !== undefined
          ? "FAIL"
          : targets.length === 0
          ? ""
          : pass
          ? "pass"
          : "FAIL",
      ]);
    };
    const client = { maxRss: 64, rss: true };
    blank("client: final upload of the file, 3 text fields + sha256");
    row(cases.curlHub, cases.curlHub);
    row(cases.denoUpload, cases.curlHub, { maxRatio: 2.5, ...client });
    row(cases.bunUpload, cases.curlHub, { maxRatio: 1.5, ...client });
    row(cases.denoBodyHub, cases.curlHub, { maxRatio: 2.5, ...client });
    row(cases.bunBodyHub, cases.curlHub, { maxRatio: 1.5, ...client });
    blank("client ceilings: the runtime's own file stream, no server work");
    row(cases.curlSinkDeno, cases.curlSinkDeno);
    row(cases.denoRaw, cases.curlSinkDeno, { rss: true });
    row(cases.bunRaw, cases.curlSinkDeno, { rss: true });
    row(cases.denoNative, cases.curlSinkDeno, { rss: true });
    row(cases.bunNative, cases.curlSinkDeno, { rss: true });
    row(cases.denoBody, cases.curlSinkDeno, { rss: true });
    row(cases.bunBody, cases.curlSinkDeno, { rss: true });
    blank("server: curl → storing HUB / curl → discarding sink, same runtime");
    row(
      { ...cases.curlHub, label: "  HUB (deno) store vs sink (deno)" },
      cases.curlSinkDeno,
      { maxRatio: 1.3 },
    );
    row(
      {
        ...cases.curlHubFresh,
        label: "  HUB (deno), new model, vs sink (deno)",
      },
      cases.curlSinkDeno,
      { maxRatio: 1.3 },
    );
    row(
      { ...cases.curlHubBun, label: "  HUB (bun) store vs sink (bun)" },
      cases.curlSinkBun,
      { maxRatio: 1.3 },
    );
    row(cases.curlSinkBun, cases.curlSinkBun);
    blank("limits: sha256 of the same number of bytes, alone");
    row(cases.hashDeno, undefined);
    row(cases.hashBun, undefined);
    row(cases.sha256sum, undefined);

    const header = [
      "case",
      "median",
      "ratio",
      "peak RSS",
      "CPU",
      "target",
      "result",
    ];
    const widths = header.map((h, i) =>
      Math.max(h.length, ...rows.map((r) => r[i]!.length))
    );
    const line = (r: string[]): string =>
      r.map((v, i) => i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))
        .join("  ").trimEnd();
    console.log(
      `Upload bench: ${sizeMiB} MiB file, ${runs} runs each (median), ${runtimeName} parent, ` +
        `deno ${
          (globalThis as unknown as { Deno?: { version: { deno: string } } })
            .Deno?.version.deno ?? "?"
        }, bun ${BUN_VERSION}`,
    );
    console.log(
      "ratio: to curl -F to the same server; peak RSS: client child above its idle baseline",
    );
    console.log(line(header));
    console.log(widths.map((w) => "-".repeat(w)).join("  "));
    for (const r of rows) console.log(line(r));
    const hashMBs = (c: Case): string =>
      `${((sizeMiB * MiB) / 1e6 / (ms(c) / 1000)).toFixed(0)} MB/s`;
    console.log(
      `sha256 throughput: deno ${hashMBs(cases.hashDeno)}, bun ${
        hashMBs(cases.hashBun)
      }, sha256sum ${hashMBs(cases.sha256sum)}`,
    );
    const cores = availableParallelism();
    const bound = (store: Case, sink: Case, name: string): string => {
      const floor = (cpu(store) * 1000) / cores;
      return `${name}: storing used ${
        cpu(store).toFixed(2)
      } s CPU (curl + server) against ${
        cpu(sink).toFixed(2)
      } s for the sink, so on ${cores} cores it cannot take less than ${
        floor.toFixed(0)
      } ms = ${(floor / ms(sink)).toFixed(2)}× the sink's ${
        ms(sink).toFixed(0)
      } ms`;
    };
    console.log(
      `CPU: curl + server CPU seconds during a curl upload (median). Server floor ${
        bound(cases.curlHub, cases.curlSinkDeno, "deno")
      }; ${bound(cases.curlHubBun, cases.curlSinkBun, "bun")}`,
    );
    console.log(
      `all runs (ms): ${
        Object.values(cases).map((c) =>
          `${c.label}: ${c.ms.map((v) => v.toFixed(0)).join("/")}`
        ).join("; ")
      }`,
    );
  } finally {
    await Promise.all(children.map(stop));
    await rm(dir, { recursive: true, force: true });
  }
}

const [mode, ...rest] = argv;
if (mode === "--sink") sink();
else if (mode === "--child-upload") {
  await childUpload(rest[0]!, rest[1]!, rest[2]!);
} else if (mode === "--child-body") await childBody(rest[0]!, rest[1]!);
else if (mode === "--child-raw") await childRaw(rest[0]!, rest[1]!, false);
else if (mode === "--child-native") await childRaw(rest[0]!, rest[1]!, true);
else if (mode === "--child-hash") await childHash(Number(rest[0]));
else await main();
