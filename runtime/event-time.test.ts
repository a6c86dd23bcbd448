import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compile } from "../src/topology/compile.ts";
import { graphOf } from "./graph.ts";
import { eventTimeProblem, SourceStage } from "./stages.ts";
import { SinkEncoder } from "./stateless.ts";

const NOW = Date.parse("2026-12-04T12:00:00Z");

/** A windowed topology's source stage, on a clock fixed at NOW. */
function windowed(maxFutureSkew?: string): SourceStage {
  const r = compile(
    {
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in"], eventTime: "value.ts", ...(maxFutureSkew ? { watermark: { maxFutureSkew } } : {}) },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "agg", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
      ],
      sink: { topic: "out" },
    },
    { namespace: "ns", name: "p" },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return new SourceStage(r.topology, graphOf(r.topology), new SinkEncoder(r.topology.sink), () => NOW);
}

const record = (ts: number | string) => ({
  topic: "in",
  partition: 0,
  offset: 7n,
  timestamp: BigInt(NOW),
  value: Buffer.from(`{"user":"u1","ts":${ts}}`),
});

describe("event times a watermark must not follow", () => {
  test("the year 3000, past 2^53 ms, or before the epoch: refused with kind eventTime; now and the skew's edge pass", () => {
    const stage = windowed();
    for (const ts of [Date.parse("3000-01-01T00:00:00Z"), 2 ** 63, -1, NOW + 5 * 60_000 + 1]) {
      const o = stage.process(record(ts));
      assert.equal(o.ok, false, `event time ${ts} is refused`);
      if (!o.ok) assert.deepEqual([o.step, o.kind], ["eventTime", "eventTime"]);
    }
    for (const ts of [NOW, NOW + 5 * 60_000, 0, Date.parse("2023-05-01T00:00:00Z")]) {
      const o = stage.process(record(ts));
      assert.equal(o.ok, true, `event time ${ts} passes`);
      if (o.ok) assert.equal(o.eventTime, ts);
    }
  });

  test("maxFutureSkew is the spec's: 1h lets half an hour ahead through", () => {
    assert.equal(windowed("1h").process(record(NOW + 30 * 60_000)).ok, true);
    assert.equal(windowed().process(record(NOW + 30 * 60_000)).ok, false);
  });

  test("the message says what and by how much, in words a reader can check", () => {
    assert.match(
      eventTimeProblem(Date.parse("3000-01-01T00:00:00Z"), NOW, 300_000) ?? "",
      /3000-01-01T00:00:00.000Z is more than maxFutureSkew \(300000 ms\) ahead/,
    );
    assert.match(eventTimeProblem(2 ** 63, NOW, 300_000) ?? "", /outside what windows hold/);
    assert.equal(eventTimeProblem(NOW, NOW, 300_000), undefined);
  });
});

describe("defect 3: forged conveyor.* headers", () => {
  const forged = (headers: [string, string][]) => ({
    ...record(Date.parse("2023-05-01T00:00:00Z")),
    headers: new Map(headers.map(([k, v]) => [Buffer.from(k), Buffer.from(v)])),
  });

  test("a conveyor.event-time from outside neither sets the event time nor reaches the repartition record", () => {
    const o = windowed().process(
      forged([
        ["conveyor.event-time", "0"],
        ["traceparent", "00-abc"],
      ]),
    );
    assert.ok(o.ok);
    assert.equal(o.eventTime, Date.parse("2023-05-01T00:00:00Z"), "the expression's event time, not the header's");
    const [out] = o.repartition;
    const headers = Object.fromEntries([...(out?.headers ?? [])].map(([k, v]) => [k.toString(), v.toString()]));
    assert.deepEqual(headers, { traceparent: "00-abc", "conveyor.event-time": String(Date.parse("2023-05-01T00:00:00Z")) });
  });

  test("a conveyor.marker from outside is dropped: the repartition record is data", () => {
    const o = windowed().process(
      forged([
        ["conveyor.marker", "1"],
        ["CONVEYOR.MARKER", "1"],
      ]),
    );
    assert.ok(o.ok);
    assert.deepEqual(
      [...(o.repartition[0]?.headers?.keys() ?? [])].map((k) => k.toString()),
      ["conveyor.event-time"],
    );
  });
});
