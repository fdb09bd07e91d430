/**
 * Parse what a user passes to open a training session: a model page URL, an
 * `<API key>_<model id>` pair, a bare model id, or a local `.pt`/`.yaml` file
 * name from which a new model is created.
 *
 * @module
 */

import { DEFAULT_WEB_ROOT } from "./config.ts";
import { HUBModelError } from "../common/errors.ts";
import { isModelId, MODEL_ID_PATTERN } from "../protocol/model_id.ts";

export { isModelId };

/** Length of a HUB API key. */
export const API_KEY_LENGTH = 42;
/** Length of a HUB model id. */
export const MODEL_ID_LENGTH = 20;

const MODEL_ID = MODEL_ID_PATTERN;
const API_KEY = /^[A-Za-z0-9]{42}$/;
const hasControl = (value: string): boolean =>
  [...value].some((char) => char.charCodeAt(0) < 0x20 || char === "\u007f");
const ACCEPTED =
  "accepted formats: a model page URL (<web root>/models/<model id>), " +
  "<42-character API key>_<20-character model id>, a 20-character model id, " +
  "or a local .pt or .yaml file name";

/** What {@linkcode parseIdentifier} found in an identifier. */
export interface ParsedIdentifier {
  /** API key carried by the identifier (`<key>_<id>` or `?api_key=`). */
  apiKey?: string | undefined;
  /** Id of an existing model. */
  modelId?: string | undefined;
  /** Local `.pt`/`.yaml` file name: a model is to be created from it. */
  filename?: string | undefined;
}

/** Options for {@linkcode parseIdentifier}. */
export interface ParseIdentifierOptions {
  /**
   * Web root whose model page URLs are accepted, e.g. the local HUB's URL.
   *
   * @default {"https://hub.ultralytics.com"}
   */
  webRoot?: string | undefined;
}

/**
 * Parses a session identifier in one of the four accepted formats.
 *
 * Leading and trailing whitespace is ignored. A model page URL must start
 * with the web root; it may end with a slash and carry `?api_key=<key>`.
 * Anything else throws a {@linkcode HUBModelError} that lists the accepted
 * formats and never repeats a part that may be an API key.
 *
 * @param identifier What the user passed.
 * @param options The web root whose model URLs are accepted.
 * @returns The API key, model id or file name the identifier holds.
 * @throws {HUBModelError} When the identifier matches no accepted format.
 * @throws {TypeError} When `identifier` is not a string.
 *
 * @example Parse each format
 * ```ts
 * import { parseIdentifier } from "./identifier.ts";
 *
 * const id = "AbCdEfGhIj0123456789";
 * console.assert(parseIdentifier(id).modelId === id);
 * console.assert(parseIdentifier(`https://hub.ultralytics.com/models/${id}/`).modelId === id);
 * console.assert(parseIdentifier("yolov8n.pt").filename === "yolov8n.pt");
 * const pair = parseIdentifier(`${"k".repeat(42)}_${id}`);
 * console.assert(pair.apiKey?.length === 42 && pair.modelId === id);
 * ```
 */
export function parseIdentifier(
  identifier: string,
  options: ParseIdentifierOptions = {},
): ParsedIdentifier {
  if (typeof identifier !== "string") {
    throw new TypeError(
      `Cannot parse the model identifier as it is a ${typeof identifier}, not a string`,
    );
  }
  const { webRoot = DEFAULT_WEB_ROOT } = options;
  const value = identifier.trim();

  if (/^https?:\/\//i.test(value)) return parseModelUrl(value, webRoot);

  const parts = value.split("_");
  if (parts.length === 2) {
    const [key = "", id = ""] = parts;
    if (key.length === API_KEY_LENGTH && id.length === MODEL_ID_LENGTH) {
      if (!API_KEY.test(key) || !MODEL_ID.test(id)) {
        throw new HUBModelError(
          `Cannot parse the model identifier as its API key or model id holds characters other than letters and digits: ${ACCEPTED}`,
        );
      }
      return { apiKey: key, modelId: id };
    }
  }
  if (MODEL_ID.test(value)) return { modelId: value };
  if (isLocalModelFile(value)) return { filename: value };
  throw new HUBModelError(
    `Cannot parse the model identifier ${describe(value)}: ${ACCEPTED}`,
  );
}

function parseModelUrl(value: string, webRoot: string): ParsedIdentifier {
  let url: URL;
  let root: URL;
  try {
    url = new URL(value);
    root = new URL(webRoot);
  } catch {
    throw new HUBModelError(
      `Cannot parse the model identifier as it is not a valid URL: ${ACCEPTED}`,
    );
  }
  const rootPath = root.pathname.replace(/\/+$/, "");
  const prefix = `${rootPath}/models/`;
  if (url.origin !== root.origin || !url.pathname.startsWith(prefix)) {
    throw new HUBModelError(
      `Cannot open the model URL as it is not a model page of ${root.origin}${rootPath}: ` +
        `pass webRoot (or set ULTRALYTICS_HUB_WEB) to use another HUB; ${ACCEPTED}`,
    );
  }
  const modelId = url.pathname.slice(prefix.length).replace(/\/$/, "");
  if (!MODEL_ID.test(modelId)) {
    throw new HUBModelError(
      `Cannot open the model URL as its model id is not 20 letters or digits: ${ACCEPTED}`,
    );
  }
  const apiKey = url.searchParams.get("api_key");
  if (apiKey === null || apiKey === "") return { modelId };
  if (!API_KEY.test(apiKey)) {
    throw new HUBModelError(
      `Cannot use the api_key of the model URL as it is not ${API_KEY_LENGTH} letters or digits: check the key in your HUB settings`,
    );
  }
  return { apiKey, modelId };
}

function isLocalModelFile(value: string): boolean {
  const match = /^(.*?)(\.pt|\.yaml)$/.exec(value);
  if (match === null) return false;
  const stem = match[1] ?? "";
  const base = stem.split(/[\\/]/).pop() ?? "";
  return base.length > 0 && !hasControl(value);
}

/** Quotes the input only when it cannot hold a secret; otherwise sizes it. */
function describe(value: string): string {
  if (value === "") return "as it is empty";
  const mayHoldKey = /[A-Za-z0-9]{24,}/.test(value) || /api_key/i.test(value);
  if (mayHoldKey || value.length > 80 || hasControl(value)) {
    return `(a ${value.length}-character value, not shown as it may contain a key)`;
  }
  return JSON.stringify(value);
}
