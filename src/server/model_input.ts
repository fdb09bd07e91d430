/**
 * What clients send about a model, checked and turned into store values:
 * the model-creation payload, PATCH bodies and metrics posts. Every refusal
 * is a 400 that names the field.
 *
 * @module
 */

import { DEFAULT_MODEL_CONFIG } from "../protocol/model.ts";
import {
  epochProblem,
  MAX_EPOCHS_PER_POST,
  metricsProblem,
} from "../protocol/metrics_rules.ts";
import type { ModelStatus } from "../protocol/types.ts";
import { isRecord } from "../common/json.ts";
import { parseBoundedJson } from "./body.ts";
import { hubError } from "./errors.ts";
import { MAX_EXTRA_BYTES } from "./limits.ts";
import type {
  ModelRecord,
  NewModel,
  StoredConfig,
  StoredMetrics,
} from "./store.ts";

/** Parses a JSON metrics string; Python's `NaN`/`Infinity` become `null`. */
function parseMetricsString(epoch: string, text: string): unknown {
  const what = `the metrics of epoch ${epoch}`;
  try {
    return parseBoundedJson(text, what);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    const repaired = text.replace(
      /(?<=[:\[,]\s*)-?(?:NaN|Infinity)(?=\s*[,}\]])/g,
      "null",
    );
    try {
      return parseBoundedJson(repaired, what);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw hubError(
        400,
        `Cannot parse the metrics of epoch ${epoch} as JSON: ${
          (error as Error).message
        }`,
      );
    }
  }
}

/**
 * Checks a metrics post `{type: "metrics", metrics: {"<epoch>": {...}}}`;
 * an epoch's metrics may be a JSON string (Python's `NaN` becomes `null`).
 *
 * @param body The request body.
 * @returns The metrics by epoch.
 */
export function parseMetrics(
  body: Record<string, unknown>,
): Map<number, StoredMetrics> {
  if (body.type !== "metrics") {
    throw hubError(
      400,
      `Cannot handle the request as its type ${
        JSON.stringify(body.type ?? null)
      } is not "metrics"`,
    );
  }
  const metrics = body.metrics;
  if (!isRecord(metrics)) {
    throw hubError(
      400,
      'Cannot accept the metrics as "metrics" is not an object of epochs',
    );
  }
  const result = new Map<number, StoredMetrics>();
  const keys = Object.keys(metrics);
  if (keys.length > MAX_EPOCHS_PER_POST) {
    throw hubError(
      413,
      `Cannot accept the metrics as the post has ${keys.length} epochs, more than ${MAX_EPOCHS_PER_POST}: send them in several posts`,
    );
  }
  for (const [key, raw] of Object.entries(metrics)) {
    const badEpoch = /^\d{1,9}$/.test(key)
      ? epochProblem(Number(key))
      : "is not a non-negative integer";
    if (badEpoch !== undefined) {
      throw hubError(
        400,
        `Cannot accept the metrics as the epoch key ${
          JSON.stringify(key)
        } ${badEpoch}`,
      );
    }
    const value = typeof raw === "string" ? parseMetricsString(key, raw) : raw;
    if (!isRecord(value)) {
      throw hubError(
        400,
        `Cannot accept the metrics of epoch ${key} as they are not an object of numbers`,
      );
    }
    // The one rule the session applies too: any problem refuses the epoch
    // (it stops at the first, so acting on only some kinds of problem would
    // let the rest of the epoch past the bounds unchecked).
    const problem = metricsProblem(value);
    if (problem !== undefined) {
      throw hubError(
        problem.tooLarge ? 413 : 400,
        `Cannot accept the metrics of epoch ${key} as they ${problem.reason}`,
      );
    }
    result.set(Number(key), value as StoredMetrics);
  }
  return result;
}

function readConfig(
  value: unknown,
  base: StoredConfig,
): StoredConfig {
  if (value === undefined) return { ...base };
  if (!isRecord(value)) {
    throw hubError(400, 'Cannot accept "config" as it is not an object');
  }
  const config = { ...base };
  for (const key of ["batchSize", "epochs", "imageSize", "patience"] as const) {
    const v = value[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !isFinite(v)) {
      throw hubError(
        400,
        `Cannot accept "config.${key}" as it is not a number`,
      );
    }
    config[key] = v;
  }
  for (const key of ["device", "cache"] as const) {
    const v = value[key];
    if (v === undefined || v === null) continue;
    if (
      typeof v !== "string" && typeof v !== "number" && typeof v !== "boolean"
    ) {
      throw hubError(
        400,
        `Cannot accept "config.${key}" as it is not a string`,
      );
    }
    config[key] = String(v);
  }
  return config;
}

function readName(
  container: unknown,
  field: string,
  required: boolean,
): string | undefined {
  if (container === undefined || container === null) {
    if (required) {
      throw hubError(
        400,
        `Cannot accept the model as "${field}" is missing`,
      );
    }
    return undefined;
  }
  if (!isRecord(container)) {
    throw hubError(
      400,
      `Cannot accept the model as "${
        field.split(".").slice(0, -1).join(".")
      }" is not an object`,
    );
  }
  const name = container.name;
  if (name === undefined || name === null) {
    if (required) {
      throw hubError(
        400,
        `Cannot accept the model as "${field}" is missing`,
      );
    }
    return undefined;
  }
  if (typeof name !== "string") {
    throw hubError(
      400,
      `Cannot accept the model as "${field}" is not a string`,
    );
  }
  if (required && name.trim() === "") {
    throw hubError(400, `Cannot accept the model as "${field}" is empty`);
  }
  return name;
}

