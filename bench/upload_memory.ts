/**
 * Peak memory of a streamed upload: starts the local HUB, writes a 512 MiB
 * temporary file, uploads it with {@linkcode HUBClient.uploadModel} in a
 * child process on Deno and on Bun, and prints each child's peak RSS above
 * its idle baseline next to the time `curl -F` takes for the same form.
 *
 * Run: `deno run -A bench/upload_memory.ts [size in MiB]`
 *
 * @module
 */

import { spawn } from "node:child_process";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";

interface ChildReport {
  baseline: number;
  peak: number;
  ms: number;
  size: number;
}

const MiB = 1024 * 1024;
const args: string[] = (globalThis as { Deno?: { args: string[] } }).Deno
  ?.args ??
  (globalThis as { process?: { argv: string[] } }).process?.argv
    .slice(2) ??
  [];

async function rssFromProc(
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
  return (globalThis as { process: { memoryUsage(): { rss: number } } })
    .process.memoryUsage().rss;
}

async function child(url: string, file: string): Promise<void> {
  const { HUBClient } = await import("../src/client.ts");
  const client = new HUBClient({ apiRoot: url, timeout: 120_000 });
  const id = await client.createModel({
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
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const baseline = (await rssFromProc("VmRSS")) ?? rssNow();
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssNow());
  }, 10);
  const start = performance.now();
  const result = await client.uploadModel(id, {
    epoch: 0,
    file,
    type: "final",
    map: 0.5,
    onProgress: () => {
      peak = Math.max(peak, rssNow());
    },
  });
  const ms = performance.now() - start;
  clearInterval(sampler);
  peak = Math.max(peak, (await rssFromProc("VmHWM")) ?? 0);
  const report: ChildReport = { baseline, peak, ms, size: result.size };
  console.log(JSON.stringify(report));
}

function run(command: string, argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, argv, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    proc.stdout.on(
      "data",
      (d: Uint8Array) => (out += new TextDecoder().decode(d)),
    );
    proc.on("error", reject);
    proc.on(
      "close",
      (code: number | null) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`${command} exited with ${code}`)),
    );
  });
}

async function main(): Promise<void> {
  const sizeMiB = Number(args[0] ?? 512);
  const { serveHub } = await import("../src/server/mod.ts");
  const dir = await mkdtemp(join(tmpdir(), "upload-memory-"));
  const server = await serveHub({ port: 0, dataDir: join(dir, "data") });
  try {
    const file = join(dir, "best.pt");
    const handle = await open(file, "w");
    const block = new Uint8Array(8 * MiB);
    for (let offset = 0; offset < sizeMiB * MiB; offset += block.byteLength) {
      crypto.getRandomValues(block.subarray(0, 65536));
      block[0] = offset & 255;
      await handle.write(
        block,
        0,
        Math.min(block.byteLength, sizeMiB * MiB - offset),
      );
    }
    await handle.close();
    const self = fileURLToPath(import.meta.url);
    const deno =
      (globalThis as { Deno?: { execPath(): string } }).Deno?.execPath() ??
        "deno";
    const rows: string[][] = [];
    for (
      const [name, command, argv] of [
        ["deno", deno, ["run", "-A", self, "--child", server.url, file]],
        ["bun", "bun", [self, "--child", server.url, file]],
      ] as const
    ) {
      try {
        const out = await run(command, [...argv]);
        const report = JSON.parse(
          out.trim().split("\n").at(-1) ?? "{}",
        ) as ChildReport;
        rows.push([
          name,
          `${(report.baseline / MiB).toFixed(1)}`,
          `${(report.peak / MiB).toFixed(1)}`,
          `${((report.peak - report.baseline) / MiB).toFixed(1)}`,
          `${report.ms.toFixed(0)}`,
        ]);
      } catch (error) {
        rows.push([name, "-", "-", "-", `failed: ${(error as Error).message}`]);
      }
    }
    try {
      const id = JSON.parse(
        await run("curl", [
          "-s",
          "-X",
          "POST",
          "-H",
          "content-type: application/json",
          "-d",
          '{"config":{"batchSize":-1,"epochs":1,"imageSize":640,"patience":100,"device":"","cache":"ram"},"dataset":{"name":"coco8.yaml"},"lineage":{"architecture":{"name":"yolov8n"},"parent":{}},"meta":{"name":"curl"}}',
          `${server.url}/v1/models`,
        ]),
      ).data.id;
      const start = performance.now();
      await run("curl", [
        "-s",
        "-o",
        "/dev/null",
        "-F",
        "epoch=0",
        "-F",
        "type=final",
        "-F",
        "map=0.5",
        "-F",
        `best.pt=@${file}`,
        `${server.url}/v1/models/${id}/upload`,
      ]);
      rows.push([
        "curl -F",
        "-",
        "-",
        "-",
        `${(performance.now() - start).toFixed(0)}`,
      ]);
    } catch (error) {
      rows.push([
        "curl -F",
        "-",
        "-",
        "-",
        `failed: ${(error as Error).message}`,
      ]);
    }
    console.log(
      `Upload of a ${sizeMiB} MiB file to the local HUB (child process RSS, MiB)`,
    );
    const header = ["client", "idle RSS", "peak RSS", "peak - idle", "time ms"];
    for (const row of [header, ...rows]) {
      console.log(
        row.map((cell, i) => i === 0 ? cell.padEnd(8) : cell.padStart(12)).join(
          " ",
        ),
      );
    }
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (args[0] === "--child") await child(args[1]!, args[2]!);
else await main();
