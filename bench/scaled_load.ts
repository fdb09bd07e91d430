/**
 * The scaled mode of the load bench (`deno task load --scaled`): the same
 * client mix, in one run, against
 *
 * 1. one HUB process on the file store (the embedded default), and
 * 2. two HUB processes on one PostgreSQL + one S3 server behind a
 *    round-robin front (a TCP proxy in this process handing each new
 *    connection to the next server, as a layer-4 load balancer does),
 *
 * then prints each run's report and the two side by side. Needs the test
 * services (`source .ci/setup/30-services.sh` as root): the database and
 * bucket of `HUB_TEST_DATABASE_URL` / `HUB_TEST_S3_URL` and the `AWS_*`
 * variables. Loopback only.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { startHubProcess } from "../tests/support/hub_process.ts";

const LOAD = fileURLToPath(new URL("./server_load.ts", import.meta.url));

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["run", "-A", ...args], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      process.stdout.write(chunk);
    });
    child.on(
      "exit",
      (code) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`${args.join(" ")} exited with ${code}`)),
    );
  });
}

/** A TCP front handing each connection to the next upstream in turn. */
async function roundRobin(
  upstreams: URL[],
): Promise<{ url: string; close(): Promise<void> }> {
  let next = 0;
  const sockets = new Set<Socket>();
  const server = net.createServer((client) => {
    const target = upstreams[next++ % upstreams.length]!;
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve())
  );
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function row(report: string, name: string): string {
  return new RegExp(`^${name.replace(/[()/]/g, "\\$&")}\\s+(.*)$`, "m")
    .exec(report)?.[1]?.trim() ?? "n/a";
}

/**
 * Runs both configurations and prints them side by side.
 *
 * @param args The load bench's own arguments (`--seconds`, `--clients`).
 */
export async function runScaled(args: string[]): Promise<void> {
  const database = process.env.HUB_TEST_DATABASE_URL;
  const s3 = process.env.HUB_TEST_S3_URL;
  if (!database || !s3 || !process.env.AWS_SECRET_ACCESS_KEY) {
    console.error(
      "load --scaled: needs HUB_TEST_DATABASE_URL, HUB_TEST_S3_URL and the AWS_* variables (as root: source .ci/setup/30-services.sh)",
    );
    process.exit(1);
  }
  const bucket = new URL(s3).pathname.replace(/^\/|\/$/g, "");
  const weights = `s3://${bucket}/load-${randomBytes(4).toString("hex")}/`;

  console.log("=== 1 process on the file store");
  const files = await run([LOAD, ...args]);

  console.log(
    "\n=== 2 processes on PostgreSQL + S3 behind a round-robin front",
  );
  const hubs = [
    await startHubProcess(["--database", database, "--weights", weights]),
    await startHubProcess(["--database", database, "--weights", weights]),
  ];
  const front = await roundRobin(hubs.map((h) => new URL(h.url)));
  let scaled: string;
  try {
    scaled = await run([LOAD, ...args, "--target", front.url]);
  } finally {
    await front.close();
    await Promise.all(hubs.map((hub) => hub.kill("SIGTERM")));
  }

  const names = [
    "requests (ok)",
    "requests/s",
    "latency p50",
    "latency p99",
    "errors",
    "lost writes",
    "wrong values",
    "last.pt not the last upload",
  ];
  const width = Math.max(...names.map((n) => n.length));
  console.log(`\nSide by side (same client mix, same run)\n`);
  console.log(
    `${"".padEnd(width)}  ${
      "1 process, files".padEnd(20)
    }  2 processes, PostgreSQL + S3`,
  );
  for (const name of names) {
    console.log(
      `${name.padEnd(width)}  ${row(files, name).padEnd(20)}  ${
        row(scaled, name)
      }`,
    );
  }
  const rate = (report: string): number => Number(row(report, "requests/s"));
  console.log(
    `${"requests/s ratio".padEnd(width)}  ${
      (rate(scaled) / rate(files)).toFixed(2)
    } (2 processes on PostgreSQL + S3 / 1 on files)`,
  );
}
