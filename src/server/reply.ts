/**
 * Reply builders of the local HUB: the protocol's JSON envelope
 * `{success, data, message}` and HTML pages.
 *
 * Replies are built as plain `Response`s rather than through Hono's
 * `c.json()`: the envelope needs its own content type and the error path
 * builds replies outside any context.
 *
 * @module
 */

/**
 * A JSON reply.
 *
 * @param status HTTP status.
 * @param body Any JSON value.
 * @param headers Extra headers.
 * @returns The response.
 */
export function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/**
 * A successful envelope `{success: true, data, message}`.
 *
 * @param data The reply's data.
 * @param message A short human-readable line.
 * @param status HTTP status.
 * @returns The response.
 */
export function ok(data: unknown, message: string, status = 200): Response {
  return json(status, { success: true, data, message });
}

/**
 * A failed envelope `{success: false, message}`.
 *
 * @param status HTTP status.
 * @param message What went wrong and what to do.
 * @param headers Extra headers (e.g. `allow`).
 * @returns The response.
 */
export function fail(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return json(status, { success: false, message }, headers);
}

/**
 * `GET /v1`, and `GET /` for clients that do not ask for HTML.
 *
 * @returns The health reply; it needs no key and carries no data.
 */
export function healthReply(): Response {
  return ok({ name: "hub-session local HUB", api: "v1" }, "HUB is running");
}

/**
 * Whether a request for `/` asks for HTML: a browser's `Accept` names
 * `text/html` before any JSON type. Clients that send no `Accept`, `*\/*` or
 * `application/json` get the JSON health reply.
 *
 * @param request The request.
 * @returns `true` for a browser.
 */
export function wantsHtml(request: Request): boolean {
  const accept = request.headers.get("accept")?.toLowerCase() ?? "";
  const htmlAt = accept.indexOf("text/html");
  if (htmlAt === -1) return false;
  const jsonAt = accept.indexOf("application/json");
  return jsonAt === -1 || htmlAt < jsonAt;
}
