/**
 * `POST /v1/agent/heartbeat/models/{id}`: a trainer says it is alive; the
 * reply carries the agent id it should send next time.
 *
 * @module
 */

import { Hono } from "hono";
import { requireKey } from "../auth.ts";
import { jsonBody } from "../body.ts";
import { type HubContext, modelNotFound, readModelJson } from "../context.ts";
import { hubError } from "../errors.ts";
import { MAX_AGENT_LENGTH } from "../limits.ts";
import { ok } from "../reply.ts";

/**
 * The heartbeat route.
 *
 * @param hub Shared state.
 * @returns The routes.
 */
export function heartbeatRoutes(hub: HubContext): Hono {
  return new Hono().post(
    "/v1/agent/heartbeat/models/:id",
    requireKey(hub.keys),
    jsonBody(hub),
    async (c) => {
      const { id, store, body: { agent, agentId } } = await readModelJson(
        hub,
        c,
      );
      if (
        agent !== undefined && agent !== null &&
        (typeof agent !== "string" || agent.length > MAX_AGENT_LENGTH)
      ) {
        throw hubError(
          400,
          `Cannot accept the heartbeat as "agent" is not a string of at most ${MAX_AGENT_LENGTH} characters`,
        );
      }
      if (
        agentId !== undefined && agentId !== null &&
        (typeof agentId !== "string" || agentId.length > 128)
      ) {
        throw hubError(
          400,
          'Cannot accept the heartbeat as "agentId" is not a string or null',
        );
      }
      const beat = hub.now();
      const updated = await store.update(id, (r) => {
        const assigned = typeof agentId === "string" && agentId !== ""
          ? agentId
          : crypto.randomUUID();
        r.heartbeat = {
          agentId: assigned,
          agent: typeof agent === "string" ? agent : "unknown",
          lastSeen: beat,
        };
        if (r.status === "new") r.status = "training";
        return assigned;
      }, beat);
      if (updated === undefined) throw modelNotFound(id);
      return ok({ agentId: updated.result }, "Heartbeat received");
    },
  );
}
