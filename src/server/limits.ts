/**
 * Size limits of the local HUB, in one place: `serve.ts` and the app read
 * the same defaults.
 *
 * @module
 */

/** Default largest upload request body: 2 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES: number = 2 * 1024 * 1024 * 1024;

/** Largest JSON request body: 16 MiB. */
export const MAX_JSON_BYTES: number = 16 * 1024 * 1024;

/**
 * Deepest nesting of arrays and objects a JSON body may have: deeper bodies
 * are refused with 400 before they are parsed, so that no parse, store or
 * render of them can exhaust the stack.
 */
export const MAX_JSON_DEPTH = 64;
