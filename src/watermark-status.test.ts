import assert from "node:assert/strict";
import { test } from "node:test";
import type { StreamPipeline } from "./api.ts";
import {
  mergeWatermarks,
  observed,
  parseWorkerWatermarks,
  refreshWatermarks,
  sameWatermarks,
  WatermarkObserver,
  type WatermarkStatus,
} from "./watermark-status.ts";

const T = Date.UTC(2026, 10, 29, 12, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString();

// As prom-client writes them, with the other metrics of a worker around.
const worker0 = `# HELP conveyor_runtime_source_watermark_ms Each assigned source partition's event-time watermark.
# TYPE conveyor_runtime_source_watermark_ms gauge
conveyor_runtime_source_watermark_ms{topic="orders",partition="0"} ${T}
conveyor_runtime_source_watermark_ms{topic="orders",partition="1"} ${T - 60_000}
# TYPE conveyor_runtime_source_idle gauge
conveyor_runtime_source_idle{topic="orders",partition="0"} 0
conveyor_runtime_source_idle{topic="orders",partition="1"} 1
conveyor_runtime_source_idle{topic="orders",partition="2"} 0
# TYPE conveyor_runtime_task_watermark_ms gauge
conveyor_runtime_task_watermark_ms{partition="0"} ${T - 5_000}
conveyor_runtime_task_watermark_ms{partition="1"} -Inf
conveyor_runtime_records_in_total 1234
`;
const worker1 = `conveyor_runtime_source_watermark_ms{topic="orders",partition="3"} ${T + 1_000}
conveyor_runtime_source_idle{topic="orders",partition="3"} 0
conveyor_runtime_task_watermark_ms{partition="2"} ${T - 9_000}
`;

test("a worker's /metrics gives its source partitions (watermark, idle) and its tasks' watermarks", () => {
  const w = parseWorkerWatermarks(worker0);
  assert.deepEqual(w.sources.get("orders:0"), { topic: "orders", partition: 0, watermark: T, idle: false });
  assert.deepEqual(w.sources.get("orders:1"), { topic: "orders", partition: 1, watermark: T - 60_000, idle: true });
  assert.deepEqual(w.sources.get("orders:2"), { topic: "orders", partition: 2, idle: false }, "no record with an event time yet");
  assert.deepEqual(
    [...w.tasks],
    [
      [0, T - 5_000],
      [1, Number.NEGATIVE_INFINITY],
    ],
  );
});

test("a pipeline with a window in two sub-topologies reports each partition's lowest task watermark", () => {
  const w = parseWorkerWatermarks(`conveyor_runtime_task_watermark_ms{step="per-user",partition="0"} ${T - 5_000}
conveyor_runtime_task_watermark_ms{step="top-user",partition="0"} ${T - 65_000}
conveyor_runtime_task_watermark_ms{step="top-user",partition="1"} ${T - 70_000}
conveyor_runtime_task_watermark_ms{step="per-user",partition="1"} ${T - 10_000}
`);
  assert.deepEqual(
    [...w.tasks],
    [
      [0, T - 65_000],
      [1, T - 70_000],
    ],
  );
});

test("the merged view lists every partition once, and low only when every task has a watermark", () => {
  const now = new Date(T + 30_000);
  const both = mergeWatermarks([parseWorkerWatermarks(worker0), parseWorkerWatermarks(worker1)], [], now);
  assert.equal(both.observedTime, now.toISOString());
  assert.equal(both.low, undefined, "task 1 has not heard from every source partition");
  assert.deepEqual(
    (both.sources ?? []).map((s) => [s.partition, s.watermark, s.idle]),
    [
      [0, iso(T), false],
      [1, iso(T - 60_000), true],
      [2, undefined, false],
      [3, iso(T + 1_000), false],
    ],
  );
  assert.deepEqual(both.tasks, [{ partition: 0, watermark: iso(T - 5_000) }, { partition: 1 }, { partition: 2, watermark: iso(T - 9_000) }]);

  const settled = mergeWatermarks([parseWorkerWatermarks(worker0.replace("-Inf", String(T - 2_000))), parseWorkerWatermarks(worker1)], ["w-2: timeout"], now);
  assert.equal(settled.low, iso(T - 9_000));
  assert.deepEqual(settled.unread, ["w-2: timeout"]);
});

test("a partition two workers report (one letting it go) takes the higher watermark, idle only if both say so", () => {
  const old = `conveyor_runtime_source_watermark_ms{topic="t",partition="0"} ${T - 10_000}\nconveyor_runtime_source_idle{topic="t",partition="0"} 1\n`;
  const cur = `conveyor_runtime_source_watermark_ms{topic="t",partition="0"} ${T}\nconveyor_runtime_source_idle{topic="t",partition="0"} 0\n`;
  const m = mergeWatermarks([parseWorkerWatermarks(old), parseWorkerWatermarks(cur)], [], new Date(T));
  assert.deepEqual(m.sources, [{ topic: "t", partition: 0, watermark: iso(T), idle: false }]);
});

test("two views read at different times are the same when their watermarks are", () => {
  const a = mergeWatermarks([parseWorkerWatermarks(worker1)], [], new Date(T));
  const b = mergeWatermarks([parseWorkerWatermarks(worker1)], [], new Date(T + 15_000));
  assert.ok(sameWatermarks(a, b));
  assert.ok(!sameWatermarks(a, mergeWatermarks([parseWorkerWatermarks(worker1.replace(String(T + 1_000), String(T + 2_000)))], [], new Date(T))));
  assert.ok(!sameWatermarks(undefined, a));
});

const pipeline = (over: Partial<StreamPipeline["status"]> = {}, window = true): StreamPipeline => ({
  apiVersion: "conveyor.dev/v1alpha1",
  kind: "StreamPipeline",
  metadata: { name: "p", namespace: "ns" },
  spec: {
    kafka: { bootstrapServers: ["k:9092"] },
    source: { topics: ["orders"] },
    steps: window ? [{ name: "w", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } }] : [{ name: "f", filter: "true" }],
    sink: { topic: "out" },
  },
  status: { readyReplicas: 2, ...over },
});

