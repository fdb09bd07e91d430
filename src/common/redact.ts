/**
 * The one redaction helper: everything the library prints or throws passes
 * through {@linkcode redact} so that no API key can leak through a log line,
 * an error message or a URL.
 *
 * @module
 */

/**
 * Removes secrets from a text: each of `secrets` (4 characters or longer)
 * becomes `***`, URL query strings and fragments are dropped, and
 * `key=`/`api_key=`/`token=`/`secret=` values become `***`.
 *
 * @param text The text to clean.
 * @param secrets Values that must never appear (empty or short ones are ignored).
 * @returns The cleaned text.
 *
 * @example Scrub a key and a query string
 * ```ts
 * import { redact } from "./redact.ts";
 * import { assertEquals } from "@std/assert";
 *
 * assertEquals(
 *   redact("GET http://h/x?api_key=abcd failed with abcd", ["abcd"]),
 *   "GET http://h/x failed with ***",
 * );
 * ```
 */
export function redact(
  text: string,
  secrets: ReadonlyArray<string | undefined> = [],
): string {
  let out = String(text);
  for (const secret of secrets) {
    if (typeof secret === "string" && secret.length >= 4) {
      out = out.split(secret).join("***");
    }
  }
  return out
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s?#"'<>]*)[?#][^\s"'<>)]*/gi, "$1")
    .replace(/\b(api[_-]?key|key|token|secret)=[^&\s"']+/gi, "$1=***");
}
