/**
 * Upload ingest of the HUB's storage backends, side by side in one run:
 * the same file (default 1 GiB) sent with `curl -F` (the multipart form of a
 * final upload) to
 *
 * - a server that reads and discards the body (the floor of any server on
 *   this machine),
 * - the HUB on the file store (`serve --data`),
 * - the HUB on PostgreSQL + S3 (`serve --database --weights s3://...`),
 *
 * and, for the S3 backend's reference, the same file sent with `curl -T`
 * straight to the S3 server as one signed `PUT` (what any S3 client can do at
 * best). Beside them, the floors of storing on files, measured in the bench's
 * own process (Deno, like the servers): sha256 of as many bytes with
 * `node:crypto` on one thread, and writing as many bytes to the disk of the
 * data directory in 1 MiB writes with an `fdatasync`; their sum with the
 * sink is the work of storing done one step after the other. Each server runs as its own process; its RSS is sampled from
 * `/proc/<pid>/status` during the uploads (baseline, peak). Cases run
 * interleaved `--runs` times; medians are printed with the ratios.
 *
 * Needs the test services (`source .ci/setup/30-services.sh` as root):
 * `HUB_TEST_DATABASE_URL`, `HUB_TEST_S3_URL` and the `AWS_*` variables.
 * Loopback only.
 *
 * Run: `deno run -A bench/ingest_bench.ts [--size MiB] [--runs N]`
 * (defaults 1024 MiB, 3 runs).
 *
 * @module
 */

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import {
  closeSync,
  fdatasyncSync,
  openSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import {
  chmod,
  mkdtemp,
  open,
  readFile,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const MiB = 1024 * 1024;
/** See {@linkcode block} (declared here: the bench runs before the end). */
let floorBlock: Uint8Array | undefined;
const CLI = fileURLToPath(new URL("../src/cli/mod.ts", import.meta.url));

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    size: { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    sink: { type: "boolean", default: false },
  },
});

if (values.sink) {
  // Child mode: a server that reads every body to the end and discards it.
  const deno = (globalThis as {
    Deno?: {
      serve(
        o: { port: number; hostname: string; onListen?: () => void },
        h: (r: Request) => Promise<Response>,
      ): { addr: { port: number } };
    };
  }).Deno!;
  const server = deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (request) => {
      let bytes = 0;
      for await (const chunk of request.body ?? []) bytes += chunk.byteLength;
      return Response.json({ success: true, data: { bytes } });
    },
  );
  console.log(`SINK listening on http://127.0.0.1:${server.addr.port}`);
} else {
  await bench();
}

