/**
 * The list page `/`: every model with status, progress, best mAP50-95, last
 * update as relative time and the stalled flag, newest first, filtered by
 * name (`?q=`) and paginated (`?page=`).
 *
 * @module
 */

import type { ModelStatus } from "../../protocol/types.ts";
import { type Html, markup } from "./html.ts";
import { formatAge, formatMetric, renderDocument } from "./layout.ts";
import { statusBadges } from "./model_page.ts";

/** A model as the list shows it. */
export interface ListEntry {
  /** Model id. */
  id: string;
  /** Display name. */
  name: string;
  /** Training status. */
  status: ModelStatus;
  /** Stored epochs. */
  epochsCompleted: number;
  /** Configured epochs. */
  epochs: number;
  /** Best mAP50-95 so far, if reported. */
  bestMap: number | undefined;
  /** Last change, ms since the epoch. */
  updatedAt: number;
  /** Whether the run is stalled. */
  stalled: boolean;
}

/** What {@linkcode renderListPage} shows. */
export interface ListView {
  /** The models of this page. */
  entries: readonly ListEntry[];
  /** The name filter, `""` for none. */
  query: string;
  /** Page number, from 1. */
  page: number;
  /** Number of pages (at least 1). */
  pages: number;
  /** Models matching the filter. */
  total: number;
  /** The current time, ms since the epoch. */
  now: number;
  /** The stalled threshold, for the flag's title. */
  stalledAfterMs: number;
}

function pageLink(query: string, page: number): string {
  const params = new URLSearchParams();
  if (query !== "") params.set("q", query);
  if (page > 1) params.set("page", String(page));
  const text = params.toString();
  return text === "" ? "/" : `/?${text}`;
}

/**
 * Renders the list page.
 *
 * @param view Entries, filter, paging and clock.
 * @param options Whether to show the logout form.
 * @returns The HTML document.
 *
 * @example Render an empty list
 * ```ts
 * import { renderListPage } from "./list_page.ts";
 *
 * const page = renderListPage({
 *   entries: [], query: "", page: 1, pages: 1, total: 0, now: 0, stalledAfterMs: 900_000,
 * });
 * console.assert(page.value.includes("No models yet"));
 * ```
 */
export function renderListPage(
  view: ListView,
  options: { logout?: boolean | undefined } = {},
): Html {
  const { entries, query, page, pages, total, now } = view;
  const rows = entries.map((m) => {
    const name = m.name.trim() === ""
      ? markup`<span class="muted">(unnamed)</span>`
      : m.name;
    const href = `/models/${encodeURIComponent(m.id)}`;
    const iso = new Date(m.updatedAt).toISOString();
    const max = Math.max(m.epochs, m.epochsCompleted, 1);
    const progress = `${m.epochsCompleted} / ${m.epochs}`;
    const best = m.bestMap === undefined
      ? markup`<span class="muted">–</span>`
      : formatMetric(m.bestMap);
    const status = statusBadges(m.status, m.stalled, view.stalledAfterMs);
    return markup`<tr><td class="l name"><a href="${href}">${name}</a><br><code class="muted">${m.id}</code></td>
<td class="l">${status}</td>
<td>${progress}<br><progress max="${max}" value="${m.epochsCompleted}" aria-label="Progress">${progress}</progress></td>
<td>${best}</td>
<td><time datetime="${iso}" title="${iso}">${
      formatAge(now - m.updatedAt)
    } ago</time></td></tr>
`;
  });
  const empty = query === "" ? "No models yet." : "No model matches that name.";
  const table = entries.length === 0
    ? markup`<p class="muted">${empty}</p>`
    : markup`<div class="scroll"><table class="models"><caption class="sr">Models, newest first</caption>
<thead><tr><th scope="col" class="l">Model</th><th scope="col" class="l">Status</th><th scope="col">Progress</th><th scope="col">Best mAP50-95</th><th scope="col">Updated</th></tr></thead>
<tbody>
${rows}</tbody></table></div>`;
  const newer = page > 1
    ? markup`<a href="${pageLink(query, page - 1)}" rel="prev">← Newer</a>`
    : "";
  const older = page < pages
    ? markup`<a href="${pageLink(query, page + 1)}" rel="next">Older →</a>`
    : "";
  const pager = pages <= 1
    ? ""
    : markup`<nav class="pager" aria-label="Pages">${newer}<span>Page ${page} of ${pages}</span>${older}</nav>`;
  const clear = query === "" ? "" : markup`<a href="/">Clear</a>`;
  const count = `${total} ${total === 1 ? "model" : "models"}${
    query === "" ? "" : " matching"
  }`;
  return renderDocument({
    title: "Models · Local HUB",
    logout: options.logout,
    body: markup`<h1>Models</h1>
<form method="get" action="/" role="search" class="pager"><label for="q">Filter by name</label>
<input type="search" id="q" name="q" value="${query}" maxlength="200"><button type="submit">Filter</button>${clear}</form>
<p class="muted">${count}. The API lives at <code>/v1</code>.</p>
${table}
${pager}`,
  });
}
