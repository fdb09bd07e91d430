/**
 * The local HUB answers requests shaped exactly as the Python clients send
 * them: `hub-sdk` (ultralytics/hub-sdk: hub_sdk/base/auth.py,
 * hub_sdk/base/api_client.py, hub_sdk/base/crud_client.py,
 * hub_sdk/base/server_clients.py, hub_sdk/modules/models.py) over
 * python-requests/urllib3, and the Ultralytics trainer session that reads the
 * model document (`_set_train_args`).
 */
import { describe, test } from "node:test";
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type HubServer, serveHub } from "../src/server/mod.ts";

const API_KEY = "0123456789abcdef0123456789abcdef0123456789"; // 42 characters
const AGENT_NAME = "python-3.11.4-local";
const encoder = new TextEncoder();

/** Headers python-requests adds to every request. */
const REQUESTS_HEADERS = {
  "user-agent": "python-requests/2.31.0",
  "accept-encoding": "gzip, deflate",
  "accept": "*/*",
  "connection": "keep-alive",
};

type PyValue = string | number | boolean | null | PyValue[] | {
  [key: string]: PyValue;
};

/** `str(value)` in Python, as requests sends a form field. */
function pyStr(value: string | number | boolean): string {
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

/** Python's `json.dumps` with its default separators (`", "`, `": "`). */
function jsonDumps(value: PyValue | number): string {
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    if (value === Infinity) return "Infinity";
    if (value === -Infinity) return "-Infinity";
    return String(value);
  }
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(jsonDumps).join(", ")}]`;
  return `{${
    Object.entries(value).map(([k, v]) =>
      `${JSON.stringify(k)}: ${jsonDumps(v)}`
    )
      .join(", ")
  }}`;
}

interface PyRequest {
  /** `json=` argument. */
  json?: PyValue;
  /** `data=` argument (form fields), in dict order. */
  data?: Record<string, string | number | boolean>;
  /** `files=` argument: field name -> bytes (filename = field name). */
  files?: Record<string, Uint8Array>;
  /** The session's auth header. */
  auth?: Record<string, string>;
}

/** Encodes `data` + `files` as urllib3's encode_multipart_formdata does. */
function encodeMultipart(
  boundary: string,
  data: Record<string, string | number | boolean>,
  files: Record<string, Uint8Array>,
): Uint8Array<ArrayBuffer> {
  const chunks: Uint8Array[] = [];
  for (const [name, value] of Object.entries(data)) {
    chunks.push(encoder.encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${
        pyStr(value)
      }\r\n`,
    ));
  }
  for (const [name, bytes] of Object.entries(files)) {
    chunks.push(encoder.encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}"\r\n\r\n`,
    ));
    chunks.push(bytes, encoder.encode("\r\n"));
  }
  chunks.push(encoder.encode(`--${boundary}--\r\n`));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

interface PyResponse {
  status: number;
  json: { success?: boolean; data?: unknown; message?: string };
}

