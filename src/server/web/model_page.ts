/**
 * The model page `/models/<id>`: facts (status, progress, heartbeat age and
 * the stalled flag, dataset, architecture, parent, epoch-0 model info, best
 * metrics, weights with sizes, sha256 and download names), a chart of every
 * metric over all epochs, and the data as a table and CSV/JSON downloads.
 *
 * The part that changes while a model trains is one `<div id="live">`; the
 * client script re-fetches just that part (`?part=live`) when the server
 * sends an update event.
 *
 * The view's epochs are display numbers, counted from 1 as the trainer's
 * console counts them (the web app adds `DISPLAY_EPOCH_OFFSET` to the API's
 * keys); "N / M" counts stored epochs against the configured epochs.
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import type { ModelStatus } from "../../protocol/types.ts";
import {
  type ChartEpoch,
  groupMetrics,
  isModelInfo,
  metricKeys,
  renderChart,
} from "./chart.ts";
import { type Html, markup, raw } from "./html.ts";
import { formatAge, formatMetric, renderDocument } from "./layout.ts";

/** A weights file as the page lists it. */
export interface WeightsView {
  /** `last` or `best`. */
  kind: "last" | "best";
  /** Epoch it was uploaded for. */
  epoch: number;
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256. */
  sha256: string;
  /** Download URL. */
  url: string;
  /** For `best`: the mAP sent with the final upload. */
  map?: number | undefined;
}

/** Everything the model page shows. */
export interface ModelView {
  /** Model id. */
  id: string;
  /** Display name. */
  name: string;
  /** Training status. */
  status: ModelStatus;
  /** Dataset name or URL (may be empty). */
  dataset: string;
  /** Architecture, e.g. `yolov8n.yaml`. */
  architecture: string;
  /** Parent weights, when pretrained. */
  parent: string | undefined;
  /** Configured number of epochs. */
  epochs: number;
  /** Creation time, ms since the epoch. */
  createdAt: number;
  /** Last change, ms since the epoch. */
  updatedAt: number;
  /** The training agent's last heartbeat. */
  heartbeat: { agent: string; lastSeen: number } | undefined;
  /** Every stored epoch, oldest first. */
  metrics: readonly ChartEpoch[];
  /** Stored weights files. */
  weights: readonly WeightsView[];
  /** The current time, ms since the epoch. */
  now: number;
  /** A training model without news for longer than this is stalled. */
  stalledAfterMs: number;
  /** The Ultralytics Platform run the model stores, if it is one. */
  run?: {
    /** Project, `owner/slug`. */
    project: string;
    /** The run's slug. */
    slug: string;
    /** The user pressed Stop. */
    stopped: boolean;
    /** `training_complete` arrived. */
    finished: boolean;
    /** The server can stop it (shows the Stop button). */
    stoppable: boolean;
  } | undefined;
}

