import { test } from "node:test";
import { assertEquals, assertThrows } from "@std/assert";
import { MetricsQueue } from "../src/session/metrics_queue.ts";

test("MetricsQueue keeps an epoch until the batch that carried it is acknowledged", () => {
  const queue = new MetricsQueue();
  queue.add(1, { a: 1 });
  queue.add(0, { a: 0 });
  const batch = queue.take();
  assertEquals([...batch.metrics.keys()], [0, 1]);
  assertEquals(queue.pendingEpochs, [0, 1], "taking does not remove");
  queue.add(2, { a: 2 });
  assertEquals(queue.ack(batch), [0, 1]);
  assertEquals(queue.pendingEpochs, [2]);
  assertEquals(queue.acknowledgedEpochs, [0, 1]);
});

test("MetricsQueue keeps a newer value queued while the older one was in flight", () => {
  const queue = new MetricsQueue();
  queue.add(0, { a: 1 });
  const batch = queue.take();
  queue.add(0, { a: 2 });
  assertEquals(queue.ack(batch), []);
  assertEquals(queue.take().metrics.get(0), { a: 2 });
});

test("MetricsQueue copies the metrics so later changes by the caller do not leak in", () => {
  const queue = new MetricsQueue();
  const metrics = { a: 1 };
  queue.add(0, metrics);
  metrics.a = 99;
  assertEquals(queue.take().metrics.get(0), { a: 1 });
});

test("MetricsQueue rejects bad epochs and values with built-in errors", () => {
  const queue = new MetricsQueue();
  assertThrows(() => queue.add(-1, {}), RangeError);
  assertThrows(() => queue.add(1.5, {}), RangeError);
  assertThrows(
    () => queue.add(1, null as unknown as Record<string, number>),
    TypeError,
  );
  assertThrows(
    () => queue.add(1, { a: "x" } as unknown as Record<string, number>),
    TypeError,
  );
  assertEquals(queue.size, 0);
});
