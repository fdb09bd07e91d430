/**
 * The Ultralytics Platform webhook protocol: the shapes a trainer sends to
 * `POST <webhooks>/training/metrics` and `POST <webhooks>/models/upload`, what
 * comes back, and the naming rules (slugs, keys, `ul://` URIs). Shared by the
 * Platform transport and the local HUB, which accepts the same endpoints.
 *
 * Taken from the behaviour of the Python trainer's Platform callbacks; the
 * live service cannot be reached from our test machines, so these shapes are
 * verified against the local HUB only.
 *
 * @module
 */

/** Base URL of the hosted Platform (`ULTRALYTICS_PLATFORM_URL` overrides it). */
export const DEFAULT_PLATFORM_URL = "https://platform.ultralytics.com";

/** Path of the event endpoint below the webhooks root. */
export const PLATFORM_EVENTS_PATH = "/training/metrics";

/** Path of the upload-URL endpoint below the webhooks root. */
export const PLATFORM_UPLOAD_PATH = "/models/upload";

/** Longest slug the Platform keeps, in characters. */
export const MAX_SLUG_LENGTH = 128;

/** The events a trainer sends, in the order a run sends them. */
export type PlatformEventName =
  | "training_started"
  | "epoch_end"
  | "checkpoint_saved"
  | "training_complete";

/** Where the run runs: `environment` of `training_started`. */
export interface PlatformEnvironment {
  /** Host name, `""` when it cannot be read without a permission prompt. */
  hostname: string;
  /** Operating system, e.g. `linux 6.1.0`. */
  os: string;
  /** Logical CPUs. */
  cpuCount: number;
  /** Total memory in GiB (one decimal), `0` when it cannot be read. */
  totalRamGb: number;
  /** Runtime name (`deno`, `bun`, `node`) in place of Python's version. */
  runtime: string;
  /** Runtime version. */
  runtimeVersion: string;
  /** This library's agent name. */
  agent: string;
  /** Any further field. */
  [field: string]: unknown;
}

/** `data` of `training_started`. */
export interface TrainingStartedData {
  /** Every training argument, as a string. */
  trainArgs: Record<string, string>;
  /** Epochs planned. */
  epochs: number;
  /** Device, as a string. */
  device: string;
  /** Where the run runs. */
  environment: PlatformEnvironment;
}

/** `modelInfo` of the first `epoch_end`. */
export interface PlatformModelInfo {
  /** Number of parameters. */
  parameters: number;
  /** GFLOPs of one forward pass. */
  gflops: number;
  /** Inference speed in milliseconds. */
  speedMs: number;
}

/** `data` of `epoch_end`. */
export interface EpochEndData {
  /** Zero-based epoch. */
  epoch: number;
  /** The epoch's metrics; `null` stands for NaN/Infinity. */
  metrics: Record<string, number | null>;
  /** System metrics, when the trainer has them. */
  system?: Record<string, number | null> | undefined;
  /** The epoch's fitness, when known. */
  fitness?: number | null | undefined;
  /** Best fitness so far, when known. */
  best_fitness?: number | null | undefined;
  /** Model facts, epoch 0 only. */
  modelInfo?: PlatformModelInfo | undefined;
}

/** `data` of `checkpoint_saved`. */
export interface CheckpointSavedData {
  /** Storage path the upload-URL reply named (`gcsPath`). */
  modelPath: string;
  /** The run's id. */
  runId: string;
  /** The upload path the upload-URL reply named, else `modelPath`. */
  uploadPath: string;
}

/** `data` of `training_complete`. */
export interface TrainingCompleteData {
  /** Final results. */
  results: {
    /** The last epoch's metrics. */
    metrics: Record<string, number | null>;
    /** Epoch of the best fitness. */
    bestEpoch: number;
    /** Best fitness. */
    bestFitness: number | null;
    /** Storage path of the final weights, `null` when their upload failed. */
    modelPath: string | null;
    /** Bytes of the final weights, `null` when unknown. */
    modelSize: number | null;
  };
  /** Class names, when the trainer has them. */
  classNames?: string[] | undefined;
  /** The run's id, when the server gave one. */
  runId?: string | undefined;
}

/** Which run an event or upload belongs to. */
export type PlatformTarget =
  | { modelId: string }
  | { project: string; name: string };

/** The body of `POST <webhooks>/training/metrics`. */
export type PlatformEventBody =
  & { event: PlatformEventName; data: unknown }
  & PlatformTarget;

/** What the event endpoint answers (every field optional). */
export interface PlatformEventReply {
  /** The model the run reports to (the first reply must carry it). */
  modelId?: string | undefined;
  /** The model's slug (may differ from the requested name: `train-2`). */
  modelSlug?: string | undefined;
  /** The run's id. */
  runId?: string | undefined;
  /** The user stopped the run on the Platform. */
  cancelled?: boolean | undefined;
}

/** The body of `POST <webhooks>/models/upload`. */
export type UploadUrlRequest =
  & { filename: string; runId?: string | undefined }
  & PlatformTarget;

