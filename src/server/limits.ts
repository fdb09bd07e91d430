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

/**
 * Largest JSON encoding of a model's extra fields (those a `PATCH` sets
 * beyond the known ones), in bytes: 64 KiB. A `PATCH` that would pass it is
 * refused with 413, so that documents, and the cache that holds them, stay
 * small.
 */
export const MAX_EXTRA_BYTES: number = 64 * 1024;

/** Most export requests a document keeps (the oldest are dropped). */
export const MAX_EXPORT_REQUESTS = 100;

/** Longest agent description a heartbeat may carry, in characters. */
export const MAX_AGENT_LENGTH = 256;
