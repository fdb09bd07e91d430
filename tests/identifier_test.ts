import { test } from "node:test";
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { isModelId, parseIdentifier } from "../src/session/identifier.ts";
import { HUBModelError } from "../src/common/errors.ts";

const ID = "AbCdEfGhIj0123456789";
const KEY = "a1b2c3d4e5".repeat(4) + "ZZ"; // 42 characters
const WEB = "https://hub.ultralytics.com";

test("parseIdentifier() accepts every documented format", () => {
  const table: Array<[string, ReturnType<typeof parseIdentifier>]> = [
    [ID, { modelId: ID }],
    [`  ${ID}\n`, { modelId: ID }],
    [`${KEY}_${ID}`, { apiKey: KEY, modelId: ID }],
    [`${WEB}/models/${ID}`, { modelId: ID }],
    [`${WEB}/models/${ID}/`, { modelId: ID }],
    [`${WEB}/models/${ID}?api_key=${KEY}`, { apiKey: KEY, modelId: ID }],
    [`${WEB}/models/${ID}/?api_key=${KEY}`, { apiKey: KEY, modelId: ID }],
    ["yolov8n.pt", { filename: "yolov8n.pt" }],
    ["yolov8n.yaml", { filename: "yolov8n.yaml" }],
    ["runs/train/weights/last.pt", { filename: "runs/train/weights/last.pt" }],
    ["my_model_v2.pt", { filename: "my_model_v2.pt" }],
  ];
  for (const [input, expected] of table) {
    assertEquals(parseIdentifier(input), expected, input);
  }
});

test("parseIdentifier() accepts model URLs of a configured web root", () => {
  const web = "http://127.0.0.1:8123";
  assertEquals(parseIdentifier(`${web}/models/${ID}`, { webRoot: web }), {
    modelId: ID,
  });
  assertEquals(
    parseIdentifier(`${web}/models/${ID}`, { webRoot: `${web}/` }),
    {
      modelId: ID,
    },
  );
});

test("parseIdentifier() rejects malformed identifiers with the accepted formats", () => {
  const bad = [
    "",
    "   ",
    "abc",
    ID.slice(1),
    ID + "x",
    `${KEY}_${ID}_extra`,
    `${KEY.slice(1)}_${ID}`,
    "model.pth",
    ".pt",
    "yolov8n.PT",
    "https://example.com/models/" + ID,
    `${WEB}/datasets/${ID}`,
    `${WEB}/models/${ID.slice(2)}`,
    `${WEB}/models/${ID}/extra`,
    "ftp://hub.ultralytics.com/models/" + ID,
    "Ω".repeat(20),
  ];
  for (const input of bad) {
    const error = assertThrows(
      () => parseIdentifier(input),
      HUBModelError,
      undefined,
      JSON.stringify(input),
    );
    assertMatch(error.message, /accepted formats|model id|model page/);
  }
});

test("parseIdentifier() never repeats an API key in its errors", () => {
  const inputs = [
    `${KEY}_short`,
    `${KEY}_${ID}!`,
    `${KEY}`,
    `https://example.com/models/${ID}?api_key=${KEY}`,
    `${WEB}/models/${ID}?api_key=${KEY}!!`,
    `${WEB}/models/bad?api_key=${KEY}`,
    `${KEY}-${ID}`,
    `key=${KEY}`,
  ];
  for (const input of inputs) {
    const error = assertThrows(() => parseIdentifier(input), HUBModelError);
    assert(!error.message.includes(KEY), error.message);
    assert(!String(error.stack).includes(KEY));
  }
});

test("parseIdentifier() quotes short harmless input so users see their typo", () => {
  const error = assertThrows(() => parseIdentifier("yolov8n.ptx"));
  assertMatch(String(error), /"yolov8n\.ptx"/);
});

test("parseIdentifier() rejects a non-string with a TypeError", () => {
  assertThrows(() => parseIdentifier(42 as unknown as string), TypeError);
});

test("isModelId() checks length and characters", () => {
  assertEquals(isModelId(ID), true);
  assertEquals(isModelId(ID.slice(1)), false);
  assertEquals(isModelId("AbCdEfGhIj012345678-"), false);
});
