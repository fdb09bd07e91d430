/// <reference lib="dom" />
/**
 * The web app in a real headless Chromium (Debian's `chromium`, driven over
 * the DevTools protocol by puppeteer-core): charts, read-outs, live updates,
 * login, layout at 420 px, dark mode, hostile names, and no console errors,
 * CSP violations or requests to other hosts.
 *
 * Skipped loudly when no Chromium is found, except in CI where that fails.
 */
import { after, before, describe, test } from "node:test";
import { assert, assertEquals, assertMatch } from "@std/assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "puppeteer-core";
import { type HubServer, serveHub } from "../src/server/mod.ts";
import {
  browserSkipReason,
  createModel,
  launchBrowser,
  startWebServer,
  trainingMetrics,
  type WebServer,
} from "./support/web.ts";

const KEY = "browser-key-" + "z".repeat(30);
const skip = browserSkipReason();

const HOSTILE_NAMES = [
  "<script>alert(1)</script>",
  '"><img src=x onerror=alert(2)>',
  "</title><svg onload=alert(3)>",
  "x".repeat(300),
];
const HOSTILE_KEYS = [
  '"><script>alert(4)</script>',
  "metrics/<b>bold</b>",
  "a'b\"c&d",
];

interface Watched {
  page: Page;
  /** Console errors and warnings, page errors, CSP violations. */
  problems: string[];
  /** Every URL the page requested. */
  requests: string[];
  /** Dialogs opened (alert, confirm): none may ever open. */
  dialogs: string[];
}

