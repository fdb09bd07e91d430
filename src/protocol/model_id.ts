/**
 * Model ids: the one rule client and server share for what a model id looks
 * like.
 *
 * @module
 */

/** A model id: 20 ASCII letters or digits. */
export const MODEL_ID_PATTERN: RegExp = /^[A-Za-z0-9]{20}$/;

/**
 * Returns whether `value` has the shape of a model id (20 letters or
 * digits). The server also relies on it to keep ids out of paths, so it
 * accepts nothing else.
 *
 * @param value The string to check.
 * @returns `true` for a well-formed model id.
 *
 * @example Check a model id
 * ```ts
 * import { isModelId } from "./model_id.ts";
 *
 * console.assert(isModelId("AbCdEfGhIj0123456789"));
 * console.assert(!isModelId("too-short"));
 * ```
 */
export function isModelId(value: string): boolean {
  return typeof value === "string" && MODEL_ID_PATTERN.test(value);
}