async function bench(): Promise<void> {
  const size = Number(values.size) * MiB;
  const runs = Number(values.runs);
  const database = process.env.HUB_TEST_DATABASE_URL;
  const s3Url = process.env.HUB_TEST_S3_URL;
  const key = process.env.AWS_ACCESS_KEY_ID;
  const secret = process.env.AWS_SECRET_ACCESS_KEY;
  if (!database || !s3Url || !key || !secret) {
    console.error(
      "ingest bench: needs HUB_TEST_DATABASE_URL, HUB_TEST_S3_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (as root: source .ci/setup/30-services.sh)",
    );
    process.exit(1);
  }
  const s3 = new URL(s3Url);
  if (!/^(127\.0\.0\.1|localhost|\[::1\])$/.test(s3.hostname)) {
    throw new Error(`Cannot bench a non-loopback S3 server: ${s3.origin}`);
  }
  const bucket = s3.pathname.replace(/^\/|\/$/g, "");
  const prefix = `bench-${randomBytes(4).toString("hex")}`;
  const work = await mkdtemp(join(tmpdir(), "hub-ingest-"));
  const file = join(work, "best.pt");
  await writeRandom(file, size);
  // curl reads the S3 credentials from a file, never from its command line.
  const curlConfig = join(work, "s3.curl");
  await writeFile(
    curlConfig,
    `user = "${key}:${secret}"\naws-sigv4 = "aws:amz:${
      process.env.AWS_REGION ?? "us-east-1"
    }:s3"\nheader = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n`,
  );
  await chmod(curlConfig, 0o600);

  const servers: Server[] = [];
  // What the runs leave in the bucket: removed at the end, so that repeated
  // runs do not fill a small test cluster (a full OSD stalls every PUT).
  let remoteModel: string | undefined;
  let remoteUrl: string | undefined;
  let directRuns = 0;
  try {
    const sink = await start("sink", [
      "run",
      "-A",
      fileURLToPath(import.meta.url),
      "--sink",
    ]);
    servers.push(sink);
    const files = await start("files", [
      "run",
      "-A",
      CLI,
      "serve",
      "--port",
      "0",
      "--data",
      join(work, "data"),
    ]);
    servers.push(files);
    const remote = await start("pg+s3", [
      "run",
      "-A",
      CLI,
      "serve",
      "--port",
      "0",
      "--database",
      database,
      "--weights",
      `s3://${bucket}/${prefix}/`,
    ]);
    servers.push(remote);
    const filesModel = await createModel(files.url);
    remoteUrl = remote.url;
    remoteModel = await createModel(remote.url);

    const times: Record<string, number[]> = {
      "curl -F to a discarding sink": [],
      "curl -F to the HUB on files": [],
      "curl -T PUT straight to S3": [],
      "curl -F to the HUB on PostgreSQL + S3": [],
      "sha256 of as many bytes (node:crypto, 1 thread)": [],
      "writing as many bytes to the data disk + fdatasync": [],
    };
    for (let run = 0; run < runs; run++) {
      times["curl -F to a discarding sink"]!.push(
        await curlForm(`${sink.url}/sink`, file, sink),
      );
      times["curl -F to the HUB on files"]!.push(
        await curlForm(
          `${files.url}/v1/models/${filesModel}/upload`,
          file,
          files,
        ),
      );
      directRuns = run + 1;
      times["curl -T PUT straight to S3"]!.push(
        await curl([
          "-K",
          curlConfig,
          "-T",
          file,
          `${s3.origin}/${bucket}/${prefix}/direct-${run}`,
        ]),
      );
      times["curl -F to the HUB on PostgreSQL + S3"]!.push(
        await curlForm(
          `${remote.url}/v1/models/${remoteModel}/upload`,
          file,
          remote,
        ),
      );
      times["sha256 of as many bytes (node:crypto, 1 thread)"]!.push(
        hashFloor(size),
      );
      times["writing as many bytes to the data disk + fdatasync"]!.push(
        writeFloor(join(work, "floor.bin"), size),
      );
    }
    const median = (list: number[]): number =>
      [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)]!;
    const m = Object.fromEntries(
      Object.entries(times).map(([k, v]) => [k, median(v)]),
    );
    console.log(
      `\nIngest of ${
        size / MiB
      } MiB, median of ${runs} (loopback, ${navigator.hardwareConcurrency} cores)\n`,
    );
    const width = Math.max(...Object.keys(m).map((k) => k.length));
    for (const [k, ms] of Object.entries(m)) {
      console.log(
        `${k.padEnd(width)}  ${(ms / 1000).toFixed(2)} s  ${
          (size / MiB / (ms / 1000)).toFixed(0)
        } MiB/s   runs: ${
          times[k]!.map((t) => (t / 1000).toFixed(2)).join(" ")
        }`,
      );
    }
    console.log("");
    console.log(
      `HUB on files / discarding sink:             ${
        (m["curl -F to the HUB on files"]! /
          m["curl -F to a discarding sink"]!).toFixed(2)
      } x`,
    );
    const serial = m["curl -F to a discarding sink"]! +
      m["sha256 of as many bytes (node:crypto, 1 thread)"]! +
      m["writing as many bytes to the data disk + fdatasync"]!;
    console.log(
      `HUB on files / (sink + sha256 + disk write): ${
        (m["curl -F to the HUB on files"]! / serial).toFixed(2)
      } x   (the work of storing, one step after the other: ${
        (serial / 1000).toFixed(2)
      } s)`,
    );
    console.log(
      `HUB on PostgreSQL + S3 / direct S3 PUT:     ${
        (m["curl -F to the HUB on PostgreSQL + S3"]! /
          m["curl -T PUT straight to S3"]!).toFixed(2)
      } x`,
    );
    console.log("");
    for (const server of servers) {
      console.log(
        `server RSS ${server.name.padEnd(6)} baseline ${
          mib(server.baseline)
        }  peak during uploads ${mib(server.peak)}`,
      );
    }
  } finally {
    if (remoteUrl !== undefined && remoteModel !== undefined) {
      // A hard delete drops the model's weights from the bucket.
      const reply = await fetch(
        `${remoteUrl}/v1/models/${remoteModel}?hard=true`,
        { method: "DELETE" },
      ).catch((error) => error as Error);
      if (reply instanceof Error || !reply.ok) {
        console.error(
          `Cannot delete the benchmark's model: ${
            reply instanceof Error ? reply.message : reply.status
          }`,
        );
      } else await reply.body?.cancel();
    }
    for (let run = 0; run < directRuns; run++) {
      await curl([
        "-K",
        curlConfig,
        "-X",
        "DELETE",
        `${s3.origin}/${bucket}/${prefix}/direct-${run}`,
      ]).catch((error) =>
        console.error(`Cannot delete direct-${run}: ${error.message}`)
      );
    }
    for (const server of servers) server.child.kill("SIGTERM");
    await rm(work, { recursive: true, force: true });
  }
}

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
  baseline: number;
  peak: number;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(0)} MiB`;
}

async function rss(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

async function start(name: string, args: string[]): Promise<Server> {
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: process.env,
  });
  let out = "";
  child.stderr!.on("data", (d) => out += d);
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d) => {
      out += d;
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.on(
      "exit",
      (code) => reject(new Error(`${name} exited ${code}: ${out}`)),
    );
  });
  await new Promise((r) => setTimeout(r, 500));
  const baseline = await rss(child.pid!);
  return { name, url, child, baseline, peak: baseline };
}

/** A random block the floors hash and write over and over (made once). */
function block(): Uint8Array {
  if (floorBlock === undefined) {
    floorBlock = new Uint8Array(64 * MiB);
    for (let i = 0; i < floorBlock.length; i += 65_536) {
      randomFillSync(floorBlock.subarray(i, i + 65_536));
    }
  }
  return floorBlock;
}

/** Milliseconds to sha256 `size` bytes in 1 MiB updates on this thread. */
function hashFloor(size: number): number {
  const data = block();
  const started = performance.now();
  const hash = createHash("sha256");
  for (let done = 0; done < size;) {
    for (let i = 0; i < data.length && done < size; i += MiB) {
      const n = Math.min(MiB, size - done);
      hash.update(data.subarray(i, i + n));
      done += n;
    }
  }
  hash.digest("hex");
  return performance.now() - started;
}

/**
 * Milliseconds to write `size` bytes to a new file beside the HUB's data
 * directory in 1 MiB writes and `fdatasync` it (what the file store does
 * besides hashing); the file is deleted after.
 */
function writeFloor(path: string, size: number): number {
  const data = block();
  const started = performance.now();
  const fd = openSync(path, "w");
  try {
    for (let done = 0; done < size;) {
      for (let i = 0; i < data.length && done < size; i += MiB) {
        const n = Math.min(MiB, size - done);
        let offset = 0;
        while (offset < n) {
          offset += writeSync(fd, data, i + offset, n - offset);
        }
        done += n;
      }
    }
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const ms = performance.now() - started;
  unlinkSync(path);
  return ms;
}

async function writeRandom(path: string, size: number): Promise<void> {
  const handle = await open(path, "w");
  const chunk = new Uint8Array(4 * MiB);
  try {
    for (let written = 0; written < size; written += chunk.byteLength) {
      randomFillSync(chunk);
      await handle.write(chunk, 0, Math.min(chunk.byteLength, size - written));
    }
  } finally {
    await handle.close();
  }
}

async function createModel(url: string): Promise<string> {
  const response = await fetch(`${url}/v1/models`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      config: { epochs: 1 },
      dataset: { name: "bench.yaml" },
      lineage: { architecture: { name: "yolov8n" }, parent: {} },
      meta: { name: "bench.yaml" },
    }),
  });
  const body = await response.json() as { data: { id: string } };
  return body.data.id;
}

async function curlForm(
  url: string,
  file: string,
  server: Server,
): Promise<number> {
  const sampler = setInterval(async () => {
    server.peak = Math.max(server.peak, await rss(server.child.pid!));
  }, 100);
  try {
    return await curl([
      "-F",
      "epoch=1",
      "-F",
      "type=final",
      "-F",
      "map=0.5",
      "-F",
      `best.pt=@${file};filename=best.pt`,
      url,
    ]);
  } finally {
    clearInterval(sampler);
  }
}

/** Runs curl; returns its `time_total` in ms; fails unless 2xx. */
function curl(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn("curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{time_total}",
      ...args,
    ]);
    let out = "";
    child.stdout.on("data", (d) => out += d);
    child.on("close", () => {
      const [code, seconds] = out.trim().split(" ");
      if (!code?.startsWith("2")) {
        reject(new Error(`curl got HTTP ${code} from ${args.at(-1)}`));
      } else resolve(Number(seconds) * 1000);
    });
  });
}