/** Sends a request the way `requests.request(method, url, ...)` does. */
async function pyRequest(
  url: string,
  method: string,
  request: PyRequest = {},
): Promise<PyResponse> {
  const headers: Record<string, string> = {
    ...REQUESTS_HEADERS,
    ...request.auth,
  };
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (request.json !== undefined) {
    headers["content-type"] = "application/json";
    body = encoder.encode(jsonDumps(request.json));
  } else if (request.files !== undefined) {
    const boundary = randomBytes(16).toString("hex");
    headers["content-type"] = `multipart/form-data; boundary=${boundary}`;
    body = encodeMultipart(boundary, request.data ?? {}, request.files);
  } else if (method !== "GET" && method !== "HEAD") {
    headers["content-length"] = "0";
  }
  const response = await fetch(url, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const text = await response.text();
  return { status: response.status, json: JSON.parse(text) };
}

/** `Models._reconstruct_data` of hub-sdk (hub_sdk/modules/models.py). */
function reconstructData(
  data: Record<string, unknown>,
): Record<string, unknown> {
  const pop = (key: string): unknown => {
    const value = data[key] ?? null;
    delete data[key];
    return value;
  };
  data.config = {
    batchSize: pop("batch_size"),
    epochs: pop("epochs"),
    imageSize: pop("imgsz"),
    patience: pop("patience"),
    device: pop("device"),
    cache: pop("cache"),
  };
  return data;
}

/** `HUBTrainingSession.create_model`'s payload for `yolov8n.pt` + coco8. */
const CREATE_PAYLOAD: PyValue = {
  config: {
    batchSize: 16,
    epochs: 2,
    imageSize: 640,
    patience: 100,
    device: "",
    cache: "ram",
  },
  dataset: { name: "coco8.yaml" },
  lineage: {
    architecture: { name: "yolov8n" },
    parent: { name: "yolov8n.pt" },
  },
  meta: { name: "yolov8n.pt" },
};

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function withServer(
  fn: (server: HubServer) => Promise<void>,
  apiKeys?: string[],
): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), "hub-compat-"));
  const server = await serveHub({
    dataDir,
    ...(apiKeys === undefined ? {} : { apiKeys }),
  });
  try {
    await fn(server);
  } finally {
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const auth = { "x-api-key": API_KEY };

async function createModel(server: HubServer): Promise<string> {
  // CRUDClient.create: POST {HUB_API_ROOT}/v1/models with json=payload.
  const reply = await pyRequest(`${server.url}/v1/models`, "POST", {
    json: CREATE_PAYLOAD,
    auth,
  });
  assertEquals(reply.status, 200);
  // Models.create_model reads resp_data.get("data", {}).get("id").
  const id = (reply.json.data as { id?: string }).id;
  assertEquals(typeof id, "string");
  return id!;
}

async function getModelData(
  server: HubServer,
  id: string,
): Promise<Record<string, unknown>> {
  // CRUDClient.read: GET {HUB_API_ROOT}/v1/models/{id}; raise_for_status.
  const reply = await pyRequest(`${server.url}/v1/models/${id}`, "GET", {
    auth,
  });
  assertEquals(reply.status, 200);
  return reconstructData(reply.json.data as Record<string, unknown>);
}

describe("hub-sdk compatibility", () => {
  test("Auth.authenticate() succeeds with a known key and fails with an unknown one", async () => {
    await withServer(async (server) => {
      // requests.post(f"{HUB_API_ROOT}/v1/auth", headers=header): no body, no raise.
      const good = await pyRequest(`${server.url}/v1/auth`, "POST", { auth });
      assertEquals(good.json.success, true);
      const bad = await pyRequest(`${server.url}/v1/auth`, "POST", {
        auth: { "x-api-key": "f".repeat(42) },
      });
      assertEquals(bad.json.success, false);
      const token = await pyRequest(`${server.url}/v1/auth`, "POST", {
        auth: { authorization: `Bearer ${API_KEY}` },
      });
      assertEquals(token.json.success, true);
    }, [API_KEY]);
  });

  test("create_model() then get_data() give the fields HUBTrainingSession reads", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const data = await getModelData(server, id);
      // is_trained / is_resumable / is_pretrained / get_architecture / get_dataset_url
      assertNotEquals(data.status, "trained");
      assertEquals(data.has_last_weights, false);
      assertEquals(data.is_pretrained, true);
      assertEquals(data.cfg, "yolov8n.yaml");
      assertEquals(data.data, "coco8.yaml");
      // _set_train_args: get_train_args(self.model.data.get("config"))
      const config = data.config as Record<string, unknown>;
      const trainArgs = {
        batch: config.batchSize,
        epochs: config.epochs,
        imgsz: config.imageSize,
        patience: config.patience,
        device: config.device,
        cache: config.cache,
        data: data.data,
      };
      assertEquals(trainArgs, {
        batch: 16,
        epochs: 2,
        imgsz: 640,
        patience: 100,
        device: "",
        cache: "ram",
        data: "coco8.yaml",
      });
      // model_file = get_weights_url("parent") when pretrained: `weights`.
      assertEquals(data.weights, "yolov8n.pt");
    }, [API_KEY]);
  });

  test("upload_metrics() with json.dumps strings, NaN included, lists parsed and sorted", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const epoch0 = {
        "train/box_loss": 1.25,
        "metrics/mAP50-95(B)": 0.5,
        "model/parameters": 3157200,
        "model/GFLOPs": 8.9,
        "model/speed_PyTorch(ms)": 12.5,
      };
      // ModelUpload.upload_metrics: POST /v1/models/{id} json={"metrics": data, "type": "metrics"}
      for (
        const metrics of [
          { "1": jsonDumps({ "train/box_loss": 1.0, "val/box_loss": NaN }) },
          { "0": jsonDumps(epoch0) },
        ]
      ) {
        const reply = await pyRequest(`${server.url}/v1/models/${id}`, "POST", {
          json: { metrics, type: "metrics" },
          auth,
        });
        assertEquals(reply.status, 200, reply.json.message);
        assertEquals(reply.json.success, true);
      }
      // Models.get_metrics: GET /v1/models/{id}/metrics -> .json().get("data")
      const list = await pyRequest(
        `${server.url}/v1/models/${id}/metrics`,
        "GET",
        {
          auth,
        },
      );
      assertEquals(list.json.data, [
        { epoch: 0, metrics: epoch0 },
        { epoch: 1, metrics: { "train/box_loss": 1, "val/box_loss": null } },
      ]);
    }, [API_KEY]);
  });

  test("upload_model() checkpoints and final weights as requests encodes them", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const last = randomBytes(1024 * 1024 + 5);
      // data = {"epoch": epoch, "type": "epoch", "isBest": bool(is_best)}; files = {"last.pt": file}
      const checkpoint = await pyRequest(
        `${server.url}/v1/models/${id}/upload`,
        "POST",
        {
          data: { epoch: 1, type: "epoch", isBest: true },
          files: { "last.pt": last },
          auth,
        },
      );
      assertEquals(checkpoint.status, 200, checkpoint.json.message);
      let data = await getModelData(server, id);
      assertEquals(data.has_last_weights, true); // is_resumable()
      assertEquals(data.status, "training");
      // get_weights_url("last") -> resume; the trainer downloads it without headers.
      const resume = data.resume as string;
      assert(
        resume.startsWith(`${server.url}/v1/models/${id}/files/last.pt`),
      );
      const download = await fetch(resume, { headers: REQUESTS_HEADERS });
      assertEquals(download.status, 200);
      assertEquals(
        sha256(new Uint8Array(await download.arrayBuffer())),
        sha256(last),
      );

      const best = randomBytes(700_000);
      // data = {"epoch": epoch, "type": "final", "map": map}; files = {"best.pt": file}
      const final = await pyRequest(
        `${server.url}/v1/models/${id}/upload`,
        "POST",
        {
          data: { epoch: 2, type: "final", map: 0.512 },
          files: { "best.pt": best },
          auth,
        },
      );
      assertEquals(final.status, 200, final.json.message);
      data = await getModelData(server, id);
      assertEquals(data.status, "trained"); // is_trained()
      assertEquals(data.has_best_weights, true);
      const weights = data.weights as string; // get_weights_url("best")
      const served = await fetch(weights, { headers: REQUESTS_HEADERS });
      assertEquals(
        sha256(new Uint8Array(await served.arrayBuffer())),
        sha256(best),
      );
    }, [API_KEY]);
  });

  test("the heartbeat loop gets an agentId and keeps it on later beats", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      const url = `${server.url}/v1/agent/heartbeat/models/${id}`;
      // payload = {"agent": AGENT_NAME, "agentId": self.agent_id}; reads res["data"]["agentId"]
      const first = await pyRequest(url, "POST", {
        json: { agent: AGENT_NAME, agentId: null },
        auth,
      });
      assertEquals(first.status, 200);
      const agentId = (first.json.data as { agentId: string }).agentId;
      assert(agentId);
      const second = await pyRequest(url, "POST", {
        json: { agent: AGENT_NAME, agentId },
        auth,
      });
      assertEquals((second.json.data as { agentId: string }).agentId, agentId);
    }, [API_KEY]);
  });

  test("export(), update() and delete() are answered with the envelope", async () => {
    await withServer(async (server) => {
      const id = await createModel(server);
      // ModelUpload.export: POST /v1/models/{id}/export json={"format": format}
      const exported = await pyRequest(
        `${server.url}/v1/models/${id}/export`,
        "POST",
        {
          json: { format: "onnx" },
          auth,
        },
      );
      assertEquals(exported.status, 200);
      assertEquals(exported.json.success, true);
      // CRUDClient.update: PATCH /v1/models/{id} json=data
      const updated = await pyRequest(
        `${server.url}/v1/models/${id}`,
        "PATCH",
        {
          json: { meta: { name: "renamed" } },
          auth,
        },
      );
      assertEquals(updated.status, 200);
      // CRUDClient.delete passes `hard` as params: False sends no query, True "?True".
      const soft = await pyRequest(
        `${server.url}/v1/models/${id}?True`,
        "DELETE",
        {
          auth,
        },
      );
      assertEquals(soft.status, 200);
      assertEquals(soft.json.success, true);
      const gone = await pyRequest(`${server.url}/v1/models/${id}`, "GET", {
        auth,
      });
      assertEquals(gone.status, 404);
      assertEquals(gone.json.success, false);
    }, [API_KEY]);
  });

  test("a request without a key gets a JSON 401 the SDK can read", async () => {
    await withServer(async (server) => {
      const reply = await pyRequest(`${server.url}/v1/models`, "POST", {
        json: CREATE_PAYLOAD,
      });
      assertEquals(reply.status, 401);
      assertEquals(reply.json.success, false);
      assert(reply.json.message);
    }, [API_KEY]);
  });
});
