/**
 * Metric charts as server-rendered SVG (no chart library, no client-side
 * drawing): one `<figure>` per group of metrics, each series a polyline over
 * every epoch, a gap where an epoch lacks a value or sent NaN, the best epoch
 * marked. The client script only moves a cursor and reads values out of the
 * page's data table, so 1,000 epochs x 15 metrics cost the browser one parse.
 *
 * Grouping: `train/<x>` and `val/<x>` share a chart (train vs val
 * overlaid), `metrics/*` share one, `lr/*` share one, any other `<a>/<b>`
 * shares the chart of `<a>`, a name without `/` gets its own. `model/*`
 * (the epoch-0 model info) is shown as facts, not charted.
 *
 * @module
 */

import { escapeHtml, type Html, markup, raw } from "./html.ts";
import { formatMetric } from "./layout.ts";

/** One epoch's metrics. */
export interface ChartEpoch {
  /** Epoch number. */
  epoch: number;
  /** Values; `null` for NaN/Infinity. */
  metrics: Readonly<Record<string, number | null>>;
}

/** A chart: a title and the metric names drawn in it. */
export interface ChartGroup {
  /** Title shown above the chart. */
  title: string;
  /** Metric names, in legend order. */
  keys: string[];
}

const WIDTH = 600;
const HEIGHT = 240;
const LEFT = 60;
const RIGHT = 12;
const TOP = 12;
const BOTTOM = 26;
const COLORS = 8;

/**
 * Whether a metric is epoch-0 model info (`model/parameters`, ...) rather
 * than a per-epoch series.
 *
 * @param key Metric name.
 * @returns `true` for `model/*`.
 *
 * @example Tell model info apart
 * ```ts
 * import { isModelInfo } from "./chart.ts";
 *
 * console.assert(isModelInfo("model/GFLOPs") && !isModelInfo("lr/pg0"));
 * ```
 */
export function isModelInfo(key: string): boolean {
  return key.startsWith("model/");
}

function groupOf(key: string): { id: string; title: string } {
  const slash = key.indexOf("/");
  if (slash === -1) return { id: `=${key}`, title: key };
  const head = key.slice(0, slash);
  const tail = key.slice(slash + 1);
  if (head === "train" || head === "val") {
    return { id: `tv/${tail}`, title: `${tail} (train vs val)` };
  }
  if (head === "lr") return { id: "lr", title: "learning rate" };
  return { id: `g/${head}`, title: head };
}

/**
 * Groups metric names into charts (see the module doc for the rules).
 *
 * @param keys Metric names in first-seen order.
 * @returns The charts, in the order their first metric was seen.
 *
 * @example Overlay train and val losses
 * ```ts
 * import { groupMetrics } from "./chart.ts";
 *
 * const groups = groupMetrics(["train/box_loss", "lr/pg0", "val/box_loss"]);
 * console.assert(groups.length === 2 && groups[0]!.keys.length === 2);
 * ```
 */
export function groupMetrics(keys: readonly string[]): ChartGroup[] {
  const groups = new Map<string, ChartGroup>();
  for (const key of keys) {
    if (isModelInfo(key)) continue;
    const { id, title } = groupOf(key);
    let group = groups.get(id);
    if (group === undefined) {
      group = { title, keys: [] };
      groups.set(id, group);
    }
    group.keys.push(key);
  }
  return [...groups.values()];
}

/**
 * The metric names of a list of epochs, in first-seen order.
 *
 * @param epochs Epochs, oldest first.
 * @returns Every name once.
 *
 * @example List names
 * ```ts
 * import { metricKeys } from "./chart.ts";
 *
 * const keys = metricKeys([{ epoch: 0, metrics: { a: 1 } }, { epoch: 1, metrics: { a: 2, b: 3 } }]);
 * console.assert(keys.join() === "a,b");
 * ```
 */
export function metricKeys(epochs: readonly ChartEpoch[]): string[] {
  const seen = new Set<string>();
  for (const { metrics } of epochs) {
    for (const key in metrics) seen.add(key);
  }
  return [...seen];
}

function round(n: number): string {
  return (Math.round(n * 10) / 10).toString();
}

function tickLabel(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(3)));
}

/** Where a chart draws and how it scales. */
interface Frame {
  e0: number;
  e1: number;
  v0: number;
  v1: number;
}

function x(frame: Frame, epoch: number): number {
  const span = frame.e1 - frame.e0 || 1;
  return LEFT + (epoch - frame.e0) / span * (WIDTH - LEFT - RIGHT);
}

function y(frame: Frame, value: number): number {
  const span = frame.v1 - frame.v0 || 1;
  return TOP + (1 - (value - frame.v0) / span) * (HEIGHT - TOP - BOTTOM);
}

function seriesMarkup(
  frame: Frame,
  epochs: readonly ChartEpoch[],
  key: string,
  color: number,
): string {
  const parts: string[] = [];
  let run: string[] = [];
  const name = escapeHtml(key);
  const flush = (): void => {
    if (run.length === 1) {
      const [cx, cy] = run[0]!.split(",");
      parts.push(
        `<circle class="dot c${color}" data-key="${name}" cx="${cx}" cy="${cy}" r="2.5"/>`,
      );
    } else if (run.length > 1) {
      parts.push(
        `<polyline class="line c${color}" data-key="${name}" points="${
          run.join(" ")
        }"/>`,
      );
    }
    run = [];
  };
  for (const { epoch, metrics } of epochs) {
    const value = metrics[key];
    if (typeof value !== "number") {
      flush();
      continue;
    }
    run.push(`${round(x(frame, epoch))},${round(y(frame, value))}`);
  }
  flush();
  return parts.join("");
}