/** Metric that decides the best epoch, when a model reports it. */
const BEST_KEY_PATTERN = /(^|\/)mAP50-95(\(|$)/;

/**
 * The best epoch: highest mAP50-95 when the metrics carry it, else the epoch
 * of the stored `best.pt`.
 *
 * @param metrics Every epoch.
 * @param bestWeightsEpoch Epoch of `best.pt`, if any.
 * @returns The epoch and the metric that decided it, or `undefined`.
 *
 * @example Pick the highest mAP50-95
 * ```ts
 * import { bestEpoch } from "./model_page.ts";
 *
 * const best = bestEpoch([
 *   { epoch: 0, metrics: { "metrics/mAP50-95(B)": 0.2 } },
 *   { epoch: 1, metrics: { "metrics/mAP50-95(B)": 0.4 } },
 * ], undefined);
 * console.assert(best?.epoch === 1);
 * ```
 */
export function bestEpoch(
  metrics: readonly ChartEpoch[],
  bestWeightsEpoch: number | undefined,
):
  | { epoch: number; key: string | undefined; value: number | undefined }
  | undefined {
  let found: { epoch: number; key: string; value: number } | undefined;
  for (const { epoch, metrics: values } of metrics) {
    for (const key in values) {
      if (!BEST_KEY_PATTERN.test(key)) continue;
      const value = values[key];
      if (typeof value !== "number") continue;
      if (found === undefined || value > found.value) {
        found = { epoch, key, value };
      }
      break;
    }
  }
  if (found !== undefined) return found;
  return bestWeightsEpoch === undefined
    ? undefined
    : { epoch: bestWeightsEpoch, key: undefined, value: undefined };
}

/**
 * Whether a model counts as stalled: training, and neither a heartbeat nor
 * any other change for longer than the threshold.
 *
 * @param view Status, heartbeat, last change, clock and threshold.
 * @returns `true` when stalled.
 *
 * @example A run silent for an hour
 * ```ts
 * import { isStalled } from "./model_page.ts";
 *
 * console.assert(isStalled({
 *   status: "training",
 *   heartbeat: undefined,
 *   updatedAt: 0,
 *   now: 3_600_000,
 *   stalledAfterMs: 900_000,
 * }));
 * ```
 */
export function isStalled(
  view: Pick<
    ModelView,
    "status" | "heartbeat" | "updatedAt" | "now" | "stalledAfterMs"
  >,
): boolean {
  if (view.status !== "training") return false;
  const last = Math.max(view.updatedAt, view.heartbeat?.lastSeen ?? 0);
  return view.now - last > view.stalledAfterMs;
}

/**
 * The file name a weights download is saved as: `<name>-<id>-<kind>.pt`,
 * with the name reduced to safe file-name characters (a trailing `.pt` is
 * dropped so it does not repeat).
 *
 * @param name Model name.
 * @param id Model id.
 * @param kind `last` or `best`.
 * @returns The file name.
 *
 * @example Name a best.pt download
 * ```ts
 * import { downloadName } from "./model_page.ts";
 *
 * console.assert(downloadName("yolov8n.pt", "abc", "best") === "yolov8n-abc-best.pt");
 * ```
 */
export function downloadName(name: string, id: string, kind: string): string {
  const base =
    name.trim().replace(/\.pt$/i, "").replace(/[^A-Za-z0-9._-]+/g, "_")
      .replace(/^[._]+/, "").slice(0, 100) || "model";
  return `${base}-${id}-${kind}.pt`;
}

function timeAt(ms: number, text: string): Html {
  const iso = new Date(ms).toISOString();
  return markup`<time datetime="${iso}" title="${iso}">${text}</time>`;
}

function ago(ms: number, now: number): Html {
  return timeAt(ms, `${formatAge(now - ms)} ago`);
}

/**
 * Renders the status badge (and the stalled badge) of a model.
 *
 * @param status Training status.
 * @param stalled Whether the run is stalled.
 * @param stalledAfterMs The threshold, for the badge's title.
 * @returns The badges.
 *
 * @example Badge a stalled run
 * ```ts
 * import { statusBadges } from "./model_page.ts";
 *
 * console.assert(statusBadges("training", true, 900_000).value.includes("stalled"));
 * ```
 */
export function statusBadges(
  status: ModelStatus,
  stalled: boolean,
  stalledAfterMs: number,
): Html {
  const flag = stalled
    ? markup` <span class="badge stalled" title="No heartbeat or update for more than ${
      formatAge(stalledAfterMs)
    }">stalled</span>`
    : "";
  return markup`<span class="badge st-${status}">${status}</span>${flag}`;
}

function fact(label: string, value: Html | string): Html {
  return markup`<div><dt>${label}</dt><dd>${value}</dd></div>`;
}

function dataTable(view: ModelView, keys: readonly string[]): Html {
  if (view.metrics.length === 0) return markup``;
  const head = keys.map((k) =>
    markup`<th scope="col" data-key="${k}">${k}</th>`
  );
  const rows = view.metrics.map(({ epoch, metrics }) => {
    let cells = "";
    for (const k of keys) cells += `<td>${formatMetric(metrics[k])}</td>`;
    return `<tr><th scope="row">${epoch}</th>${cells}</tr>`;
  });
  const path = `/models/${encodeURIComponent(view.id)}`;
  return markup`<details id="data"><summary>Data table (${view.metrics.length} epochs)</summary>
<p><a href="${path}/metrics.csv" download="${view.id}-metrics.csv">Download CSV</a> · <a href="${path}/metrics.json" download="${view.id}-metrics.json">Download JSON</a></p>
<div class="scroll" tabindex="0" role="region" aria-label="Metrics by epoch"><table id="metrics-table">
<thead><tr><th scope="col">epoch</th>${head}</tr></thead>
<tbody>
${raw(rows.join("\n"))}
</tbody></table></div></details>`;
}

/**
 * Renders the part of the model page that changes while a model trains
 * (everything below the title), for the page and for `?part=live`.
 *
 * @param view What to show.
 * @returns The `<div id="live">` element.
 *
 * @example Render a new model
 * ```ts
 * import { renderModelLive } from "./model_page.ts";
 *
 * const part = renderModelLive({
 *   id: "abc", name: "m", status: "new", dataset: "", architecture: "yolov8n.yaml",
 *   parent: undefined, epochs: 3, createdAt: 0, updatedAt: 0, heartbeat: undefined,
 *   metrics: [], weights: [], now: 0, stalledAfterMs: 900_000,
 * });
 * console.assert(part.value.includes("No metrics yet"));
 * ```
 */
export function renderModelLive(view: ModelView): Html {
  const stalled = isStalled(view);
  const keys = metricKeys(view.metrics);
  const best = bestEpoch(
    view.metrics,
    view.weights.find((w) => w.kind === "best")?.epoch,
  );
  const done = view.metrics.length;
  const none = markup`<span class="muted">none</span>`;
  const info: Html[] = [];
  const first = view.metrics.find(({ metrics }) =>
    Object.keys(metrics).some(isModelInfo)
  );
  if (first !== undefined) {
    for (const [k, v] of Object.entries(first.metrics)) {
      if (isModelInfo(k)) info.push(fact(k.slice(6), formatMetric(v)));
    }
  }
  const bestRow = best === undefined
    ? undefined
    : view.metrics.find((e) => e.epoch === best.epoch);
  const bestFacts = bestRow === undefined ? [] : Object.entries(bestRow.metrics)
    .filter(([k]) => k.startsWith("metrics/"))
    .map(([k, v]) => fact(k.slice(8), formatMetric(v)));
  const max = Math.max(view.epochs, done, 1);
  const progress = `${done} / ${view.epochs}`;
  const beat = view.heartbeat === undefined
    ? none
    : markup`${
      ago(view.heartbeat.lastSeen, view.now)
    }<br><span class="muted">${view.heartbeat.agent}</span>`;
  const created = new Date(view.createdAt).toISOString().slice(0, 16)
    .replace("T", " ");
  const facts = [
    fact("Status", statusBadges(view.status, stalled, view.stalledAfterMs)),
    fact(
      "Progress",
      markup`${progress} epochs <progress max="${max}" value="${done}" aria-label="Training progress">${progress}</progress>`,
    ),
    fact("Last heartbeat", beat),
    fact("Updated", ago(view.updatedAt, view.now)),
    fact("Dataset", view.dataset === "" ? none : view.dataset),
    fact("Architecture", view.architecture),
    fact("Parent weights", view.parent === undefined ? none : view.parent),
    fact("Created", timeAt(view.createdAt, `${created} UTC`)),
  ];
  const charts = groupMetrics(keys).map((group, index) =>
    renderChart({ group, epochs: view.metrics, best: best?.epoch, index })
  );
  const files = view.weights.map((w) => {
    const name = downloadName(view.name, view.id, w.kind);
    const map = w.map === undefined ? "" : ` · mAP ${formatMetric(w.map)}`;
    return markup`<li><a href="${w.url}" download="${name}">${w.kind}.pt</a> · ${
      formatBytes(w.size)
    } · epoch ${w.epoch}${map}<br><span class="muted">saved as</span> <code>${name}</code><br><span class="muted">sha256</span> <code>${w.sha256}</code></li>`;
  });
  const weights = files.length === 0
    ? markup`<p class="muted">No weights uploaded yet.</p>`
    : markup`<ul class="files">${files}</ul>`;
  const stalledNote = stalled
    ? markup`<p class="stalled" role="status">No heartbeat or update for more than ${
      formatAge(view.stalledAfterMs)
    }: the trainer may have stopped.</p>`
    : "";
  const bestSection = best === undefined
    ? ""
    : markup`<section aria-labelledby="best-h"><h2 id="best-h">Best epoch: ${best.epoch}</h2>${
      bestFacts.length === 0
        ? ""
        : markup`<dl class="facts card">${bestFacts}</dl>`
    }</section>`;
  const infoSection = first === undefined
    ? ""
    : markup`<section aria-labelledby="info-h"><h2 id="info-h">Model info (epoch ${first.epoch})</h2><dl class="facts card">${info}</dl></section>`;
  const chartsPart = done === 0
    ? markup`<p class="muted">No metrics yet.</p>`
    : markup`<p class="muted">${done} epochs, ${view.metrics[0]!.epoch} to ${
      view.metrics[done - 1]!.epoch
    }. Hover a chart, or focus it and use the arrow keys, to read an epoch's values.</p>
<div class="charts">${charts}</div>`;
  return markup`<div id="live" data-status="${view.status}" data-epochs="${done}" data-updated="${view.updatedAt}">
<section aria-labelledby="facts-h" class="card"><h2 id="facts-h" class="sr">Facts</h2>
${stalledNote}<dl class="facts">${facts}</dl></section>
${bestSection}
${infoSection}
<section aria-labelledby="charts-h"><h2 id="charts-h">Metrics</h2>
${chartsPart}
${dataTable(view, keys)}
</section>
<section aria-labelledby="weights-h"><h2 id="weights-h">Weights</h2>${weights}</section>
</div>`;
}

/** The Platform run line and, while it runs, its Stop button. */
function renderRun(view: ModelView, path: string): Html {
  const run = view.run;
  if (run === undefined) return markup``;
  const what =
    markup`<p class="muted">Ultralytics Platform run <code>${run.project}/${run.slug}</code></p>`;
  if (run.finished) return what;
  if (run.stopped) {
    return markup`${what}
<p role="status">Stop requested: the trainer ends after its current epoch and still uploads its final weights.</p>`;
  }
  if (!run.stoppable) return what;
  return markup`${what}
<form method="post" action="${path}/stop"><button type="submit">Stop training</button></form>`;
}

/**
 * Renders the whole model page.
 *
 * @param view What to show.
 * @param options Whether to show the logout form.
 * @returns The HTML document.
 *
 * @example Render a page
 * ```ts
 * import { renderModelPage } from "./model_page.ts";
 *
 * const page = renderModelPage({
 *   id: "abc", name: "<b>m</b>", status: "new", dataset: "", architecture: "yolov8n.yaml",
 *   parent: undefined, epochs: 3, createdAt: 0, updatedAt: 0, heartbeat: undefined,
 *   metrics: [], weights: [], now: 0, stalledAfterMs: 900_000,
 * });
 * console.assert(page.value.includes("&lt;b&gt;m&lt;/b&gt;"));
 * ```
 */
export function renderModelPage(
  view: ModelView,
  options: { logout?: boolean | undefined } = {},
): Html {
  const path = `/models/${encodeURIComponent(view.id)}`;
  const title = view.name.trim() === "" ? "(unnamed)" : view.name;
  return renderDocument({
    title: `${title} · Local HUB`,
    logout: options.logout,
    script: true,
    body: markup`<h1 id="title">${title}</h1>
<p class="muted"><code>${view.id}</code> · <a href="/v1${path}">JSON document</a></p>
${renderRun(view, path)}
<div id="live-root" data-events="${path}/events" data-part="${path}?part=live">
${renderModelLive(view)}
</div>`,
  });
}
