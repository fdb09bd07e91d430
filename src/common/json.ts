/**
 * JSON helpers shared by the client and the server.
 *
 * @module
 */

/**
 * Whether a parsed JSON value is an object record (not `null`, not an array).
 *
 * @example Narrowing a parsed body
 * ```ts
 * import { isRecord } from "./json.ts";
 *
 * const body: unknown = JSON.parse('{"success": true}');
 * if (isRecord(body)) console.log(body.success);
 * ```
 *
 * @param value A parsed JSON value.
 * @returns `true` for an object record.
 */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
