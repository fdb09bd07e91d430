/**
 * HTML pages of the local HUB: `GET /` lists the models, `GET /models/{id}`
 * shows one (the model page URL a session logs as "View model at
 * <web root>/models/<id>", the web root of the local HUB being its URL).
 *
 * Plain HTML with inline CSS, no scripts and no external resources; every
 * value from the store is HTML-escaped, and the handler sends the pages with
 * a `Content-Security-Policy` that forbids scripts anyway.
 *
 * Internal to the local server; not part of the public API.
 *
 * @module
 */

import type { ModelStatus } from "../protocol/types.ts";

/** One epoch's metrics as a page shows them. */
export interface PageEpoch {
  /** Epoch number. */
  epoch: number;
  /** Metric values; `null` for a value sent as NaN/Infinity. */
  metrics: Record<string, number | null>;
}

/** A weights file as a page links it. */
export interface PageWeights {
  /** File name, `last.pt` or `best.pt`. */
  name: string;
  /** Download URL. */
  url: string;
  /** Epoch the file was uploaded for. */
  epoch: number;
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256. */
  sha256: string;
}

/** What the model page shows. */
export interface ModelPageView {
  /** Model id. */
  id: string;
  /** Display name. */
  name: string;
  /** Training status. */
  status: ModelStatus;
  /** Dataset name or URL (may be empty). */
  dataset: string;
  /** Architecture file, e.g. `yolov8n.yaml`. */
  architecture: string;
  /** Parent weights, when pretrained. */
  parent: string | undefined;
  /** Configured number of epochs. */
  epochs: number;
  /** Number of epochs with stored metrics. */
  epochsCompleted: number;
  /** Last change, ms since the epoch. */
  updatedAt: number;
  /** The last epochs' metrics, oldest first. */
  metrics: readonly PageEpoch[];
  /** URL of the model's JSON document. */
  documentUrl: string;
  /** Stored weights files. */
  weights: readonly PageWeights[];
  /** The training agent's last heartbeat, if any. */
  heartbeat: { agent: string; lastSeen: number } | undefined;
}

/** A model as the index page lists it. */
export interface IndexEntry {
  /** Model id. */
  id: string;
  /** Display name. */
  name: string;
  /** Training status. */
  status: ModelStatus;
  /** Dataset name or URL. */
  dataset: string;
  /** Last change, ms since the epoch. */
  updatedAt: number;
}

/** Most epochs a model page shows in its metrics table. */
export const PAGE_EPOCHS = 50;

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}code{font-size:90%}dt{font-weight:600}
dl{display:grid;grid-template-columns:max-content auto;gap:.25em 1em}`;

/**
 * Escapes text for HTML element content and quoted attribute values.
 *
 * @param value Any value; it is converted to a string first.
 * @returns The escaped text.
 *
 * @example Escape a metric name
 * ```ts
 * import { escapeHtml } from "./page.ts";
 *
 * console.assert(escapeHtml("<script>") === "&lt;script&gt;");
 * ```
 */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => {
    switch (c) {
      case "&":
        return "&amp;";
      case "<":
        return "&lt;";
      case ">":
        return "&gt;";
      case '"':
        return "&quot;";
      default:
        return "&#39;";
    }
  });
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
${body}
</body></html>
`;
}

function time(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : "";
}

function formatMetric(value: number | null | undefined): string {
  if (value === undefined) return "";
  if (value === null) return "NaN";
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(6)));
}

function link(url: string, text: string): string {
  return `<a href="${escapeHtml(url)}">${escapeHtml(text)}</a>`;
}

function metricsTable(view: ModelPageView): string {
  if (view.metrics.length === 0) return "<p>No metrics yet.</p>";
  const columns: string[] = [];
  const seen = new Set<string>();
  for (const { metrics } of view.metrics) {
    for (const name of Object.keys(metrics)) {
      if (!seen.has(name)) {
        seen.add(name);
        columns.push(name);
      }
    }
  }
  const first = view.metrics[0]!.epoch;
  const last = view.metrics[view.metrics.length - 1]!.epoch;
  const head = `<tr><th>epoch</th>${
    columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")
  }</tr>`;
  const rows = view.metrics.map(({ epoch, metrics }) =>
    `<tr><td>${escapeHtml(epoch)}</td>${
      columns.map((c) => `<td>${escapeHtml(formatMetric(metrics[c]))}</td>`)
        .join("")
    }</tr>`
  ).join("\n");
  return `<p>Epochs ${escapeHtml(first)} to ${escapeHtml(last)} (the last ${
    escapeHtml(view.metrics.length)
  } of ${escapeHtml(view.epochsCompleted)}).</p>
<table><thead>${head}</thead><tbody>
${rows}
</tbody></table>`;
}

