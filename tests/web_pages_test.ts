/**
 * The web app's pages over a real store on loopback, read with real fetch:
 * escaping, login and the session cookie, `?api_key=`, the list page,
 * downloads and the event stream. (The browser tests are in
 * web_browser_test.ts.)
 */
import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertFalse,
  assertMatch,
  assertNotMatch,
  assertStringIncludes,
} from "@std/assert";
import {
  createModel,
  startWebServer,
  trainingMetrics,
  type WebServer,
} from "./support/web.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveHub } from "../src/server/mod.ts";
import { waitUntil } from "./support/common.ts";

const KEY = "k3y-" + "x".repeat(36);
const HTML = { accept: "text/html,application/xhtml+xml,*/*;q=0.8" };

/** Hostile names and metric keys: each must render as its own text. */
const HOSTILE = [
  "<script>alert(1)</script>",
  '"><img src=x onerror=alert(2)>',
  "' onmouseover='alert(3)",
  "</title><svg onload=alert(4)>",
  "&lt;already escaped&gt; & amp",
  "\u202Eevil\u202C",
  "a".repeat(300),
];

function cookieOf(response: Response): string {
  const header = response.headers.get("set-cookie") ?? "";
  return header.split(";")[0]!;
}

describe("web pages on an open server", () => {
  let server: WebServer;
  before(async () => {
    server = await startWebServer();
  });
  after(async () => {
    await server.close();
  });

  test("hostile model names and metric keys render as text, never as markup", async () => {
    for (const name of HOSTILE) {
      const id = await createModel(server.store, name, 3);
      await server.addEpochs(id, {
        0: { [name]: 1, "train/loss": 2 },
        1: { [name]: 0.5 },
      });
      const response = await fetch(`${server.url}/models/${id}`, {
        headers: HTML,
      });
      assertEquals(response.status, 200);
      const page = await response.text();
      assertNotMatch(
        page,
        /<script>alert|<img src=x|<svg onload|onmouseover='/,
      );
      const escaped = name.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(
        />/g,
        "&gt;",
      )
        .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
      assertStringIncludes(page, `<h1 id="title">${escaped}</h1>`);
      assertStringIncludes(page, `data-key="${escaped}"`);
    }
    const list = await (await fetch(`${server.url}/`, { headers: HTML }))
      .text();
    assertNotMatch(list, /<script>alert|<img src=x|<svg onload/);
  });

  test("pages are sent with a same-origin-only Content-Security-Policy", async () => {
    const response = await fetch(`${server.url}/`, { headers: HTML });
    await response.body?.cancel();
    const csp = response.headers.get("content-security-policy") ?? "";
    assertStringIncludes(csp, "default-src 'none'");
    assertStringIncludes(csp, "script-src 'self'");
    assertStringIncludes(csp, "style-src 'self'");
    assertEquals(
      response.headers.get("content-type"),
      "text/html; charset=utf-8",
    );
  });

  test("pages are gzipped for browsers that accept it, event streams never", async () => {
    const id = await createModel(server.store, "gzip", 300);
    const epochs: Record<number, ReturnType<typeof trainingMetrics>> = {};
    for (let e = 0; e < 50; e++) epochs[e] = trainingMetrics(e);
    await server.addEpochs(id, epochs);
    const page = await fetch(`${server.url}/models/${id}`, {
      headers: { ...HTML, "accept-encoding": "gzip" },
    });
    assertEquals(page.headers.get("content-encoding"), "gzip");
    assertStringIncludes(await page.text(), "Best epoch");
    const controller = new AbortController();
    const events = await fetch(`${server.url}/models/${id}/events`, {
      headers: { "accept-encoding": "gzip" },
      signal: controller.signal,
    });
    assertEquals(events.headers.get("content-encoding"), null);
    controller.abort();
    await events.body?.cancel().catch(() => {});
  });

  test("an empty model name still gets a clickable link on the list page", async () => {
    const id = await createModel(server.store, "   ", 3);
    const list = await (await fetch(`${server.url}/?q=`, { headers: HTML }))
      .text();
    assertMatch(
      list,
      new RegExp(
        `<a href="/models/${id}"><span class="muted">\\(unnamed\\)</span></a>`,
      ),
    );
  });

  test("the model page charts every epoch, keeps epoch-0 model info and marks the best epoch", async () => {
    const id = await createModel(server.store, "charts", 300);
    const epochs: Record<number, ReturnType<typeof trainingMetrics>> = {};
    for (let e = 0; e < 120; e++) epochs[e] = trainingMetrics(e);
    await server.addEpochs(id, epochs);
    const page =
      await (await fetch(`${server.url}/models/${id}`, { headers: HTML }))
        .text();
    const series = [
      ...page.matchAll(
        /<polyline class="line c\d" data-key="([^"]+)" points="([^"]+)"/g,
      ),
    ];
    assertEquals(series.length, 13);
    for (const [, , points] of series) {
      assertEquals(points!.trim().split(" ").length, 120);
    }
    // box, cls and dfl losses (train vs val), metrics, learning rate.
    assertEquals((page.match(/<svg /g) ?? []).length, 5);
    assertStringIncludes(page, "120 / 300 epochs");
    assertStringIncludes(page, "<dt>parameters</dt><dd>3157200</dd>");
    // The highest mAP50-95 of trainingMetrics() in 0..119 is at epoch key
    // 115: the page counts from 1, as the trainer's console does.
    assertStringIncludes(page, "Best epoch: 116");
    assertStringIncludes(page, ">best 116</text>");
    assertStringIncludes(page, "120 epochs, 1 to 120.");
    assertEquals((page.match(/<tr><th scope="row">/g) ?? []).length, 120);
  });

  test("a NaN value breaks the line instead of drawing a point", async () => {
    const id = await createModel(server.store, "gaps", 5);
    await server.addEpochs(id, {
      0: { loss: 3 },
      1: { loss: 2 },
      2: { loss: null },
      3: { loss: 1 },
      4: { loss: 0.5 },
    });
    const page =
      await (await fetch(`${server.url}/models/${id}`, { headers: HTML }))
        .text();
    const lines = [
      ...page.matchAll(/<polyline [^>]*data-key="loss" points="([^"]+)"/g),
    ];
    assertEquals(lines.map((m) => m[1]!.split(" ").length), [2, 2]);
    assertStringIncludes(page, "<td>NaN</td>");
  });

  test("CSV and JSON downloads carry every epoch, with formula-like keys neutralised", async () => {
    const id = await createModel(server.store, "csv", 3);
    await server.addEpochs(id, {
      0: { "=cmd()": 1, "a,b": 2 },
      1: { "=cmd()": null },
    });
    const csv = await (await fetch(`${server.url}/models/${id}/metrics.csv`))
      .text();
    assertEquals(csv, `epoch,'=cmd(),"a,b"\r\n1,1,2\r\n2,NaN,\r\n`);
    const json = await (await fetch(`${server.url}/models/${id}/metrics.json`))
      .json();
    assertEquals(json, [
      { epoch: 0, metrics: { "=cmd()": 1, "a,b": 2 } },
      { epoch: 1, metrics: { "=cmd()": null } },
    ]);
  });

  test("an unknown model answers a 404 page", async () => {
    const response = await fetch(`${server.url}/models/nope<b>`, {
      headers: HTML,
    });
    assertEquals(response.status, 404);
    const page = await response.text();
    assertStringIncludes(
      page,
      "Cannot find the model <code>nope&lt;b&gt;</code>",
    );
  });

  test("the event stream sends the current state at once and an update after new epochs", async () => {
    const id = await createModel(server.store, "live", 10);
    await server.addEpochs(id, { 0: trainingMetrics(0) });
    const controller = new AbortController();
    const response = await fetch(`${server.url}/models/${id}/events`, {
      signal: controller.signal,
    });
    assertEquals(
      response.headers.get("content-type"),
      "text/event-stream; charset=utf-8",
    );
    const reader = response.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    const events = (): string[] =>
      [...text.matchAll(/event: update\ndata: (.*)\n/g)].map((m) => m[1]!);
    const pump = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text += value;
        }
      } catch {
        // Aborted below.
      }
    })();
    await waitUntil(() => events().length >= 1, "the first event arrives");
    assertEquals(JSON.parse(events()[0]!).epochs, 1);
    await server.addEpochs(id, {
      1: trainingMetrics(1),
      2: trainingMetrics(2),
    });
    await waitUntil(
      () => events().some((e) => JSON.parse(e).epochs === 3),
      "an update with 3 epochs arrives",
    );
    controller.abort();
    await pump;
    await waitUntil(
      () => server.web.live.connections === 0,
      "the stream is closed on the server",
    );
  });
});

