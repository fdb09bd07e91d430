/**
 * What every route of the local HUB shares: the store, the clock, the keys,
 * the limits and the base URL of the documents it renders.
 *
 * @module
 */

import type { Context } from "hono";
import type { ApiKeys } from "./auth.ts";
import { readJsonObject } from "./body.ts";
import { hubError } from "./errors.ts";
import type { HubStore, ModelRecord } from "./store.ts";

/** The shared state the route files are built with. */
export interface HubContext {
  /**
   * The store, opened on first use; for a request, its calls carry the
   * signal of the request's time limit (`deadline.ts`).
   */
  store(request?: Request | undefined): Promise<HubStore>;
  /** Clock in milliseconds since the epoch. */
  now(): number;
  /** Accepted API keys. */
  keys: ApiKeys;
  /** Largest accepted upload body in bytes. */
  maxUploadBytes: number;
  /** Aborted when the server shuts down. */
  signal: AbortSignal | undefined;
  /**
   * Base URL for absolute URLs in documents and pages: the configured
   * public URL, else the request's origin.
   */
  origin(request: Request): string;
  /**
   * Whether a request comes from a browser logged in to the web app (its
   * session cookie), which may download weights like a key holder.
   */
  browserSession?: ((c: Context) => Promise<boolean>) | undefined;
}

/**
 * Reads a model or refuses with 404.
 *
 * @param store The store.
 * @param id Model id from the path.
 * @returns The record.
 */
export async function findModel(
  store: HubStore,
  id: string,
): Promise<ModelRecord> {
  const record = await store.get(id);
  if (record === undefined) throw modelNotFound(id);
  return record;
}

/**
 * The 404 of an unknown (or soft-deleted) model.
 *
 * @param id Model id.
 * @returns The exception to throw.
 */
export function modelNotFound(id: string): Error {
  return hubError(404, `Cannot find the model "${id}"`);
}

/** A JSON request about one existing model, read by {@linkcode readModelJson}. */
export interface ModelJsonRequest {
  /** Model id from the path. */
  id: string;
  /** The store. */
  store: HubStore;
  /** The request's JSON object. */
  body: Record<string, unknown>;
}

/**
 * The start every JSON route on `/v1/models/:id...` shares: the id from the
 * path, the store, a 404 for an unknown model, then the JSON object body.
 *
 * @param hub Shared state.
 * @param c The request's context (its path has `:id`).
 * @returns The id, the store and the body.
 */
export async function readModelJson(
  hub: HubContext,
  c: Context,
): Promise<ModelJsonRequest> {
  const id = c.req.param("id") ?? "";
  const store = await hub.store(c.req.raw);
  await findModel(store, id);
  const body = await readJsonObject(c.req.raw);
  return { id, store, body };
}