test("only pipelines with a window step and ready workers are read", () => {
  assert.ok(observed(pipeline()));
  assert.ok(!observed(pipeline({}, false)));
  assert.ok(!observed(pipeline({ readyReplicas: 0 })));
});

test("a refresh writes when a watermark moved, not otherwise, and names the worker it could not read", async () => {
  const written: WatermarkStatus[] = [];
  const refusedErr = () => new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) });
  const deps = {
    pipelines: () => [],
    workerPods: async () => [
      { name: "p-0", ip: "10.0.0.1", ready: true },
      // Ready, yet refusing: its worker is gone while the pod still says Ready, and that is named.
      { name: "p-1", ip: "10.0.0.2", ready: true },
      { name: "p-2", ready: false },
      // Not Ready and refusing: a worker process that has not opened its port yet; it holds nothing.
      { name: "p-3", ip: "10.0.0.3", ready: false },
      // Not Ready and timing out: something is there and does not answer, and that is named.
      { name: "p-4", ip: "10.0.0.4", ready: false },
    ],
    scrape: async (pod: { name: string }) => {
      if (pod.name === "p-1" || pod.name === "p-3") throw refusedErr();
      if (pod.name === "p-4") throw new Error("timeout");
      return worker1;
    },
    applyWatermarks: async (_p: StreamPipeline, w: WatermarkStatus) => {
      written.push(w);
    },
    now: () => new Date(T),
    warn: () => {},
  };
  const first = await refreshWatermarks(pipeline(), deps);
  assert.deepEqual(first?.unread, ["p-1: fetch failed (connect ECONNREFUSED)", "p-2: no pod IP yet", "p-4: timeout"]);
  assert.equal(written.length, 1);
  assert.equal(await refreshWatermarks(pipeline({ watermarks: first }), { ...deps, now: () => new Date(T + 15_000) }), undefined, "nothing moved");
  assert.equal(written.length, 1);
});

test("a pass goes on past a pipeline whose read fails, warns about it, and leaves the others written", async () => {
  const warned: string[] = [];
  const written: string[] = [];
  const a = { ...pipeline(), metadata: { name: "a", namespace: "ns" } };
  const b = { ...pipeline(), metadata: { name: "b", namespace: "ns" } };
  const observer = new WatermarkObserver({
    pipelines: () => [a, pipeline({ readyReplicas: 0 }), b],
    workerPods: async (p) => {
      if (p.metadata?.name === "a") throw new Error("pods: 503");
      return [{ name: `${p.metadata?.name}-0`, ip: "10.0.0.1" }];
    },
    scrape: async () => worker1,
    applyWatermarks: async (p) => {
      written.push(p.metadata?.name ?? "");
    },
    now: () => new Date(T),
    warn: (msg, fields) => warned.push(`${msg} ${JSON.stringify(fields)}`),
  });
  await observer.runOnce();
  assert.deepEqual(written, ["b"]);
  assert.equal(warned.length, 1);
  assert.match(warned[0] ?? "", /ns\/a.*pods: 503/);
  await observer.stop();
});