describe("web list page with 1,000 models", () => {
  let server: WebServer;
  const ids: string[] = [];
  before(async () => {
    server = await startWebServer();
    const start = Date.now() - 10_000;
    for (let i = 0; i < 1000; i++) {
      ids.push(
        await createModel(
          server.store,
          `run-${String(i).padStart(4, "0")}`,
          10,
          start + i,
        ),
      );
    }
  });
  after(async () => {
    await server.close();
  });

  test("lists newest first, 50 a page, with links to the other pages", async () => {
    const first = await (await fetch(`${server.url}/`, { headers: HTML }))
      .text();
    const names = [...first.matchAll(/<a href="\/models\/\w+">(run-\d+)<\/a>/g)]
      .map((m) => m[1]);
    assertEquals(names.length, 50);
    assertEquals(names[0], "run-0999");
    assertEquals(names[49], "run-0950");
    assertStringIncludes(first, "Page 1 of 20");
    assertStringIncludes(first, `href="/?page=2"`);
    const last =
      await (await fetch(`${server.url}/?page=20`, { headers: HTML })).text();
    assertStringIncludes(last, ">run-0000</a>");
  });

  test("filters by name, case-insensitively, and says how many match", async () => {
    const page =
      await (await fetch(`${server.url}/?q=RUN-012`, { headers: HTML })).text();
    const names = [...page.matchAll(/<a href="\/models\/\w+">(run-\d+)<\/a>/g)]
      .map((m) => m[1]);
    assertEquals(names.length, 10);
    assertStringIncludes(page, "10 models matching");
    assertStringIncludes(page, 'value="RUN-012"');
  });

  test("API clients asking for JSON are not given the HTML list", async () => {
    const response = await fetch(`${server.url}/`, {
      headers: { accept: "application/json" },
    });
    await response.body?.cancel();
    assertFalse(
      (response.headers.get("content-type") ?? "").startsWith("text/html"),
    );
  });
});

