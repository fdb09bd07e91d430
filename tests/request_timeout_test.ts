/**
 * The HUB's per-request time limit (`requestTimeout`, `src/server/deadline.ts`)
 * against real stores: a PostgreSQL table locked by a second connection, and
 * a file-store commit stopped at a crash point in a child process. A request
 * that cannot be answered in time gets 503 with `Retry-After` (the envelope,
 * or an HTML page for a browser), its work is cancelled, and the server keeps
 * answering everything else; once the obstacle is gone the same request
 * succeeds. Behaviour only: a body stalls for more than twice the limit, a
 * limit leaves room to see a statement wait, and every wait is for a
 * condition with a generous bound.
 *
 * @module
 */

import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { createHubApp } from "../src/server/app.ts";
import { type HubServer, serveHub } from "../src/server/mod.ts";
import { CREATE_PAYLOAD, type Envelope, withServer } from "./support/server.ts";
import { type HubProcess, startHubScript } from "./support/hub_process.ts";
import {
  createTestDatabase,
  haveServices,
  type TestDatabase,
} from "./support/services.ts";
import { quietLogger, waitUntil } from "./support/common.ts";
import { request as httpRequest } from "node:http";
import { PlatformTransport } from "../src/transport/platform/transport.ts";
import { startPlatformHub, TEST_PLATFORM_KEY } from "./support/platform_hub.ts";

const FIXTURE = fileURLToPath(
  new URL("./fixtures/deadline_hub.ts", import.meta.url),
);

interface Reply {
  status: number;
  headers: Headers;
  text: string;
}

async function call(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined
      ? headers
      : { "content-type": "application/json", ...headers },
    body: body === undefined ? null : JSON.stringify(body),
    // Fails the test instead of hanging it if no answer ever comes.
    signal: AbortSignal.timeout(60_000),
  });
  return {
    status: response.status,
    headers: response.headers,
    text: await response.text(),
  };
}

function envelope(reply: Reply): Envelope {
  return JSON.parse(reply.text) as Envelope;
}

/** Asserts the 503 of a request whose time ran out, as an API client sees it. */
function assertTimedOut(reply: Reply): void {
  assertEquals(reply.status, 503, reply.text);
  assertMatch(reply.headers.get("retry-after") ?? "", /^\d+$/);
  assertStringIncludes(
    reply.headers.get("content-type") ?? "",
    "application/json",
  );
  const body = envelope(reply);
  assertEquals(body.success, false);
  assertStringIncludes(body.message ?? "", "may or may not have taken effect");
  assertStringIncludes(body.message ?? "", "retry");
}

async function createModel(url: string): Promise<string> {
  const reply = await call(url, "POST", "/v1/models", CREATE_PAYLOAD);
  assertEquals(reply.status, 200, reply.text);
  return (envelope(reply).data as { id: string }).id;
}

function metrics(epoch: number): unknown {
  return {
    type: "metrics",
    metrics: { [epoch]: JSON.stringify({ "metrics/mAP50(B)": epoch / 10 }) },
  };
}

async function storedEpochs(url: string, id: string): Promise<number[]> {
  const reply = await call(url, "GET", `/v1/models/${id}/metrics`);
  assertEquals(reply.status, 200, reply.text);
  return (envelope(reply).data as { epoch: number }[]).map((e) => e.epoch);
}

