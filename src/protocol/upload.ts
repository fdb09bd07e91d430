/**
 * The weights upload of `POST /v1/models/{id}/upload`: its two types, the
 * file part each one carries, and the optional checksum field.
 *
 * @module
 */

/** Upload type: a checkpoint during training, or the final weights. */
export type UploadType = "epoch" | "final";

/**
 * Name of the multipart file part of each upload type: a checkpoint is
 * `last.pt`, the final weights `best.pt`.
 *
 * @example Name the file part of a checkpoint
 * ```ts
 * import { UPLOAD_FILE_PARTS } from "./upload.ts";
 *
 * console.assert(UPLOAD_FILE_PARTS.epoch === "last.pt");
 * ```
 */
export const UPLOAD_FILE_PARTS: Readonly<Record<UploadType, string>> = Object
  .freeze({ epoch: "last.pt", final: "best.pt" });

/**
 * Multipart field carrying the lowercase hex sha256 of the file part; the
 * server refuses the upload when the file does not match it.
 *
 * @example Name the checksum field
 * ```ts
 * import { CHECKSUM_FIELD } from "./upload.ts";
 *
 * console.assert(CHECKSUM_FIELD === "sha256");
 * ```
 */
export const CHECKSUM_FIELD = "sha256";

/**
 * Start of the message of the 400 a server answers when the file part does
 * not match {@linkcode CHECKSUM_FIELD}: the bytes were damaged on the way,
 * so the client may send them again.
 *
 * @example Recognise a checksum refusal
 * ```ts
 * import { CHECKSUM_MISMATCH } from "./upload.ts";
 *
 * const message = "Checksum mismatch: the file part's sha256 is 00…";
 * console.assert(message.startsWith(CHECKSUM_MISMATCH));
 * ```
 */
export const CHECKSUM_MISMATCH = "Checksum mismatch";
