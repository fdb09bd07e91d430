/// <reference lib="dom" />
/**
 * Web app bench (`deno task bench:web`): how fast headless Chromium renders
 * a model page of 1,000 epochs x 15 metrics (against one of 300 epochs x 13
 * metrics), how heavy a 300-epoch model page is, and how long the list page
 * of 1,000 models takes the server; `--screenshots` also writes the light and
 * dark screenshots of the README under `docs/`.
 *
 * The local HUB runs in-process on loopback; models, metrics, weights and a
 * heartbeat are stored through its HTTP API with `HUBClient`. The browser is
 * Debian's `chromium` (see `tests/support/web.ts`), driven by puppeteer-core.
 * Render time is the navigation's `loadEventEnd - responseStart` (the page
 * parsed, styled, laid out and its script run), median of `--runs` loads.
 * The live update delay runs from posting an epoch through the API to the
 * open page showing it (its event, the re-fetch and the swap).
 *
 * Run: `deno task bench:web [--runs 7] [--screenshots]`
 *
 * @module
 */

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { serveHub } from "../src/server/mod.ts";
import { HUBClient } from "../src/transport/client.ts";
import { createModelPayload } from "../src/protocol/model_payload.ts";
import { launchBrowser, trainingMetrics } from "../tests/support/web.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runs: { type: "string", default: "7" },
    screenshots: { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
if (!(Number.isInteger(runs) && runs > 0)) {
  throw new RangeError(
    "Cannot run the web bench: --runs must be a positive integer",
  );
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const work = await mkdtemp(join(tmpdir(), "hub-web-bench-"));
const hub = await serveHub({ dataDir: join(work, "data") });
const client = new HUBClient({ apiRoot: hub.url, timeout: 60_000 });

async function model(
  name: string,
  epochs: number,
  metrics: (epoch: number) => Record<string, number>,
  configured = epochs,
): Promise<string> {
  const id = await client.createModel(
    createModelPayload(name, { data: "coco8.yaml", epochs: configured }),
  );
  const all: Record<string, Record<string, number>> = {};
  for (let e = 0; e < epochs; e++) all[e] = metrics(e);
  await client.uploadMetrics(id, all);
  return id;
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

// 15 metrics: the 13 Ultralytics series and a segmentation loss pair.
const fifteen = (e: number): Record<string, number> => {
  const m = trainingMetrics(e) as Record<string, number>;
  m["train/seg_loss"] = 2 / Math.sqrt(e + 1);
  m["val/seg_loss"] = 2.1 / Math.sqrt(e + 1);
  return m;
};
const big = await model("yolov8n-seg.pt", 1000, fifteen);
const typical = await model(
  "yolov8n.pt",
  300,
  (e) => trainingMetrics(e) as Record<string, number>,
);
const shown = await model(
  "yolov8n.pt",
  214,
  (e) => trainingMetrics(e) as Record<string, number>,
  300,
);
const weights = join(work, "last.pt");
await writeFile(weights, new Uint8Array(6_500_000).fill(7));
await client.uploadModel(shown, {
  epoch: 213,
  file: weights,
  type: "epoch",
  isBest: true,
});
await client.heartbeat(shown, { agentId: null });

// ------------------------------------------------------------ page weight ---

async function weigh(path: string): Promise<{ raw: number; gzip: number }> {
  const response = await fetch(`${hub.url}${path}`, {
    headers: { accept: "text/html" },
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  return { raw: bytes.byteLength, gzip: gzipSync(bytes).byteLength };
}
const html300 = await weigh(`/models/${typical}`);
const html1000 = await weigh(`/models/${big}`);
const css = await weigh("/web/style.css");
const js = await weigh("/web/app.js");

// ----------------------------------------------------------- render time ---

const browser = await launchBrowser();
interface Timing {
  load: number;
  points: number;
}
async function render(id: string): Promise<Timing> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const times: Timing[] = [];
  for (let i = 0; i < runs; i++) {
    await page.goto(`${hub.url}/models/${id}`, { waitUntil: "load" });
    times.push(
      await page.evaluate(() => {
        const nav = performance.getEntriesByType(
          "navigation",
        )[0] as PerformanceNavigationTiming;
        let points = 0;
        for (const line of document.querySelectorAll("svg [data-key]")) {
          points += line.tagName === "circle"
            ? 1
            : (line.getAttribute("points") ?? "").trim().split(/\s+/).length;
        }
        return {
          load: nav.loadEventEnd - nav.responseStart,
          points,
        };
      }),
    );
  }
  await page.close();
  return {
    load: median(times.map((t) => t.load)),
    points: times[0]!.points,
  };
}
const r1000 = await render(big);
const r300 = await render(typical);

// ------------------------------------------------------ live update delay ---

// An open page of a training model; each epoch posted through the API (one
// a second, as a fast trainer would) until the page shows it.
const livePage = await browser.newPage();
await livePage.goto(`${hub.url}/models/${shown}`, { waitUntil: "load" });
const delays: number[] = [];
for (let e = 214; e < 214 + runs; e++) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const start = performance.now();
  await client.uploadMetrics(shown, {
    [e]: trainingMetrics(e) as Record<string, number>,
  });
  await livePage.waitForFunction(
    (n) =>
      document.getElementById("live")?.getAttribute("data-epochs") ===
        String(n),
    { polling: "raf", timeout: 10_000 },
    e + 1,
  );
  delays.push(performance.now() - start);
}
await livePage.close();

// ---------------------------------------------------- list of 1,000 models ---

for (let i = 0; i < 997; i++) {
  await client.createModel(
    createModelPayload(`run-${i}.pt`, { data: "coco8.yaml", epochs: 100 }),
  );
}
const listTimes: number[] = [];
let listBytes = 0;
for (let i = 0; i < runs; i++) {
  const start = performance.now();
  const response = await fetch(`${hub.url}/`, {
    headers: { accept: "text/html" },
  });
  listBytes = (await response.arrayBuffer()).byteLength;
  listTimes.push(performance.now() - start);
}

// ------------------------------------------------------------ screenshots ---

if (values.screenshots) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 1500, deviceScaleFactor: 1 });
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMediaFeatures([{
      name: "prefers-color-scheme",
      value: scheme,
    }]);
    await page.goto(`${hub.url}/models/${shown}`, { waitUntil: "load" });
    const file = join(root, "docs", `web-model-page-${scheme}.png`);
    await page.screenshot({ path: file as `${string}.png`, fullPage: false });
    console.log(`wrote ${file}`);
  }
  await page.close();
}

