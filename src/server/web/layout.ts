/**
 * The frame of every web page: document head, the top bar with its `nav`
 * landmark (and the logout form on a keyed server), the `main` landmark, the
 * same-origin style sheet and script, and the headers pages are sent with.
 *
 * @module
 */

import { type Html, type HtmlValue, markup } from "./html.ts";

/** Path of the style sheet. */
export const STYLE_PATH = "/web/style.css";
/** Path of the client script. */
export const SCRIPT_PATH = "/web/app.js";

/**
 * The pages' Content-Security-Policy: same-origin styles, scripts and
 * fetches only, forms only to this server, no frames, no plugins.
 */
export const PAGE_CSP =
  "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** Headers of every HTML page. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/html; charset=utf-8",
  "content-security-policy": PAGE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** What {@linkcode renderDocument} needs. */
export interface DocumentOptions {
  /** The page title (escaped). */
  title: string;
  /** The content of `main`. */
  body: Html;
  /** Whether to show the logout form (a browser session exists). */
  logout?: boolean | undefined;
  /** Whether to load the client script. @default {false} */
  script?: boolean | undefined;
  /** Extra links in the top bar. @default {[]} */
  nav?: readonly HtmlValue[] | undefined;
}

/**
 * Renders a complete HTML document around a page body.
 *
 * @param options Title, body, logout form and script.
 * @returns The document.
 *
 * @example Render a page
 * ```ts
 * import { markup } from "./html.ts";
 * import { renderDocument } from "./layout.ts";
 *
 * const page = renderDocument({ title: "x", body: markup`<p>hi</p>` });
 * console.assert(page.value.includes("<main"));
 * ```
 */
export function renderDocument(options: DocumentOptions): Html {
  const { title, body, logout = false, script = false, nav = [] } = options;
  const scriptTag = script
    ? markup`<script src="${SCRIPT_PATH}" defer></script>`
    : "";
  const logoutForm = logout
    ? markup`<form class="inline" method="post" action="/logout"><button type="submit">Log out</button></form>`
    : "";
  return markup`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<title>${title}</title>
<link rel="stylesheet" href="${STYLE_PATH}">
${scriptTag}
</head><body>
<header class="top"><a class="brand" href="/">Local HUB</a>
<nav aria-label="Site"><a href="/">All models</a>${nav}${logoutForm}</nav></header>
<main id="main">
${body}
</main>
</body></html>
`;
}

/**
 * Formats a duration in words for "3 min ago" style labels.
 *
 * @param ms Milliseconds (negative counts as 0).
 * @returns E.g. `"12 s"`, `"3 min"`, `"5 h"`, `"2 d"`.
 *
 * @example Format two minutes
 * ```ts
 * import { formatAge } from "./layout.ts";
 *
 * console.assert(formatAge(120_000) === "2 min");
 * ```
 */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/**
 * Formats a metric value for tables and read-outs: integers as they are,
 * others to 6 significant digits, `null` (sent as NaN) as `NaN`.
 *
 * @param value The value, or `undefined` when the epoch lacks it.
 * @returns The text, `""` for `undefined`.
 *
 * @example Format a loss
 * ```ts
 * import { formatMetric } from "./layout.ts";
 *
 * console.assert(formatMetric(0.123456789) === "0.123457");
 * ```
 */
export function formatMetric(value: number | null | undefined): string {
  if (value === undefined) return "";
  if (value === null) return "NaN";
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(6)));
}