describe("request time limit: options", () => {
  test("requestTimeout that is not a positive number is refused up front", async () => {
    for (const bad of [0, -1, Number.NaN, Infinity]) {
      assertThrows(
        () => createHubApp({ dataDir: "/nonexistent", requestTimeout: bad }),
        RangeError,
        "requestTimeout",
      );
      await assertRejects(
        () => serveHub({ dataDir: "/nonexistent", requestTimeout: bad }),
        RangeError,
        "requestTimeout",
      );
    }
  });

  test("the time an upload's body takes to arrive is not counted", async () => {
    const errors: unknown[] = [];
    await withServer(async (server) => {
      const id = await createModel(server.url);
      const boundary = "deadline-boundary";
      const encoder = new TextEncoder();
      const head = encoder.encode(
        `--${boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nepoch\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="epoch"\r\n\r\n1\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="last.pt"; filename="last.pt"\r\n\r\nfirst half `,
      );
      const tail = encoder.encode(`second half\r\n--${boundary}--\r\n`);
      // The body stalls for several times the limit between its halves.
      const body = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(head);
          await new Promise((resolve) => setTimeout(resolve, 4_000));
          controller.enqueue(tail);
          controller.close();
        },
      });
      const init: RequestInit & { duplex: "half" } = {
        method: "POST",
        headers: {
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body,
        duplex: "half",
        signal: AbortSignal.timeout(60_000),
      };
      const response = await fetch(
        `${server.url}/v1/models/${id}/upload`,
        init,
      );
      const text = await response.text();
      assertEquals(response.status, 200, text);
      const document = envelope(
        await call(server.url, "GET", `/v1/models/${id}`),
      ).data as { weights?: unknown };
      assert(JSON.stringify(document).includes("last.pt"));
    }, { requestTimeout: 1_500, onError: (error) => errors.push(error) });
    assertEquals(errors, []);
  });
});

/**
 * PUTs `halves` to `url` with an exact Content-Length, pausing `pauseMs`
 * between them (node:http, since fetch sends a stream body chunked).
 */
function slowPut(
  url: string,
  halves: [Uint8Array, Uint8Array],
  pauseMs: number,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, {
      method: "PUT",
      headers: {
        "content-length": String(halves[0].byteLength + halves[1].byteLength),
        "content-type": "application/octet-stream",
      },
      timeout: 60_000,
    }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => text += chunk);
      response.on("end", () => resolve({ status: response.statusCode!, text }));
      response.on("error", reject);
    });
    request.on("error", reject);
    request.on("timeout", () => request.destroy(new Error("no answer")));
    request.write(halves[0]);
    setTimeout(() => request.end(halves[1]), pauseMs);
  });
}

describe("request time limit on the Platform's signed upload", () => {
  test("a signed PUT whose body arrives slower than the limit is accepted", async () => {
    const hub = await startPlatformHub({ requestTimeout: 1_500 });
    try {
      const t = new PlatformTransport({
        webhooksUrl: hub.webhooksUrl,
        apiKey: TEST_PLATFORM_KEY,
        project: "ada/road-signs",
        name: "slow-upload",
        logger: quietLogger,
      });
      await t.startRun({ epochs: 1 });
      const { uploadUrl } = await t.client.requestUpload("last.pt", {
        modelId: t.modelId!,
      }, t.runId);
      const reply = await slowPut(uploadUrl, [
        new TextEncoder().encode("first half "),
        new TextEncoder().encode("second half"),
      ], 4_000);
      assertEquals(reply.status, 200, reply.text);
      assertEquals(JSON.parse(reply.text).size, 22);
    } finally {
      await hub.close();
    }
  });
});

