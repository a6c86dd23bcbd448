import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipeline } from "../api.ts";
import { type Description, lateRecords, ownersFrom, samplesOf } from "./describe.ts";
import { renderDescription, span, wrap } from "./describe-view.ts";
import { renderTop, topRow } from "./top.ts";

const AT = "2026-12-06T03:00:00.000Z";
const before = (ms: number) => new Date(Date.parse(AT) - ms).toISOString();

const described: Description = {
  namespace: "payments-team",
  name: "payments-per-minute-with-a-rather-long-name",
  generation: 4,
  observedGeneration: 4,
  consumerGroup: "payments-team.payments-per-minute-with-a-rather-long-name",
  at: AT,
  conditions: [
    { type: "Ready", status: "True", reason: "WorkersReady", message: "2 of 2 workers are ready", since: before(192_000) },
    {
      type: "StateCapacityAtRisk",
      status: "True",
      reason: "VolumeFillsSoon",
      message:
        "state-payments-per-minute-0 holds 900 MiB of 1024 MiB and grows 12.5 MiB a minute: it fills in about 10 minutes, at 03:10Z. Give the volumes more room (spec.state.storage.size) or a shorter TTL.",
      since: before(60_000),
    },
  ],
  workers: { desired: 2, ready: 2, scaling: { mode: "lag", desired: 2, current: 2, reason: "Steady", lag: 17_660, inputRate: 2_500, consumeRate: 1_980.4 } },
  group: { state: "Stable", members: 2 },
  partitions: [
    { topic: "payments", kind: "source", partition: 0, committed: "10234", end: "12000", lag: "1766", owner: "payments-per-minute-with-a-rather-long-name-0" },
    { topic: "payments-team_payments-per-minute_by-user-repartition", kind: "repartition", partition: 1, end: "5" },
  ],
  watermarks: {
    observedTime: before(5_000),
    low: before(35_000),
    lowBehindMs: 35_000,
    sources: [
      { topic: "payments", partition: 0, watermark: before(35_000), behindMs: 35_000, idle: false },
      { topic: "payments", partition: 1, idle: true },
    ],
    tasks: [{ partition: 0, watermark: before(35_000), behindMs: 35_000 }],
  },
  state: [
    {
      pod: "payments-per-minute-with-a-rather-long-name-0",
      ready: true,
      stateBytes: 943_718_400,
      volume: "state-x-0",
      capacityBytes: 2 ** 30,
      restoringRecords: 12_000,
    },
  ],
  capacity: { status: "True", reason: "VolumeFillsSoon", message: "state-payments-per-minute-0 fills in about 10 minutes" },
  deadLetters: {
    topic: "payments-dlq",
    windowMs: 3_600_000,
    count: 12,
    atLeast: false,
    byKind: [
      { kind: "parse", step: "source", count: 7 },
      { kind: "eval", step: "big", count: 5 },
    ],
    last: [{ at: before(2_000), kind: "parse", step: "source", source: "payments/1@233", error: `the value is not JSON: ${"x".repeat(300)}` }],
  },
  late: [{ step: "per-minute", action: "topic", count: 3 }],
  trend: {
    intervalMs: 2_000,
    points: [0, 1, 2, 3].map((i) => ({ at: before(6_000 - i * 2_000), lag: 4_000 - i * 1_000, workers: i < 2 ? 1 : 2, ready: i < 3 ? 1 : 2 })),
  },
  history: [
    {
      at: before(120_000),
      reason: "ScaledUp",
      message: "Scaled up from 1 to 2 workers (ScaleUp): lag 55,000 records, input 2,500/s, consumed 980/s, 1,000/s per worker",
    },
  ],
  errors: ["payments-per-minute-1's /metrics: reading payments-per-minute-1's /metrics took longer than 5000 ms"],
};