/** What the upload-URL endpoint answers. */
export interface UploadUrlReply {
  /** Signed URL to `PUT` the file to, without auth header. */
  uploadUrl: string;
  /** Storage path of the file once uploaded. */
  gcsPath: string;
  /** Upload path to report in `checkpoint_saved`, when it differs. */
  uploadPath?: string | undefined;
}

/** A parsed `ul://<owner>/<project>/<name>` model URI. */
export interface PlatformModelUri {
  /** Owner (user or team) as given. */
  owner: string;
  /** `<owner>/<project slug>`. */
  project: string;
  /** The slugified run name. */
  name: string;
}

/**
 * Turns text into a Platform slug: lowercase, `[a-z0-9-]`, spaces to `-`,
 * runs of `-` collapsed, no `-` at either end, at most 128 characters.
 *
 * @param text Any text.
 * @returns The slug (`""` when nothing is left).
 *
 * @example Slugify a run name
 * ```ts
 * import { slugify } from "./platform.ts";
 *
 * console.assert(slugify("My Run 1!") === "my-run-1");
 * ```
 */
export function slugify(text: string): string {
  return String(text).toLowerCase()
    .replace(/[^a-z0-9\s-]/g, "")
    .replace(/\s/g, "-")
    .replace(/-+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, MAX_SLUG_LENGTH)
    .replace(/-+$/, "");
}

/**
 * Normalises a project name as the Platform does: `owner/slug` keeps the
 * owner as given and slugifies the rest; a name without owner is slugified.
 *
 * @param project `owner/project` or `project`.
 * @returns The normalised project.
 *
 * @example Keep the owner
 * ```ts
 * import { normaliseProject } from "./platform.ts";
 *
 * console.assert(normaliseProject("Ada/My Project") === "Ada/my-project");
 * ```
 */
export function normaliseProject(project: string): string {
  const slash = project.indexOf("/");
  if (slash === -1) return slugify(project);
  return `${project.slice(0, slash)}/${slugify(project.slice(slash + 1))}`;
}

const KEY_PATTERN = /^ul_[0-9a-f]{40}$/i;

/**
 * Whether a string has the Platform API key format: `ul_` and 40 hex
 * characters.
 *
 * @param key Candidate key.
 * @returns `true` for a well-formed key.
 *
 * @example Check a key's format
 * ```ts
 * import { isPlatformKey } from "./platform.ts";
 *
 * console.assert(isPlatformKey("ul_" + "0".repeat(40)));
 * console.assert(!isPlatformKey("0".repeat(42)));
 * ```
 */
export function isPlatformKey(key: unknown): key is string {
  return typeof key === "string" && KEY_PATTERN.test(key);
}

/**
 * Parses `ul://<owner>/<project>/<name>`: the project becomes
 * `<owner>/<project slug>`, the name its slug.
 *
 * @param uri The URI.
 * @returns The parts, or `undefined` when `uri` is not a `ul://` model URI.
 *
 * @example Parse a model URI
 * ```ts
 * import { parsePlatformUri } from "./platform.ts";
 *
 * const uri = parsePlatformUri("ul://ada/Road Signs/run 1");
 * console.assert(uri?.project === "ada/road-signs" && uri.name === "run-1");
 * ```
 */
export function parsePlatformUri(uri: string): PlatformModelUri | undefined {
  if (typeof uri !== "string" || !uri.startsWith("ul://")) return undefined;
  const parts = uri.slice(5).split("/");
  if (parts.length !== 3) return undefined;
  const [owner = "", project = "", name = ""] = parts.map((p) => {
    try {
      return decodeURIComponent(p).trim();
    } catch {
      return "";
    }
  });
  if (owner === "" || /[\s?#]/.test(owner)) return undefined;
  const projectSlug = slugify(project);
  const nameSlug = slugify(name);
  if (projectSlug === "" || nameSlug === "" || owner === "datasets") {
    return undefined;
  }
  return { owner, project: `${owner}/${projectSlug}`, name: nameSlug };
}

/**
 * Replaces NaN and ±Infinity anywhere in a JSON-like value with `null`
 * (what JSON can carry); other values are copied as they are.
 *
 * @param value A JSON-like value.
 * @returns The value with every non-finite number as `null`.
 *
 * @example Clean a metrics map
 * ```ts
 * import { jsonSafe } from "./platform.ts";
 *
 * const clean = jsonSafe({ loss: NaN, map: 0.5 });
 * console.assert(clean.loss === null && clean.map === 0.5);
 * ```
 */
export function jsonSafe<T>(value: T): JsonSafe<T> {
  return clean(value) as JsonSafe<T>;
}

/** `T` with every `number` widened to `number | null`. */
export type JsonSafe<T> = T extends number ? number | null
  : T extends Array<infer U> ? Array<JsonSafe<U>>
  : T extends object ? { [K in keyof T]: JsonSafe<T[K]> }
  : T;

function clean(value: unknown): unknown {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (Array.isArray(value)) return value.map(clean);
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined) out[key] = clean(item);
    }
    return out;
  }
  return value;
}