describe("request time limit on the file store, a commit stopped at a crash point", () => {
  let dataDir: string;
  let hub: HubProcess | undefined;
  let stuck: string;
  let other: string;
  let uploading: string;
  let marker: string;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "hub-deadline-files-"));
    marker = join(dataDir, "crash-marker");
    // Two models, both training (so a metrics post only appends).
    const setup = await serveHub({ dataDir });
    try {
      stuck = await createModel(setup.url);
      other = await createModel(setup.url);
      uploading = await createModel(setup.url);
      for (const id of [stuck, other, uploading]) {
        assertEquals(
          (await call(setup.url, "POST", `/v1/models/${id}`, metrics(0)))
            .status,
          200,
        );
      }
    } finally {
      await setup.close();
    }
    // Every document write of this process stops once its temporary file is
    // synced, holding the model's lock, as a disk that stopped answering.
    hub = await startHubScript(FIXTURE, [dataDir, "500"], {
      HUB_TEST_CRASH_AT: "document-synced",
      HUB_TEST_CRASH_MARKER: marker,
    });
  });

  after(async () => {
    await hub?.kill("SIGKILL");
    await rm(dataDir, { recursive: true, force: true });
  });

  test("a write whose commit hangs answers 503, and the commit is not half-done", async () => {
    const url = hub!.url;
    const patched = await call(url, "PATCH", `/v1/models/${stuck}`, {
      status: "trained",
    });
    assertTimedOut(patched);
    assert(existsSync(marker), "the PATCH reached the document write");
    // The document was not replaced: the previous one is served.
    const current = await call(url, "GET", `/v1/models/${stuck}`);
    assertEquals(current.status, 200, current.text);
    assertEquals(
      (envelope(current).data as { status?: string }).status,
      "training",
    );
  });

  test("a write waiting for the stuck model's lock gives up with 503 and stores nothing", async () => {
    const url = hub!.url;
    assertTimedOut(
      await call(url, "POST", `/v1/models/${stuck}`, metrics(1)),
    );
    assertEquals(await storedEpochs(url, stuck), [0]);
  });

  test("an upload whose commit hangs after its body arrived answers 503 and serves no file", async () => {
    const url = hub!.url;
    const form = new FormData();
    form.set("epoch", "1");
    form.set("type", "epoch");
    form.set("last.pt", new Blob([new Uint8Array(100_000).fill(7)]), "last.pt");
    const response = await fetch(`${url}/v1/models/${uploading}/upload`, {
      method: "POST",
      body: form,
      signal: AbortSignal.timeout(60_000),
    });
    assertTimedOut({
      status: response.status,
      headers: response.headers,
      text: await response.text(),
    });
    const document = envelope(
      await call(url, "GET", `/v1/models/${uploading}`),
    ).data as { has_last_weights?: boolean; resume?: string };
    assertEquals(document.has_last_weights, false);
    assertEquals(document.resume, undefined);
    const download = await call(
      url,
      "GET",
      `/v1/models/${uploading}/files/last.pt`,
    );
    assertEquals(download.status, 404, download.text);
  });

  test("the server keeps answering other requests, pages and writes", async () => {
    const url = hub!.url;
    assertEquals((await call(url, "GET", "/v1")).status, 200);
    const posted = await call(url, "POST", `/v1/models/${other}`, metrics(1));
    assertEquals(posted.status, 200, posted.text);
    assertEquals(await storedEpochs(url, other), [0, 1]);
    const page = await call(url, "GET", `/models/${other}`, undefined, {
      accept: "text/html",
    });
    assertEquals(page.status, 200);
    assertStringIncludes(page.text, other);
    const list = await call(url, "GET", "/", undefined, {
      accept: "text/html",
    });
    assertEquals(list.status, 200);
    assertStringIncludes(list.text, stuck);
    // The requests that timed out were not reported as server errors.
    assert(!hub!.output().includes("unexpected server error"), hub!.output());
  });
});