describe("conveyor describe's text", () => {
  test("fits 80 columns, and shows each section's figures", () => {
    const text = renderDescription(described);
    const lines = text.trimEnd().split("\n");
    for (const l of lines) assert.ok(l.length <= 80, `${l.length} columns: ${l}`);
    for (const section of [
      "CONDITIONS",
      "PARTITIONS",
      "WATERMARKS",
      "STATE",
      "DEAD LETTERS",
      "LATE RECORDS",
      "TREND",
      "SCALING AND PARTITION GROWTH",
      "COULD NOT READ",
    ])
      assert.ok(
        lines.some((l) => l.startsWith(section)),
        section,
      );
    assert.match(
      text,
      /^ {2}payments \(source\)\n {4}PART +COMMITTED +END +LAG +OWNER\n {7}0 +10234 +12000 +1766 +payments-per…-rather-long-name-0$/m,
      "a long pod name keeps its ordinal",
    );
    assert.match(
      text,
      /^ {2}payments-team_payments-per-minute_by-user-repartition \(repartition\)\n.*\n {7}1 +- +5 +- +-$/m,
      "an uncommitted partition shows -",
    );
    assert.match(text, /^ {2}total lag 1,766 \(a repartition topic's/m);
    assert.match(text, /^ {2}Ready +True +WorkersReady +3m12s ago$/m);
    assert.match(text, /lag 17,660 records, in 2,500\/s, consumed 1,980\/s/);
    assert.match(text, /35s behind/);
    assert.match(text, /^ {2}payments-p…her-long-name-0 yes +900 MiB +1.0 GiB +87.9% +12,000 records$/m);
    assert.match(text, /^Generation {5}4, reconciled$/m);
    assert.match(text, /^ {2}forecast: VolumeFillsSoon \(the StateCapacityAtRisk condition above\)$/m);
    assert.match(text, /^DEAD LETTERS in payments-dlq, last 1h00m: 12$/m);
    assert.match(text, /^ {2}parse +source +7$/m);
    assert.match(text, /^ {2}2m00s ago: ScaledUp$/m);
    // bars from zero: a lag of 1,000 of 4,000 is a quarter high
    assert.match(text, /^TREND, every 2s for 6s\n {2}lag {9}█▆▅▃ {2}1,000 \.\. 4,000\n {2}workers {5}▅▅██ {2}1 \.\. 2\n/m);
    assert.match(text, /fills in about 10 minutes, at 03:10Z\. Give the volumes more room/, "a long message is wrapped, not cut");
  });

  test("durations, wrapping", () => {
    assert.deepEqual(
      [span(850), span(42_000), span(192_000), span(7_500_000), span(3 * 86_400_000 + 4 * 3_600_000)],
      ["850ms", "42s", "3m12s", "2h05m", "3d04h"],
    );
    assert.deepEqual(wrap("aaa bbb ccc", 2, 10), ["  aaa bbb", "  ccc"]);
    assert.equal(wrap("word ".repeat(100), 4, 40, 2).length, 2);
  });
});

describe("conveyor describe's readings of worker metrics", () => {
  const worker0 = [
    "# HELP conveyor_runtime_lag_records lag",
    'conveyor_runtime_lag_records{topic="payments",partition="0"} 12',
    'conveyor_runtime_lag_records{topic="payments",partition="2"} 0',
    'conveyor_runtime_records_late_total{step="per-minute",action="topic"} 2',
    'conveyor_runtime_state_bytes{step="per-minute",partition="0"} 1024',
  ].join("\n");
  const worker1 = [
    'conveyor_runtime_lag_records{topic="payments",partition="1"} 3',
    'conveyor_runtime_records_late_total{step="per-minute",action="topic"} 1',
  ].join("\n");
  const metrics = new Map([
    ["p-0", worker0],
    ["p-1", worker1],
  ]);

  test("each partition's owner is the worker that reports its lag", () => {
    assert.deepEqual(
      [...ownersFrom(metrics)],
      [
        ["payments:0", "p-0"],
        ["payments:2", "p-0"],
        ["payments:1", "p-1"],
      ],
    );
  });

  test("late records are summed over the workers", () => {
    assert.deepEqual(lateRecords(metrics), [{ step: "per-minute", action: "topic", count: 3 }]);
    assert.deepEqual(samplesOf(worker0, "conveyor_runtime_state_bytes"), [{ labels: { step: "per-minute", partition: "0" }, value: 1024 }]);
  });
});

describe("conveyor top", () => {
  test("a line a pipeline, in 80 columns, from the status", () => {
    const p = (name: string, status: object, replicas = 1) =>
      ({ metadata: { namespace: "team-a", name }, spec: { replicas }, status }) as unknown as StreamPipeline;
    const now = Date.parse(AT);
    const text = renderTop(
      [
        p("orders-per-minute", {
          replicas: 2,
          readyReplicas: 2,
          lag: 17_660,
          scaling: { reason: "ScaleUp", inputRate: 2_500, consumeRate: 1_980.4 },
          watermarks: { observedTime: AT, low: before(35_000) },
          conditions: [{ type: "Ready", status: "True", reason: "WorkersReady" }],
        }),
        p("copy", {}),
      ],
      now,
      false,
    );
    const lines = text.trimEnd().split("\n");
    for (const l of lines) assert.ok(l.length <= 80, `${l.length} columns: ${l}`);
    assert.match(lines[1] ?? "", /^NAME +READY +LAG +IN\/S +OUT\/S +WM LAG {2}STATE$/);
    assert.match(lines[2] ?? "", /^copy +0\/1 +- +- +- +- {2}NotReconciled$/);
    assert.match(lines[3] ?? "", /^orders-per-minute +2\/2 +17,660 +2,500 +1,980 +35s {2}WorkersReady, ScaleUp$/);
    assert.deepEqual(topRow(p("x", { scaling: { reason: "Steady", lag: 5 } }), now).state, "NotReconciled");
    assert.match(renderTop([], now, true), /0 pipelines/);
  });
});