describe("web pages on a keyed server", () => {
  let server: WebServer;
  let id: string;
  before(async () => {
    server = await startWebServer({ apiKeys: [KEY] });
    id = await createModel(server.store, "secret model", 3);
    await server.addEpochs(id, { 0: trainingMetrics(0) });
  });
  after(async () => {
    await server.close();
  });

  test("a browser without a session gets the login page, with no model data", async () => {
    for (const path of ["/", `/models/${id}`]) {
      const response = await fetch(`${server.url}${path}`, { headers: HTML });
      assertEquals(response.status, 401);
      assertEquals(
        response.headers.get("content-type"),
        "text/html; charset=utf-8",
      );
      const page = await response.text();
      assertStringIncludes(page, 'type="password"');
      assertStringIncludes(page, `name="next" value="${path}"`);
      assertFalse(page.includes("secret model"));
    }
    const events = await fetch(`${server.url}/models/${id}/events`);
    await events.body?.cancel();
    assertEquals(events.status, 401);
    const csv = await fetch(`${server.url}/models/${id}/metrics.csv`);
    await csv.body?.cancel();
    assertEquals(csv.status, 401);
  });

  test("logging in sets an HttpOnly, SameSite=Strict, expiring cookie without the key", async () => {
    const wrong = await fetch(`${server.url}/login`, {
      method: "POST",
      headers: { origin: server.url },
      body: new URLSearchParams({ key: "wrong", next: `/models/${id}` }),
      redirect: "manual",
    });
    assertEquals(wrong.status, 401);
    assertEquals(wrong.headers.get("set-cookie"), null);
    assertStringIncludes(await wrong.text(), "not accepted");
    const response = await fetch(`${server.url}/login`, {
      method: "POST",
      headers: { origin: server.url },
      body: new URLSearchParams({ key: KEY, next: `/models/${id}` }),
      redirect: "manual",
    });
    assertEquals(response.status, 303);
    assertEquals(response.headers.get("location"), `/models/${id}`);
    await response.body?.cancel();
    const header = response.headers.get("set-cookie") ?? "";
    assertMatch(header, /^hub_session=/);
    assertMatch(header, /; HttpOnly/);
    assertMatch(header, /; SameSite=Strict/);
    assertMatch(header, /; Max-Age=43200/);
    assertMatch(header, /; Path=\//);
    assertNotMatch(header, /; Secure/);
    assertFalse(header.includes(KEY));
    assertFalse(decodeURIComponent(header).includes(KEY));
    const cookie = cookieOf(response);
    const page = await fetch(`${server.url}/models/${id}`, {
      headers: { ...HTML, cookie },
    });
    assertEquals(page.status, 200);
    const text = await page.text();
    assertStringIncludes(text, "secret model");
    assertStringIncludes(text, 'action="/logout"');
    assertFalse(text.includes(KEY));
    const csv = await fetch(`${server.url}/models/${id}/metrics.csv`, {
      headers: { cookie },
    });
    assertEquals(csv.status, 200);
    await csv.body?.cancel();
  });

  test("the cookie is Secure when the page is served over https", async () => {
    const response = await fetch(`${server.url}/login`, {
      method: "POST",
      headers: { origin: server.url, "x-forwarded-proto": "https" },
      body: new URLSearchParams({ key: KEY, next: "/" }),
      redirect: "manual",
    });
    await response.body?.cancel();
    assertMatch(response.headers.get("set-cookie") ?? "", /; Secure/);
  });

  test("a forged or tampered cookie is refused", async () => {
    for (
      const cookie of [
        "hub_session=1.2",
        "hub_session=99999999999999.00000000000000000000000000000000.AAAA",
      ]
    ) {
      const response = await fetch(`${server.url}/models/${id}`, {
        headers: { ...HTML, cookie },
      });
      await response.body?.cancel();
      assertEquals(response.status, 401);
    }
  });

  test("a cross-site login or logout form is refused (CSRF)", async () => {
    for (const path of ["/login", "/logout"]) {
      const response = await fetch(`${server.url}${path}`, {
        method: "POST",
        headers: {
          origin: "https://evil.example",
          "sec-fetch-site": "cross-site",
        },
        body: new URLSearchParams({ key: KEY, next: "/" }),
        redirect: "manual",
      });
      await response.body?.cancel();
      assertEquals(response.status, 403);
      assertEquals(response.headers.get("set-cookie"), null);
    }
  });

  test("logging out revokes the session and clears the cookie", async () => {
    const login = await fetch(`${server.url}/login`, {
      method: "POST",
      headers: { origin: server.url },
      body: new URLSearchParams({ key: KEY, next: "/" }),
      redirect: "manual",
    });
    await login.body?.cancel();
    const cookie = cookieOf(login);
    const logout = await fetch(`${server.url}/logout`, {
      method: "POST",
      headers: { origin: server.url, cookie },
      redirect: "manual",
    });
    await logout.body?.cancel();
    assertEquals(logout.status, 303);
    assertMatch(
      logout.headers.get("set-cookie") ?? "",
      /^hub_session=; Max-Age=0/,
    );
    const again = await fetch(`${server.url}/`, {
      headers: { ...HTML, cookie },
    });
    await again.body?.cancel();
    assertEquals(again.status, 401);
  });

  test("?api_key= logs in once and redirects to the same URL without the key", async () => {
    const response = await fetch(
      `${server.url}/models/${id}?part=live&api_key=${encodeURIComponent(KEY)}`,
      { headers: HTML, redirect: "manual" },
    );
    await response.body?.cancel();
    assertEquals(response.status, 303);
    assertEquals(response.headers.get("location"), `/models/${id}?part=live`);
    const cookie = cookieOf(response);
    assert(cookie.startsWith("hub_session="));
    assertFalse(cookie.includes(KEY));
    const page = await fetch(`${server.url}/models/${id}`, {
      headers: { ...HTML, cookie },
    });
    await page.body?.cancel();
    assertEquals(page.status, 200);
    const wrong = await fetch(
      `${server.url}/models/${id}?api_key=nope-${"y".repeat(20)}`,
      {
        headers: HTML,
        redirect: "manual",
      },
    );
    assertEquals(wrong.status, 401);
    const text = await wrong.text();
    assertFalse(text.includes("nope-"));
    assertStringIncludes(text, `name="next" value="/models/${id}"`);
  });

  test("API clients keep using x-api-key and Bearer on the pages", async () => {
    for (
      const headers of [{ "x-api-key": KEY }, {
        authorization: `Bearer ${KEY}`,
      }]
    ) {
      const response = await fetch(`${server.url}/models/${id}`, {
        headers: { ...HTML, ...headers },
      });
      await response.body?.cancel();
      assertEquals(response.status, 200);
    }
  });

  test("login refuses to redirect to another host", async () => {
    const response = await fetch(`${server.url}/login`, {
      method: "POST",
      headers: { origin: server.url },
      body: new URLSearchParams({ key: KEY, next: "//evil.example/x" }),
      redirect: "manual",
    });
    await response.body?.cancel();
    assertEquals(response.headers.get("location"), "/");
  });
});

describe("stalled runs", () => {
  test("a training model without news for longer than the threshold is flagged stalled", async () => {
    let clock = Date.now();
    const server = await startWebServer({
      now: () => clock,
      stalledAfterMs: 60_000,
    });
    try {
      const id = await createModel(server.store, "quiet", 10);
      await server.addEpochs(id, { 0: trainingMetrics(0) });
      let page =
        await (await fetch(`${server.url}/models/${id}`, { headers: HTML }))
          .text();
      assertFalse(page.includes(">stalled</span>"));
      clock += 61_000;
      page =
        await (await fetch(`${server.url}/models/${id}`, { headers: HTML }))
          .text();
      assertStringIncludes(page, ">stalled</span>");
      assertStringIncludes(page, "No heartbeat or update for more than 1 min");
      const list = await (await fetch(`${server.url}/`, { headers: HTML }))
        .text();
      assertStringIncludes(list, ">stalled</span>");
    } finally {
      await server.close();
    }
  });
});

describe("the web app mounted in the HUB", () => {
  test("an epoch posted through the API reaches an open event stream", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hub-web-mount-"));
    const hub = await serveHub({ dataDir: dir, apiKeys: [KEY] });
    const controller = new AbortController();
    try {
      const auth = { "x-api-key": KEY, "content-type": "application/json" };
      const created = await fetch(`${hub.url}/v1/models`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({
          config: { epochs: 5 },
          dataset: { name: "coco8.yaml" },
          lineage: { architecture: { name: "yolov8n" }, parent: {} },
          meta: { name: "mounted" },
        }),
      });
      const { data: { id } } = await created.json();
      const login = await fetch(`${hub.url}/models/${id}?api_key=${KEY}`, {
        headers: HTML,
        redirect: "manual",
      });
      await login.body?.cancel();
      const cookie = cookieOf(login);
      const events = await fetch(`${hub.url}/models/${id}/events`, {
        headers: { cookie },
        signal: controller.signal,
      });
      assertEquals(events.status, 200);
      const reader = events.body!.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      const pump = (async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += value;
          }
        } catch {
          // Aborted below.
        }
      })();
      await waitUntil(() => text.includes('"epochs":0'), "the first event");
      const posted = await fetch(`${hub.url}/v1/models/${id}`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({
          type: "metrics",
          metrics: { 0: JSON.stringify(trainingMetrics(0)) },
        }),
      });
      assertEquals(posted.status, 200);
      await posted.body?.cancel();
      await waitUntil(() => text.includes('"epochs":1'), "the update event");
      controller.abort();
      await pump;
      // The health reply stays JSON for API clients.
      const health = await fetch(`${hub.url}/`);
      assertEquals((await health.json()).success, true);
    } finally {
      controller.abort();
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("closing the HUB ends open event streams instead of waiting for them", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hub-web-mount-"));
    const hub = await serveHub({ dataDir: dir });
    try {
      const created = await fetch(`${hub.url}/v1/models`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          lineage: { architecture: { name: "yolov8n" }, parent: {} },
          meta: { name: "closing" },
        }),
      });
      const { data: { id } } = await created.json();
      const events = await fetch(`${hub.url}/models/${id}/events`);
      const reader = events.body!.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      const ended = (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return true;
          text += value;
        }
      })().catch(() => true);
      await waitUntil(() => text.includes("event: update"), "the first event");
      await hub.close();
      assertEquals(await ended, true);
    } finally {
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a logged-in browser downloads weights and reads documents with its cookie alone", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hub-web-mount-"));
    const hub = await serveHub({ dataDir: dir, apiKeys: [KEY] });
    try {
      const created = await fetch(`${hub.url}/v1/models`, {
        method: "POST",
        headers: { "x-api-key": KEY, "content-type": "application/json" },
        body: JSON.stringify({
          lineage: { architecture: { name: "yolov8n" }, parent: {} },
          meta: { name: "weights" },
        }),
      });
      const { data: { id } } = await created.json();
      const boundary = "b0undary";
      const body = [
        `--${boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nfinal\r\n`,
        `--${boundary}\r\nContent-Disposition: form-data; name="epoch"\r\n\r\n2\r\n`,
        `--${boundary}\r\nContent-Disposition: form-data; name="best.pt"; filename="best.pt"\r\nContent-Type: application/octet-stream\r\n\r\nWEIGHTS\r\n`,
        `--${boundary}--\r\n`,
      ].join("");
      const uploaded = await fetch(`${hub.url}/v1/models/${id}/upload`, {
        method: "POST",
        headers: {
          "x-api-key": KEY,
          "content-type": `multipart/form-data; boundary=${boundary}`,
        },
        body,
      });
      assertEquals(uploaded.status, 200);
      await uploaded.body?.cancel();
      const anonymous = await fetch(`${hub.url}/v1/models/${id}/files/best.pt`);
      await anonymous.body?.cancel();
      assertEquals(anonymous.status, 401);
      const login = await fetch(`${hub.url}/login`, {
        method: "POST",
        headers: { origin: hub.url },
        body: new URLSearchParams({ key: KEY, next: `/models/${id}` }),
        redirect: "manual",
      });
      await login.body?.cancel();
      const cookie = cookieOf(login);
      const page = await (await fetch(`${hub.url}/models/${id}`, {
        headers: { ...HTML, cookie },
      })).text();
      assertStringIncludes(
        page,
        `<a href="/v1/models/${id}/files/best.pt" download="weights-${id}-best.pt">best.pt</a> · 7 B`,
      );
      const download = await fetch(`${hub.url}/v1/models/${id}/files/best.pt`, {
        headers: { cookie },
      });
      assertEquals(download.status, 200);
      assertEquals(await download.text(), "WEIGHTS");
      // The page's JSON document link opens too; writes still need the key.
      const document = await fetch(`${hub.url}/v1/models/${id}`, {
        headers: { cookie },
      });
      assertEquals(document.status, 200);
      assertEquals((await document.json()).data.name, "weights");
      const write = await fetch(`${hub.url}/v1/models/${id}`, {
        method: "PATCH",
        headers: { cookie, "content-type": "application/json" },
        body: JSON.stringify({ meta: { name: "changed" } }),
      });
      assertEquals(write.status, 401);
      await write.body?.cancel();
    } finally {
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("model names", () => {
  test("are trimmed, non-empty and at most 200 characters, on create and on rename", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hub-web-names-"));
    const hub = await serveHub({ dataDir: dir });
    const send = async (method: string, path: string, body: unknown) => {
      const response = await fetch(`${hub.url}${path}`, {
        method,
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.json() };
    };
    const model = (name: string) => ({
      lineage: { architecture: { name: "yolov8n" }, parent: {} },
      meta: { name },
    });
    try {
      const created = await send("POST", "/v1/models", model("  my run \n"));
      assertEquals(created.status, 200);
      const id = created.body.data.id;
      const doc = await (await fetch(`${hub.url}/v1/models/${id}`)).json();
      assertEquals(doc.data.name, "my run");
      for (const name of ["", "   ", "\t\n"]) {
        const refused = await send("POST", "/v1/models", model(name));
        assertEquals(refused.status, 400);
        assertStringIncludes(refused.body.message, '"meta.name" is empty');
      }
      const long = await send("POST", "/v1/models", model("n".repeat(201)));
      assertEquals(long.status, 400);
      assertStringIncludes(long.body.message, "has 201 characters");
      // 200 characters, counted as characters, not UTF-16 units.
      const emoji = await send("POST", "/v1/models", model("🚀".repeat(200)));
      assertEquals(emoji.status, 200);
      const rename = await send("PATCH", `/v1/models/${id}`, {
        meta: { name: " " },
      });
      assertEquals(rename.status, 400);
      const renamed = await send("PATCH", `/v1/models/${id}`, {
        meta: { name: " renamed " },
      });
      assertEquals(renamed.body.data.name, "renamed");
      // Without meta.name the architecture names the model, as before.
      const unnamed = await send("POST", "/v1/models", {
        lineage: { architecture: { name: "yolov8n" }, parent: {} },
      });
      assertEquals(unnamed.status, 200);
    } finally {
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