/** Longest model name, in characters. */
export const MAX_MODEL_NAME_LENGTH = 200;

/**
 * Reads `meta.name`: trimmed, non-empty, at most
 * {@linkcode MAX_MODEL_NAME_LENGTH} characters; `undefined` when absent.
 */
function readModelName(container: unknown): string | undefined {
  const raw = readName(container, "meta.name", false);
  if (raw === undefined) return undefined;
  const name = raw.trim();
  if (name === "") {
    throw hubError(
      400,
      'Cannot accept the model as "meta.name" is empty: give it a name of 1 to 200 characters',
    );
  }
  const length = [...name].length;
  if (length > MAX_MODEL_NAME_LENGTH) {
    throw hubError(
      400,
      `Cannot accept the model as "meta.name" has ${length} characters: give it a name of 1 to ${MAX_MODEL_NAME_LENGTH} characters`,
    );
  }
  return name;
}

function readLineage(
  lineage: unknown,
): { architecture: string; parent: string | undefined } {
  if (!isRecord(lineage)) {
    throw hubError(
      400,
      lineage === undefined
        ? 'Cannot accept the model as "lineage.architecture.name" is missing'
        : 'Cannot accept the model as "lineage" is not an object',
    );
  }
  const architecture = readName(
    lineage.architecture,
    "lineage.architecture.name",
    true,
  )!;
  const parent = readName(lineage.parent, "lineage.parent.name", false);
  return {
    architecture,
    parent: parent === undefined || parent === "" ? undefined : parent,
  };
}

/**
 * Checks a model-creation payload; missing config values take the
 * protocol's defaults.
 *
 * @param body The request body.
 * @returns The new model.
 */
export function readNewModel(body: Record<string, unknown>): NewModel {
  const config = readConfig(body.config, { ...DEFAULT_MODEL_CONFIG });
  const dataset = readName(body.dataset, "dataset.name", false) ?? "";
  const { architecture, parent } = readLineage(body.lineage);
  const name = readModelName(body.meta) ?? architecture;
  return { name, dataset, architecture, parent, config };
}

const COMPUTED_FIELDS = new Set([
  "id",
  "cfg",
  "data",
  "weights",
  "resume",
  "has_last_weights",
  "has_best_weights",
  "is_pretrained",
  "is_custom",
  "train_args",
  "batch_size",
  "epochs",
  "imgsz",
  "patience",
  "device",
  "cache",
  "createdAt",
  "updatedAt",
  "heartbeat",
  "checkpoints",
  "exports",
  "name",
]);

/**
 * Applies a PATCH body to a record; computed fields are refused and `null`
 * removes an extra field.
 *
 * @param record The record to change.
 * @param patch The request body.
 */
export function applyPatch(
  record: ModelRecord,
  patch: Record<string, unknown>,
): void {
  for (const [key, value] of Object.entries(patch)) {
    switch (key) {
      case "config":
        record.config = readConfig(value, record.config);
        break;
      case "meta": {
        const name = readModelName(value);
        if (name !== undefined) record.name = name;
        break;
      }
      case "dataset":
        record.dataset = readName(value, "dataset.name", false) ?? "";
        break;
      case "lineage": {
        const lineage = readLineage(value);
        record.architecture = lineage.architecture;
        if (lineage.parent === undefined) delete record.parent;
        else record.parent = lineage.parent;
        break;
      }
      case "status":
        if (value !== "new" && value !== "training" && value !== "trained") {
          throw hubError(
            400,
            'Cannot update "status" as it is not "new", "training" or "trained"',
          );
        }
        record.status = value satisfies ModelStatus;
        break;
      default:
        if (COMPUTED_FIELDS.has(key)) {
          throw hubError(
            400,
            `Cannot update "${key}" as the server computes it`,
          );
        }
        if (value === null) delete record.extra[key];
        else record.extra[key] = value;
    }
  }
  const extraBytes = new TextEncoder().encode(JSON.stringify(record.extra))
    .length;
  if (extraBytes > MAX_EXTRA_BYTES) {
    throw hubError(
      413,
      `Cannot update the model as its extra fields would take ${extraBytes} bytes as JSON, more than ${MAX_EXTRA_BYTES}: remove fields by setting them to null`,
    );
  }
}

/**
 * Reads a form boolean as Python sends it (`True`, `false`, `1`, ``).
 *
 * @param value The field's text.
 * @param field The field's name, for the message.
 * @returns The boolean.
 */
export function parseBool(value: string, field: string): boolean {
  switch (value.trim().toLowerCase()) {
    case "true":
    case "1":
      return true;
    case "false":
    case "0":
    case "":
      return false;
    default:
      throw hubError(
        400,
        `Cannot accept the upload as "${field}" is not True or False`,
      );
  }
}
