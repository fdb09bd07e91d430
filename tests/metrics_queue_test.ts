import { test } from "node:test";
import assert from "node:assert/strict";
import { MetricsQueue } from "../src/session/metrics_queue.ts";

test("MetricsQueue keeps an epoch until the batch that carried it is acknowledged", () => {
  const queue = new MetricsQueue();
  queue.add(1, { a: 1 });
  queue.add(0, { a: 0 });
  const batch = queue.take();
  assert.deepEqual([...batch.metrics.keys()], [0, 1]);
  assert.deepEqual(queue.pendingEpochs, [0, 1], "taking does not remove");
  queue.add(2, { a: 2 });
  assert.deepEqual(queue.ack(batch), [0, 1]);
  assert.deepEqual(queue.pendingEpochs, [2]);
  assert.deepEqual(queue.acknowledgedEpochs, [0, 1]);
});

test("MetricsQueue keeps a newer value queued while the older one was in flight", () => {
  const queue = new MetricsQueue();
  queue.add(0, { a: 1 });
  const batch = queue.take();
  queue.add(0, { a: 2 });
  assert.deepEqual(queue.ack(batch), []);
  assert.deepEqual(queue.take().metrics.get(0), { a: 2 });
});

test("MetricsQueue copies the metrics so later changes by the caller do not leak in", () => {
  const queue = new MetricsQueue();
  const metrics = { a: 1 };
  queue.add(0, metrics);
  metrics.a = 99;
  assert.deepEqual(queue.take().metrics.get(0), { a: 1 });
});

test("MetricsQueue rejects bad epochs and values with built-in errors", () => {
  const queue = new MetricsQueue();
  assert.throws(() => queue.add(-1, {}), RangeError);
  assert.throws(() => queue.add(1.5, {}), RangeError);
  assert.throws(
    () => queue.add(1, null as unknown as Record<string, number>),
    TypeError,
  );
  assert.throws(
    () => queue.add(1, { a: "x" } as unknown as Record<string, number>),
    TypeError,
  );
  assert.equal(queue.size, 0);
});
