/**
 * The escaping layer of the web app: a tagged template that escapes every
 * interpolated value unless it is already {@linkcode Html}, so a page is
 * built as plain synchronous string concatenation and a value from the store
 * can only ever render as text.
 *
 * Hono's `html` helper may return a promise for any fragment, which makes a
 * 1,000-epoch table of small fragments awkward and slower to compose; this
 * layer stays synchronous and small.
 *
 * @module
 */

/** Markup that is safe to insert as is (already escaped or trusted). */
export class Html {
  /** The markup. */
  readonly value: string;

  /**
   * Wraps markup that is already safe.
   *
   * @param value Escaped or trusted markup.
   */
  constructor(value: string) {
    this.value = value;
  }

  /** The markup. */
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * Escapes text for HTML element content and quoted attribute values.
 *
 * @param value Any value; it is converted to a string first.
 * @returns The escaped text.
 *
 * @example Escape a hostile name
 * ```ts
 * import { escapeHtml } from "./html.ts";
 *
 * console.assert(escapeHtml("<b>") === "&lt;b&gt;");
 * ```
 */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** A value a template accepts. */
export type HtmlValue =
  | Html
  | string
  | number
  | boolean
  | null
  | undefined
  | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value instanceof Html) return value.value;
  if (value === null || value === undefined || value === false) return "";
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(value);
}

/**
 * Builds markup from a template: interpolated values are escaped, except
 * {@linkcode Html} values; arrays are joined; `null`, `undefined` and
 * `false` render as nothing.
 *
 * @param strings The template's literal parts (trusted markup).
 * @param values The interpolated values.
 * @returns The markup.
 *
 * @example Render a list item
 * ```ts
 * import { markup } from "./html.ts";
 *
 * const item = markup`<li>${"<script>"}</li>`;
 * console.assert(item.value === "<li>&lt;script&gt;</li>");
 * ```
 */
export function markup(
  strings: TemplateStringsArray,
  ...values: HtmlValue[]
): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) {
    out += render(values[i]!) + strings[i + 1]!;
  }
  return new Html(out);
}

/**
 * Marks trusted markup as safe, e.g. generated SVG path data.
 *
 * @param value Markup that needs no escaping.
 * @returns The markup as {@linkcode Html}.
 *
 * @example Insert generated markup
 * ```ts
 * import { markup, raw } from "./html.ts";
 *
 * console.assert(markup`<p>${raw("<b>x</b>")}</p>`.value === "<p><b>x</b></p>");
 * ```
 */
export function raw(value: string): Html {
  return new Html(value);
}

/**
 * Serializes a value as JSON that is safe inside a `<script
 * type="application/json">` element (no `<`, `>`, `&` or line separators).
 *
 * @param value A JSON-serializable value.
 * @returns The JSON text.
 *
 * @example Embed a hostile key
 * ```ts
 * import { jsonForScript } from "./html.ts";
 *
 * console.assert(!jsonForScript({ k: "</script>" }).includes("<"));
 * ```
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