await browser.close();
await hub.close();
await rm(work, { recursive: true, force: true });

// ------------------------------------------------------------- the report ---

const kib = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
const rows: Array<[string, string]> = [
  [
    "render 1,000 epochs x 15 metrics (load end)",
    `${r1000.load.toFixed(0)} ms (${r1000.points} points drawn)`,
  ],
  [
    "render 300 epochs x 13 metrics (load end)",
    `${r300.load.toFixed(0)} ms (${r300.points} points drawn)`,
  ],
  ["ratio 1,000x15 / 300x13", (r1000.load / r300.load).toFixed(2)],
  [
    "live update: epoch posted -> shown on an open page",
    `${median(delays).toFixed(0)} ms (max ${
      Math.max(...delays).toFixed(0)
    } ms)`,
  ],
  [
    "300-epoch page: HTML",
    `${kib(html300.raw)} (${kib(html300.gzip)} gzipped)`,
  ],
  [
    "style sheet + script",
    `${kib(css.raw + js.raw)} (${kib(css.gzip + js.gzip)} gzipped)`,
  ],
  [
    "300-epoch page weight, total",
    `${kib(html300.raw + css.raw + js.raw)} (${
      kib(html300.gzip + css.gzip + js.gzip)
    } gzipped)`,
  ],
  [
    "1,000-epoch page: HTML",
    `${kib(html1000.raw)} (${kib(html1000.gzip)} gzipped)`,
  ],
  [
    "list page, 1,000 models (server, median)",
    `${median(listTimes).toFixed(1)} ms, ${kib(listBytes)}`,
  ],
];
const width = Math.max(...rows.map(([k]) => k.length));
console.log(`\nWeb app (${runs} runs, medians; Chromium headless)\n`);
for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