async function watch(browser: Browser): Promise<Watched> {
  const page = await browser.newPage();
  const watched: Watched = { page, problems: [], requests: [], dialogs: [] };
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warn") {
      watched.problems.push(`${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => watched.problems.push(`pageerror: ${error}`));
  page.on("request", (request) => watched.requests.push(request.url()));
  page.on("dialog", async (dialog) => {
    watched.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  await page.evaluateOnNewDocument(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(
        `CSP violation: ${event.violatedDirective} ${event.blockedURI}`,
      );
    });
  });
  return watched;
}

function assertClean(watched: Watched, origin: string): void {
  assertEquals(watched.problems, [], "no console errors or CSP violations");
  assertEquals(watched.dialogs, [], "no dialog opened");
  const foreign = watched.requests.filter((url) => !url.startsWith(origin));
  assertEquals(foreign, [], "no request to another origin");
}

/** Number of points per series key, over polylines and single dots. */
function pointsByKey(page: Page): Promise<Record<string, number>> {
  return page.$$eval("svg [data-key]", (elements) => {
    const counts: Record<string, number> = {};
    for (const element of elements) {
      const key = element.getAttribute("data-key") ?? "";
      const points = element.tagName === "circle"
        ? 1
        : (element.getAttribute("points") ?? "").trim().split(/\s+/).length;
      counts[key] = (counts[key] ?? 0) + points;
    }
    return counts;
  });
}

describe("the web app in a real browser", { skip }, () => {
  let browser: Browser;
  let server: WebServer;
  let trained: string;
  const hostile: string[] = [];

  before(async () => {
    browser = await launchBrowser();
    server = await startWebServer();
    trained = await createModel(server.store, "yolov8n coco8 300 epochs", 300);
    const epochs: Record<number, ReturnType<typeof trainingMetrics>> = {};
    for (let e = 0; e < 300; e++) epochs[e] = trainingMetrics(e);
    await server.addEpochs(trained, epochs);
    for (const name of HOSTILE_NAMES) {
      const id = await createModel(server.store, name, 10);
      const metrics: Record<string, number> = {};
      HOSTILE_KEYS.forEach((key, i) => metrics[key] = i + 1);
      await server.addEpochs(id, { 0: metrics, 1: metrics });
      hostile.push(id);
    }
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test("the model page charts every metric over all 300 epochs, cleanly", async () => {
    const watched = await watch(browser);
    const { page } = watched;
    const response = await page.goto(`${server.url}/models/${trained}`);
    assertEquals(response?.status(), 200);
    assertEquals(
      await page.$$eval("figure.chart svg[role=img]", (s) => s.length),
      5,
    );
    const counts = await pointsByKey(page);
    assertEquals(Object.keys(counts).length, 13);
    for (const [key, count] of Object.entries(counts)) {
      assertEquals(count, 300, key);
    }
    const names = await page.$$eval(
      "figure.chart svg",
      (svgs) => svgs.map((svg) => svg.getAttribute("aria-labelledby")),
    );
    assert(
      names.every((n) => n !== null && n.includes("-t")),
      "accessible names",
    );
    assertEquals(
      await page.$eval(".besttext", (t) => t.textContent),
      "best 298",
    );
    assertEquals(await page.$$eval("main", (m) => m.length), 1);
    assert(await page.$$eval("nav", (n) => n.length) >= 1);
    assertClean(watched, server.url);
    await page.close();
  });

  test("hovering a chart, or focusing it and pressing arrow keys, reads out an epoch", async () => {
    const watched = await watch(browser);
    const { page } = watched;
    await page.setViewport({ width: 1200, height: 900 });
    await page.goto(`${server.url}/models/${trained}`);
    const svg = (await page.$("figure.chart svg"))!;
    const box = (await svg.boundingBox())!;
    await page.mouse.move(box.x + box.width - 14, box.y + box.height / 2);
    const readout = () =>
      page.$eval("figure.chart .readout", (o) => o.textContent ?? "");
    await page.waitForFunction(
      () => document.querySelector("figure.chart .readout")?.textContent !== "",
    );
    assertMatch(
      await readout(),
      /^epoch (29\d|300): train\/box_loss 0\.\d+, val\/box_loss 0\.\d+$/,
    );
    // Reach the first chart with the Tab key, as a keyboard user would.
    for (let tabs = 0; tabs < 40; tabs++) {
      await page.keyboard.press("Tab");
      const onChart = await page.evaluate(() =>
        document.activeElement?.matches("figure.chart svg") ?? false
      );
      if (onChart) break;
    }
    assert(
      await page.evaluate(() =>
        document.activeElement === document.querySelector("figure.chart svg")
      ),
      "the first chart is reachable with Tab",
    );
    await page.keyboard.press("End");
    assertMatch(await readout(), /^epoch 300: /);
    await page.keyboard.press("ArrowLeft");
    assertMatch(await readout(), /^epoch 299: /);
    await page.keyboard.press("Home");
    assertMatch(
      await readout(),
      /^epoch 1: train\/box_loss 1\.5, val\/box_loss 1\.6$/,
    );
    const outline = await page.$eval(
      "figure.chart svg",
      (s) => getComputedStyle(s).outlineStyle,
    );
    assertEquals(outline, "solid", "visible focus");
    assertClean(watched, server.url);
    await page.close();
  });

  test("at 420 px neither page scrolls sideways, even with the data table open", async () => {
    const watched = await watch(browser);
    const { page } = watched;
    await page.setViewport({ width: 420, height: 900 });
    for (const path of ["/", `/models/${trained}`, `/models/${hostile[3]}`]) {
      await page.goto(`${server.url}${path}`);
      if (await page.$("details#data summary") !== null) {
        await page.click("details#data summary");
      }
      const width = await page.evaluate(() =>
        document.documentElement.scrollWidth
      );
      assert(width <= 420, `${path} is ${width} px wide at 420 px`);
    }
    assertClean(watched, server.url);
    await page.close();
  });

  test("the pages follow prefers-color-scheme: dark", async () => {
    const watched = await watch(browser);
    const { page } = watched;
    await page.emulateMediaFeatures([{
      name: "prefers-color-scheme",
      value: "light",
    }]);
    await page.goto(`${server.url}/models/${trained}`);
    const background = () =>
      page.evaluate(() =>
        getComputedStyle(document.documentElement).backgroundColor
      );
    assertEquals(await background(), "rgb(251, 251, 252)");
    await page.emulateMediaFeatures([{
      name: "prefers-color-scheme",
      value: "dark",
    }]);
    assertEquals(await background(), "rgb(15, 18, 22)");
    const stroke = await page.$eval(
      "polyline.c0",
      (p) => getComputedStyle(p).stroke,
    );
    assertEquals(stroke, "rgb(88, 166, 255)");
    assertClean(watched, server.url);
    await page.close();
  });

  test("hostile model names and metric keys render as text", async () => {
    const watched = await watch(browser);
    const { page } = watched;
    for (const [i, id] of hostile.entries()) {
      await page.goto(`${server.url}/models/${id}`);
      assertEquals(
        await page.$eval("h1", (h) => h.textContent),
        HOSTILE_NAMES[i],
      );
      assertEquals(
        await page.$$eval("main script, main img, main b", (e) => e.length),
        0,
      );
      const keys = await page.$$eval(
        "#metrics-table thead th[data-key]",
        (ths) => ths.map((th) => th.textContent),
      );
      assertEquals(keys, HOSTILE_KEYS);
      assertEquals(await page.title(), `${HOSTILE_NAMES[i]} · Local HUB`);
    }
    await page.goto(`${server.url}/`);
    const listed = await page.$$eval(
      "td.name a",
      (as) => as.map((a) => a.textContent),
    );
    for (const name of HOSTILE_NAMES) assert(listed.includes(name), name);
    assertClean(watched, server.url);
    await page.close();
  });
});

describe("the web app of a running HUB in a real browser", { skip }, () => {
  let browser: Browser;
  let dir: string;
  let hub: HubServer;
  const auth = { "x-api-key": KEY, "content-type": "application/json" };

  async function api(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<unknown> {
    const response = await fetch(`${hub.url}${path}`, {
      method,
      headers: auth,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = await response.json();
    assert(response.ok, JSON.stringify(json));
    return json.data;
  }

  async function newModel(name: string): Promise<string> {
    const data = await api("POST", "/v1/models", {
      config: { epochs: 5 },
      dataset: { name: "coco8.yaml" },
      lineage: { architecture: { name: "yolov8n" }, parent: {} },
      meta: { name },
    }) as { id: string };
    return data.id;
  }

  async function postEpoch(id: string, epoch: number): Promise<void> {
    await api("POST", `/v1/models/${id}`, {
      type: "metrics",
      metrics: { [epoch]: JSON.stringify(trainingMetrics(epoch)) },
    });
  }

  before(async () => {
    browser = await launchBrowser();
    dir = await mkdtemp(join(tmpdir(), "hub-browser-"));
    hub = await serveHub({ dataDir: dir, apiKeys: [KEY] });
  });
  after(async () => {
    await browser?.close();
    await hub?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("logging in on the login page sets a strict HttpOnly session cookie, and logging out ends it", async () => {
    const id = await newModel("login test");
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const first = await page.goto(`${hub.url}/models/${id}`);
    assertEquals(first?.status(), 401);
    assert(await page.$("input[type=password]") !== null);
    await page.type("input[type=password]", "not-the-key");
    await Promise.all([
      page.waitForNavigation(),
      page.click("button[type=submit]"),
    ]);
    assertMatch(
      await page.$eval("[role=alert]", (p) => p.textContent ?? ""),
      /not accepted/,
    );
    await page.type("input[type=password]", KEY);
    await Promise.all([
      page.waitForNavigation(),
      page.click("main button[type=submit]"),
    ]);
    assertEquals(page.url(), `${hub.url}/models/${id}`);
    assertEquals(await page.$eval("h1", (h) => h.textContent), "login test");
    const cookies = await context.cookies();
    assertEquals(cookies.length, 1);
    const [cookie] = cookies;
    assertEquals(cookie!.name, "hub_session");
    assertEquals(cookie!.httpOnly, true);
    assertEquals(cookie!.sameSite, "Strict");
    assertEquals(cookie!.secure, false, "plain http on loopback");
    assert(
      cookie!.expires > Date.now() / 1000,
      "expiring, not a session-less cookie",
    );
    assert(
      !cookie!.value.includes(KEY) &&
        !decodeURIComponent(cookie!.value).includes(KEY),
    );
    assertEquals(
      await page.evaluate(() => document.cookie),
      "",
      "not readable by scripts",
    );
    assert(!(await page.content()).includes(KEY));
    await Promise.all([
      page.waitForNavigation(),
      page.click("form[action='/logout'] button"),
    ]);
    assertEquals(page.url(), `${hub.url}/login`);
    const again = await page.goto(`${hub.url}/models/${id}`);
    assertEquals(again?.status(), 401);
    await context.close();
  });

  test("opening a model URL with ?api_key= logs in once and drops the key from the URL", async () => {
    const id = await newModel("api key link");
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const response = await page.goto(`${hub.url}/models/${id}?api_key=${KEY}`);
    assertEquals(response?.status(), 200);
    assertEquals(page.url(), `${hub.url}/models/${id}`);
    assertEquals(await page.evaluate(() => location.search), "");
    assertEquals(await page.$eval("h1", (h) => h.textContent), "api key link");
    assertEquals((await context.cookies()).length, 1);
    // The session opens the list page too.
    const list = await page.goto(`${hub.url}/`);
    assertEquals(list?.status(), 200);
    await context.close();
  });

  test("an epoch posted through the API appears on an open page without a reload", async () => {
    const id = await newModel("live run");
    await postEpoch(id, 0);
    await postEpoch(id, 1);
    const context = await browser.createBrowserContext();
    const watched = await watch(context as unknown as Browser);
    const { page } = watched;
    await page.goto(`${hub.url}/models/${id}?api_key=${KEY}`);
    assertEquals(
      await page.$eval("#live", (l) => l.getAttribute("data-epochs")),
      "2",
    );
    await page.evaluate(() => {
      (globalThis as { marker?: number }).marker = 42;
    });
    await page.click("details#data summary");
    await postEpoch(id, 2);
    await page.waitForFunction(
      () =>
        document.getElementById("live")?.getAttribute("data-epochs") === "3",
      { timeout: 15_000 },
    );
    assertEquals(
      await page.evaluate(() => (globalThis as { marker?: number }).marker),
      42,
    );
    const counts = await pointsByKey(page);
    assertEquals(counts["train/box_loss"], 3);
    assertEquals(
      await page.$eval("details#data", (d) => (d as HTMLDetailsElement).open),
      true,
    );
    await api("PATCH", `/v1/models/${id}`, { status: "trained" });
    await page.waitForFunction(
      () =>
        document.getElementById("live")?.getAttribute("data-status") ===
          "trained",
      { timeout: 15_000 },
    );
    assertClean(watched, hub.url);
    await context.close();
  });
});