/** What {@linkcode renderChart} draws. */
export interface ChartOptions {
  /** The chart's metrics. */
  group: ChartGroup;
  /** Every epoch, oldest first. */
  epochs: readonly ChartEpoch[];
  /** Epoch to mark as best. @default {undefined} */
  best?: number | undefined;
  /** Unique number of the chart on its page (for element ids). */
  index: number;
}

/**
 * Renders one chart as a `<figure>` with an accessible `<svg>` (focusable;
 * the client script shows an epoch's values on hover, focus and arrow keys),
 * a legend and a read-out line.
 *
 * @param options The group, the epochs, the best epoch and an index.
 * @returns The figure's markup.
 *
 * @example Chart two epochs of a loss
 * ```ts
 * import { renderChart } from "./chart.ts";
 *
 * const figure = renderChart({
 *   group: { title: "loss", keys: ["loss"] },
 *   epochs: [{ epoch: 0, metrics: { loss: 2 } }, { epoch: 1, metrics: { loss: 1 } }],
 *   index: 0,
 * });
 * console.assert(figure.value.includes("<polyline"));
 * ```
 */
export function renderChart(options: ChartOptions): Html {
  const { group, epochs, best, index } = options;
  let v0 = Infinity;
  let v1 = -Infinity;
  let e0 = Infinity;
  let e1 = -Infinity;
  for (const { epoch, metrics } of epochs) {
    if (epoch < e0) e0 = epoch;
    if (epoch > e1) e1 = epoch;
    for (const key of group.keys) {
      const value = metrics[key];
      if (typeof value !== "number") continue;
      if (value < v0) v0 = value;
      if (value > v1) v1 = value;
    }
  }
  if (!Number.isFinite(e0)) [e0, e1] = [0, 1];
  if (e1 === e0) e1 = e0 + 1;
  if (!Number.isFinite(v0)) [v0, v1] = [0, 1];
  if (v1 === v0) [v0, v1] = [v0 - 1, v1 + 1];
  else {
    const pad = (v1 - v0) * 0.05;
    [v0, v1] = [v0 - pad, v1 + pad];
  }
  const frame: Frame = { e0, e1, v0, v1 };
  const ticks = [v0 + (v1 - v0) * 0.05, (v0 + v1) / 2, v1 - (v1 - v0) * 0.05];
  const grid = ticks.map((t) => {
    const ty = round(y(frame, t));
    return `<line class="grid" x1="${LEFT}" x2="${
      WIDTH - RIGHT
    }" y1="${ty}" y2="${ty}"/><text class="axis" x="${
      LEFT - 4
    }" y="${ty}" text-anchor="end" dominant-baseline="middle">${
      tickLabel(t)
    }</text>`;
  }).join("");
  const xTicks = [...new Set([e0, Math.round((e0 + e1) / 2), e1])]
    .filter((e) => epochs.length > 0 || e === e0)
    .map((e) =>
      `<text class="axis" x="${round(x(frame, e))}" y="${
        HEIGHT - 8
      }" text-anchor="middle">${e}</text>`
    ).join("");
  const lines = group.keys.map((key, i) =>
    seriesMarkup(frame, epochs, key, i % COLORS)
  ).join("");
  let bestMark = "";
  if (best !== undefined && best >= e0 && best <= e1) {
    const bx = round(x(frame, best));
    // The label sits left of the line when the line is near the right edge.
    const right = Number(bx) > WIDTH - RIGHT - 60;
    bestMark = `<line class="best" x1="${bx}" x2="${bx}" y1="${TOP}" y2="${
      HEIGHT - BOTTOM
    }"/><text class="besttext" x="${bx}" y="${TOP + 10}" dx="${
      right ? -4 : 4
    }" text-anchor="${right ? "end" : "start"}">best ${best}</text>`;
  }
  const id = `chart-${index}`;
  const last = epochs[epochs.length - 1];
  const summary = last === undefined
    ? "No epochs yet."
    : `Epochs ${epochs[0]!.epoch} to ${last.epoch}. Last values: ${
      group.keys.map((k) => `${k} ${formatMetric(last.metrics[k])}`).join(
        ", ",
      )
    }.${best === undefined ? "" : ` Best epoch ${best}.`}`;
  const legend = group.keys.map((key, i) =>
    markup`<li class="c${i % COLORS}"><i></i>${key}</li>`
  );
  return markup`<figure class="chart" id="${id}">
<figcaption id="${id}-t">${group.title}</figcaption>
<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" tabindex="0" aria-labelledby="${id}-t ${id}-d" data-e0="${e0}" data-e1="${e1}" data-x0="${LEFT}" data-x1="${
    WIDTH - RIGHT
  }" data-keys="${JSON.stringify(group.keys)}">
<desc id="${id}-d">${summary}</desc>
${raw(grid)}${raw(xTicks)}${raw(bestMark)}${raw(lines)}
<line class="cursor" x1="0" x2="0" y1="${TOP}" y2="${HEIGHT - BOTTOM}"/>
</svg>
<ul class="legend">${legend}</ul>
<output class="readout" aria-live="polite"></output>
</figure>`;
}
