/**
 * `POST /v1/auth`: checks a key (the client's first call).
 *
 * @module
 */

import { Hono } from "hono";
import { requireKey } from "../auth.ts";
import type { HubContext } from "../context.ts";
import { ok } from "../reply.ts";

/**
 * The authentication route.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function authRoutes(hub: HubContext): Hono {
  return new Hono().post(
    "/v1/auth",
    requireKey(hub.keys),
    () => ok({ uid: "local" }, "Authenticated"),
  );
}