/**
 * Renders the page of one model.
 *
 * @param view What to show; every value is escaped.
 * @returns A complete HTML document.
 *
 * @example Render a model without metrics
 * ```ts
 * import { renderModelPage } from "./page.ts";
 *
 * const html = renderModelPage({
 *   id: "abcdefghij0123456789",
 *   name: "yolov8n.pt",
 *   status: "new",
 *   dataset: "coco8.yaml",
 *   architecture: "yolov8n.yaml",
 *   parent: undefined,
 *   epochs: 3,
 *   epochsCompleted: 0,
 *   updatedAt: 0,
 *   metrics: [],
 *   documentUrl: "/v1/models/abcdefghij0123456789",
 *   weights: [],
 *   heartbeat: undefined,
 * });
 * console.assert(html.includes("No metrics yet."));
 * ```
 */
export function renderModelPage(view: ModelPageView): string {
  const facts: Array<[string, string]> = [
    ["Status", escapeHtml(view.status)],
    ["Dataset", view.dataset === "" ? "(none)" : escapeHtml(view.dataset)],
    ["Architecture", escapeHtml(view.architecture)],
    [
      "Parent weights",
      view.parent === undefined ? "(none)" : escapeHtml(view.parent),
    ],
    [
      "Epochs completed",
      `${escapeHtml(view.epochsCompleted)} of ${escapeHtml(view.epochs)}`,
    ],
    ["Updated", escapeHtml(time(view.updatedAt))],
    [
      "Last heartbeat",
      view.heartbeat === undefined
        ? "(none)"
        : `${escapeHtml(time(view.heartbeat.lastSeen))} from ${
          escapeHtml(view.heartbeat.agent)
        }`,
    ],
    ["Document", link(view.documentUrl, "JSON document")],
  ];
  const weights = view.weights.length === 0
    ? "<p>No weights uploaded yet.</p>"
    : `<ul>${
      view.weights.map((w) =>
        `<li>${link(w.url, w.name)}: epoch ${escapeHtml(w.epoch)}, ${
          escapeHtml(w.size)
        } bytes, sha256 <code>${escapeHtml(w.sha256)}</code></li>`
      ).join("\n")
    }</ul>`;
  return page(
    `${view.name} (${view.id}) - local HUB`,
    `<p>${link("/", "All models")}</p>
<h1>${escapeHtml(view.name)}</h1>
<p><code>${escapeHtml(view.id)}</code></p>
<dl>
${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("\n")}
</dl>
<h2>Weights</h2>
${weights}
<h2>Metrics</h2>
${metricsTable(view)}`,
  );
}

/**
 * Renders the list of models, most recently updated first.
 *
 * @param models The models to list.
 * @param more How many further models exist but are not listed.
 * @returns A complete HTML document.
 *
 * @example Render an empty list
 * ```ts
 * import { renderIndexPage } from "./page.ts";
 *
 * console.assert(renderIndexPage([]).includes("No models yet."));
 * ```
 */
export function renderIndexPage(
  models: readonly IndexEntry[],
  more = 0,
): string {
  const list = models.length === 0
    ? "<p>No models yet.</p>"
    : `<table><thead><tr><th class="l">model</th><th class="l">id</th><th class="l">status</th><th class="l">dataset</th><th class="l">updated</th></tr></thead><tbody>
${
      models.map((m) =>
        `<tr><td class="l">${
          link(`/models/${encodeURIComponent(m.id)}`, m.name)
        }</td><td class="l"><code>${
          escapeHtml(m.id)
        }</code></td><td class="l">${escapeHtml(m.status)}</td><td class="l">${
          escapeHtml(m.dataset)
        }</td><td class="l">${escapeHtml(time(m.updatedAt))}</td></tr>`
      ).join("\n")
    }
</tbody></table>${
      more > 0 ? `<p>${escapeHtml(more)} older models not listed.</p>` : ""
    }`;
  return page(
    "Local HUB",
    `<h1>Local HUB</h1>
<p>API root: this server (<code>/v1</code>).</p>
${list}`,
  );
}

/**
 * Renders the page a browser gets when the server needs an API key.
 *
 * @returns A complete HTML document.
 *
 * @example Render the page
 * ```ts
 * import { renderUnauthorizedPage } from "./page.ts";
 *
 * console.assert(renderUnauthorizedPage().includes("x-api-key"));
 * ```
 */
export function renderUnauthorizedPage(): string {
  return page(
    "API key required - local HUB",
    `<h1>API key required</h1>
<p>This HUB accepts only configured API keys. Send one in the
<code>x-api-key</code> header (or <code>authorization: Bearer</code>) to see
its pages.</p>`,
  );
}

/**
 * Renders a short page with a heading and one message, e.g. for a model
 * that does not exist.
 *
 * @param title Heading and title.
 * @param message The message (escaped).
 * @returns A complete HTML document.
 *
 * @example Render a not-found page
 * ```ts
 * import { renderMessagePage } from "./page.ts";
 *
 * const html = renderMessagePage("Model not found", "No model <x>");
 * console.assert(html.includes("No model &lt;x&gt;"));
 * ```
 */
export function renderMessagePage(title: string, message: string): string {
  return page(
    `${title} - local HUB`,
    `<p>${link("/", "All models")}</p>
<h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(message)}</p>`,
  );
}