if (haveServices("request time limit on PostgreSQL", ["postgres"])) {
  describe("request time limit on PostgreSQL, a table locked by another connection", () => {
    let db: TestDatabase;
    let dataDir: string;
    let server: HubServer;
    let admin: postgres.Sql;
    let id: string;
    const errors: unknown[] = [];

    before(async () => {
      db = await createTestDatabase();
      dataDir = await mkdtemp(join(tmpdir(), "hub-deadline-pg-"));
      server = await serveHub({
        dataDir,
        database: db.url,
        // Long enough to see the statement wait on a loaded machine.
        requestTimeout: 2_000,
        onError: (error) => errors.push(error),
      });
      admin = postgres(db.url, { max: 2, onnotice: () => {} });
      id = await createModel(server.url);
      const posted = await call(
        server.url,
        "POST",
        `/v1/models/${id}`,
        metrics(0),
      );
      assertEquals(posted.status, 200, posted.text);
    });

    after(async () => {
      await server?.close();
      await admin?.end();
      await db?.drop();
      await rm(dataDir, { recursive: true, force: true });
    });

    /** Statements of this database waiting for a lock whose text has `needle`. */
    async function waiting(needle: string): Promise<number> {
      const rows = await admin<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock'
          AND query LIKE ${"%" + needle + "%"}`;
      return rows[0]!.n;
    }

    /**
     * Runs `request` while another connection holds a lock: `hub_models`
     * in ACCESS EXCLUSIVE mode (every statement on it waits), or the
     * model's row (writes wait, reads do not). Checks that the request's
     * statement waits for the lock and is gone (cancelled) once the request
     * was answered, with the lock still held. Releases the lock before
     * returning the reply.
     */
    async function whileLocked(
      lock: "table" | "row",
      needle: string,
      request: () => Promise<Reply>,
    ): Promise<Reply> {
      const holder = await admin.reserve();
      try {
        await holder`BEGIN`;
        if (lock === "table") {
          await holder`LOCK TABLE hub_models IN ACCESS EXCLUSIVE MODE`;
        } else {
          await holder`SELECT 1 FROM hub_models WHERE id = ${id} FOR UPDATE`;
        }
        const pending = request();
        await waitUntil(
          async () => await waiting(needle) > 0,
          `the request's statement waits for the lock (${needle})`,
          30_000,
        );
        const reply = await pending;
        await waitUntil(
          async () => await waiting(needle) === 0,
          `the timed-out statement is cancelled (${needle})`,
          30_000,
        );
        return reply;
      } finally {
        await holder`ROLLBACK`;
        holder.release();
      }
    }

    test("a read blocked on the lock answers 503, its query is cancelled, and it succeeds once the lock is released", async () => {
      const reply = await whileLocked(
        "table",
        "SELECT document FROM hub_models",
        () => call(server.url, "GET", `/v1/models/${id}`),
      );
      assertTimedOut(reply);
      const again = await call(server.url, "GET", `/v1/models/${id}`);
      assertEquals(again.status, 200, again.text);
      assertEquals((envelope(again).data as { id: string }).id, id);
    });

    test("a metrics post blocked on the lock answers 503, stores nothing, and its retry stores the epoch", async () => {
      const reply = await whileLocked(
        "row",
        "WITH incoming AS",
        () => call(server.url, "POST", `/v1/models/${id}`, metrics(1)),
      );
      assertTimedOut(reply);
      assertEquals(await storedEpochs(server.url, id), [0]);
      const retried = await call(
        server.url,
        "POST",
        `/v1/models/${id}`,
        metrics(1),
      );
      assertEquals(retried.status, 200, retried.text);
      assertEquals(await storedEpochs(server.url, id), [0, 1]);
    });

    test("a PATCH blocked on the row lock answers 503, its transaction is rolled back, and its retry applies", async () => {
      const reply = await whileLocked(
        "row",
        "deleted_at IS NULL FOR UPDATE",
        () =>
          call(server.url, "PATCH", `/v1/models/${id}`, { status: "trained" }),
      );
      assertTimedOut(reply);
      const status = async (): Promise<string | undefined> =>
        (envelope(await call(server.url, "GET", `/v1/models/${id}`))
          .data as { status?: string }).status;
      assertEquals(await status(), "training");
      const retried = await call(server.url, "PATCH", `/v1/models/${id}`, {
        status: "trained",
      });
      assertEquals(retried.status, 200, retried.text);
      assertEquals(await status(), "trained");
    });

    test("a model page blocked on the lock answers a 503 HTML page, then renders", async () => {
      const reply = await whileLocked(
        "table",
        "SELECT document FROM hub_models",
        () =>
          call(server.url, "GET", `/models/${id}`, undefined, {
            accept: "text/html",
          }),
      );
      assertEquals(reply.status, 503);
      assertMatch(reply.headers.get("retry-after") ?? "", /^\d+$/);
      assertStringIncludes(
        reply.headers.get("content-type") ?? "",
        "text/html",
      );
      assertStringIncludes(reply.text, "Try again");
      const again = await call(server.url, "GET", `/models/${id}`, undefined, {
        accept: "text/html",
      });
      assertEquals(again.status, 200);
      assertStringIncludes(again.text, id);
      // The error page is a page like the others: the same security headers.
      const csp = again.headers.get("content-security-policy");
      assert(csp !== null, "pages carry a Content-Security-Policy");
      assertEquals(reply.headers.get("content-security-policy"), csp);
      assertEquals(reply.headers.get("x-frame-options"), "DENY");
    });

    test("no timed-out request was reported as a server error", () => {
      assertEquals(errors, []);
    });
  });
}
