import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepSpec } from "../src/api-types.gen.ts";
import { type CompiledTopology, compile } from "../src/topology/compile.ts";
import { encodeInternal } from "./codec.ts";
import { graphOf, type KeyedSubTopology, keyedSubTopologies, sourceSubTopology, upstreamOf, windowSteps } from "./graph.ts";
import { EVENT_TIME_HEADER, KeyedStage, SourceStage } from "./stages.ts";
import { StateCache } from "./state/cache.ts";
import { memoryStore } from "./state/memory-store.ts";
import { WindowStore } from "./state/window-store.ts";
import { SinkEncoder } from "./stateless.ts";
import { WindowOperator, type WindowStep } from "./window.ts";

function topology(steps: StepSpec[]): CompiledTopology {
  const r = compile({ kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["in"] }, steps, sink: { topic: "out" } }, { namespace: "ns", name: "p" });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.topology;
}

const windowed: StepSpec[] = [
  { name: "pre", filter: "value.ok" },
  { name: "by-user", keyBy: "value.user" },
  { name: "mid", filter: "value.amount > 0" },
  { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } }, emit: "onUpdate", late: { topic: "late" } },
  { name: "post", map: "{'user': key, 'ratio': 10 / (value.n - 1)}" },
];

describe("the topology as sub-topologies of processors", () => {
  test("a pipeline without a keyBy is one sub-topology reading the sources, ending at the sink", () => {
    const g = graphOf(
      topology([
        { name: "a", filter: "true" },
        { name: "b", map: "value" },
      ]),
    );
    assert.equal(g.subTopologies.length, 1);
    assert.deepEqual(sourceSubTopology(g).input, { kind: "source", topics: ["in"] });
    assert.deepEqual(
      sourceSubTopology(g).processors.map((p) => (p.kind === "steps" ? p.steps.map((s) => s.name) : p.kind)),
      [["a", "b"], "sink"],
    );
    assert.equal(g.eventTime, false);
    assert.deepEqual(keyedSubTopologies(g), []);
  });

  test("a keyBy cuts the graph at its repartition topic; the window's state keeps the compiler's names and hash", () => {
    const t = topology(windowed);
    const g = graphOf(t);
    const shape = g.subTopologies.map((s) => s.processors.map((p) => (p.kind === "steps" ? p.steps.map((x) => x.name).join("+") : p.kind)));
    assert.deepEqual(shape, [
      ["pre", "keyBy"],
      ["mid", "window", "post", "sink"],
    ]);
    const keyBy = t.steps[1] as Extract<CompiledTopology["steps"][number], { kind: "keyBy" }>;
    assert.equal(sourceSubTopology(g).output, keyBy.repartitionTopic);
    assert.deepEqual(
      keyedSubTopologies(g).map((s) => s.input),
      [{ kind: "repartition", topic: keyBy.repartitionTopic }],
    );
    // the same step object: its changelog topic and state-schema hash are the compiler's, so no state resets
    assert.deepEqual(windowSteps(g), [t.steps[3]]);
    assert.equal(g.eventTime, true);
    assert.deepEqual(
      g.subTopologies.map((s) => s.forwardsWatermarks),
      [true, false],
      "the sources' markers go to the window; nothing after it needs any",
    );
  });

  test("every keyBy cuts a sub-topology; a window's results are keyed anew, and watermarks go down to the last window", () => {
    const t = topology([
      { name: "by-user", keyBy: "value.user" },
      { name: "per-user", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
      { name: "by-minute", keyBy: "value.windowStart" },
      { name: "big", filter: "value.n > 1" },
      { name: "by-n", keyBy: "value.n" },
      { name: "top", window: { tumbling: "1m" }, aggregate: { users: { count: {} } } },
      { name: "by-users", keyBy: "value.users" },
      { name: "shape", map: "value" },
    ]);
    const g = graphOf(t);
    const shape = g.subTopologies.map((s) => s.processors.map((p) => (p.kind === "steps" ? p.steps.map((x) => x.name).join("+") : p.kind)));
    assert.deepEqual(shape, [["keyBy"], ["window", "keyBy"], ["big", "keyBy"], ["window", "keyBy"], ["shape", "sink"]]);
    assert.deepEqual(
      g.subTopologies.map((s) => [s.window?.name, s.forwardsWatermarks]),
      [
        [undefined, true],
        ["per-user", true],
        [undefined, true],
        ["top", false],
        [undefined, false],
      ],
    );
    const keyed = keyedSubTopologies(g);
    assert.deepEqual(
      keyed.map((s) => [s.input.topic, upstreamOf(g, s).id]),
      [
        ["ns_p_by-user-repartition", 0],
        ["ns_p_by-minute-repartition", 1],
        ["ns_p_by-n-repartition", 2],
        ["ns_p_by-users-repartition", 3],
      ],
    );
  });

  test("what the runtime cannot run is refused by name, should a topology the compiler refuses reach it", () => {
    // the compiler refuses these at apply, with their field paths; the runtime checks again what it is given
    const t = topology(windowed);
    const keyBy = t.steps[1] as CompiledTopology["steps"][number];
    const win = t.steps[3] as CompiledTopology["steps"][number];
    assert.throws(
      () => graphOf({ ...t, steps: [keyBy, win, { ...win, name: "w2" }] }),
      /step "w2": a sub-topology holds one window, table or join; a keyBy goes between "per-minute" and it/,
    );
    assert.throws(() => graphOf({ ...t, steps: [win] }), /step "per-minute": a window needs a keyBy before it/);
    const join = {
      name: "j",
      kind: "join",
      input: "x",
      key: "value.id",
      as: "x",
      type: "inner",
      late: { drop: true },
      repartitionTopic: "r",
      changelogTopic: "c",
      stateSchemaHash: "h",
    } as const;
    assert.throws(
      () => graphOf({ ...t, steps: [keyBy, win, join] }),
      /step "j": a sub-topology holds one window, table or join; a keyBy goes between "per-minute" and it/,
    );
    assert.throws(() => graphOf({ ...t, steps: [join] }), /step "j": a join needs a keyBy before it/);
    const later = graphOf({ ...t, steps: [keyBy, win, { ...keyBy, name: "again" }, join] });
    assert.deepEqual(
      [later.subTopologies[2]?.join?.name, later.subTopologies.map((s) => s.forwardsWatermarks)],
      ["j", [true, true, false]],
      "a join after a later keyBy: in its own sub-topology, the markers forwarded down to it",
    );
    const g = graphOf({ ...t, steps: [keyBy, join] });
    assert.deepEqual([g.subTopologies[1]?.join?.name, g.eventTime, g.joins.length, g.subTopologies[0]?.forwardsWatermarks], ["j", true, 1, true]);
  });
});

describe("the fields a record is given", () => {
  test("only those some expression reads, however it reads them", () => {
    const names = (steps: StepSpec[]) => [...graphOf(topology(steps)).scopeNames].sort();
    assert.deepEqual(names([{ name: "f", filter: "value.amount > 10" }]), []);
    assert.deepEqual(names([{ name: "f", filter: "headers.exists(h, h == 'trace') && topic != ''" }]), ["headers", "topic"]);
    assert.deepEqual(names([{ name: "m", map: "{'at': timestamp, 'p': partition, 'o': offset}" }]), ["offset", "partition", "timestamp"]);
    assert.deepEqual(
      names([
        { name: "k", keyBy: "key" },
        { name: "w", window: { tumbling: "1m" }, aggregate: { s: { sum: "double(partition)" } } },
      ]),
      ["key", "partition"],
    );
  });

  test("a step that reads a field it was given sees the record's, through both stages", () => {
    const t = topology([{ name: "m", map: "{'t': topic, 'h': headers.trace}" }]);
    const stage = new SourceStage(t, graphOf(t), new SinkEncoder(t.sink));
    const o = stage.process({
      topic: "in",
      partition: 1,
      offset: 5n,
      timestamp: 1n,
      value: Buffer.from("{}"),
      headers: new Map([[Buffer.from("trace"), Buffer.from("t-9")]]),
    });
    assert.ok(o.ok);
    assert.equal(o.sink[0]?.value?.toString(), '{"t":"in","h":"t-9"}');
  });
});

describe("the keyed sub-topology's processors", () => {
  const t = topology(windowed);
  const g = graphOf(t);
  const stage = new KeyedStage(g, keyedSubTopologies(g)[0] as KeyedSubTopology, new SinkEncoder(t.sink));
  const step = windowSteps(g)[0] as WindowStep;
  const op = new WindowOperator(step, new WindowStore(memoryStore(), new StateCache(1 << 20), { session: false }));
  const T0 = Date.parse("2024-01-01T00:00:00Z");
  const rec = (value: unknown, ts: number) => ({
    topic: "rp",
    partition: 0,
    offset: 1n,
    timestamp: BigInt(ts),
    key: Buffer.from("u1"),
    value: encodeInternal(value),
    headers: new Map([
      [Buffer.from(EVENT_TIME_HEADER), Buffer.from(String(ts))],
      [Buffer.from("trace"), Buffer.from("t-1")],
    ]),
  });
  const run = async (value: unknown, ts: number) => {
    await op.prefetch([{ keyBytes: Buffer.from("u1"), ts }]);
    return stage.process(rec(value, ts), { window: op });
  };

  test("a step before the window that fails is the record's failure, named by its step", async () => {
    const o = await run({ user: "u1" }, T0);
    assert.deepEqual(o.ok ? undefined : [o.step, o.kind], ["mid", "eval"]);
  });

  test("a step after the window that fails is the result's: the record counts, and the result goes to the DLQ alone", async () => {
    const first = await run({ user: "u1", amount: 3 }, T0);
    assert.ok(first.ok);
    assert.equal(first.aggregated, 1);
    assert.equal(first.sink.length, 0);
    assert.equal(first.dead.length, 1, "n - 1 = 0: the division fails for this result");
    assert.deepEqual([first.dead[0]?.failure.step, first.dead[0]?.failure.kind], ["post", "eval"]);
    const second = await run({ user: "u1", amount: 3 }, T0 + 1_000);
    assert.ok(second.ok);
    assert.deepEqual(
      second.sink.map((s) => JSON.parse(s.value?.toString() ?? "")),
      [{ user: "u1", ratio: 10 }],
    );
    assert.equal(second.sink[0]?.headers.size, 0, "a window result carries no producer's headers");
  });

  test("a record behind the watermark goes to the late topic with its headers and the watermark", async () => {
    await op.advance(T0 + 10 * 60_000);
    const o = await run({ user: "u1", amount: 3 }, T0);
    assert.ok(o.ok);
    assert.equal(o.aggregated, 0);
    assert.equal(o.late.length, 1);
    const late = o.late[0];
    assert.equal(late?.topic, "late");
    const headers = new Map([...(late?.headers ?? [])].map(([k, v]) => [k.toString(), v.toString()]));
    assert.equal(headers.get("trace"), "t-1");
    assert.equal(headers.get("conveyor.late.step"), "per-minute");
    assert.equal(headers.get(EVENT_TIME_HEADER), undefined, "the runtime's event-time header stays behind");
  });
});

describe("a window's results keyed anew", () => {
  const t = topology([
    { name: "by-user", keyBy: "value.user" },
    { name: "per-user", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
    { name: "by-n", keyBy: "value.n" },
    { name: "keep", filter: "value.n > 0" },
    { name: "by-user-again", keyBy: "value.key" },
    { name: "top", window: { tumbling: "1m" }, aggregate: { users: { count: {} } } },
  ]);
  const g = graphOf(t);
  const [first, second] = keyedSubTopologies(g) as [KeyedSubTopology, KeyedSubTopology];
  const T0 = Date.parse("2024-01-01T00:00:00Z");
  const header = (r: { headers?: Map<Buffer, Buffer> } | undefined) =>
    [...(r?.headers ?? [])].find(([k]) => k.toString() === EVENT_TIME_HEADER)?.[1].toString();

  test("a closed window's result goes to the next repartition topic, its event time its window's last millisecond", () => {
    const stage = new KeyedStage(g, first, new SinkEncoder(t.sink));
    const out = stage.emit(
      [{ keyBytes: Buffer.from("u1"), start: T0, end: T0 + 60_000, value: { key: "u1", windowStart: T0, windowEnd: T0 + 60_000, n: 3 } }],
      {},
      7n,
    );
    assert.deepEqual(out.sink, []);
    assert.equal(out.repartition.length, 1);
    const r = out.repartition[0];
    assert.equal(r?.topic, "ns_p_by-n-repartition");
    assert.equal(r?.key?.toString(), "3");
    assert.equal(header(r), String(T0 + 60_000 - 1));
    assert.equal(r?.timestamp, 7n, "the Kafka timestamp of the record that closed it");
  });

  test("a sub-topology without a window passes each record's event time on", () => {
    const stage = new KeyedStage(g, second, new SinkEncoder(t.sink));
    const o = stage.process(
      {
        topic: second.input.topic,
        partition: 0,
        offset: 1n,
        timestamp: 5n,
        key: Buffer.from("3"),
        value: encodeInternal({ key: "u1", n: 3 }),
        headers: new Map([[Buffer.from(EVENT_TIME_HEADER), Buffer.from(String(T0 + 59_999))]]),
      },
      undefined,
    );
    assert.ok(o.ok);
    assert.equal(o.repartition.length, 1);
    assert.equal(o.repartition[0]?.topic, "ns_p_by-user-again-repartition");
    assert.equal(header(o.repartition[0]), String(T0 + 59_999));
  });
});

describe("route processors", () => {
  const t = (() => {
    const r = compile(
      {
        kafka: { bootstrapServers: ["k:9092"] },
        source: { topics: ["in"] },
        steps: [
          {
            name: "split",
            route: [
              { when: "type(value) == string", to: "notes" },
              { when: "value.amount > 100", to: "big" },
              { when: "value.kind == 'refund'", to: "refunds" },
            ],
          },
          { name: "tag", map: "{'amount': value.amount, 'seen': true}" },
        ],
        sink: { topic: "out" },
        sinks: [
          { name: "notes", topic: "notes", format: "string" },
          { name: "big", topic: "big-payments", key: "value.account" },
          { name: "refunds", topic: "refunds" },
        ],
      },
      { namespace: "ns", name: "p" },
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.topology;
  })();
  const stage = new SourceStage(t, graphOf(t), new SinkEncoder(t.sink));
  const run = (value: unknown) =>
    stage.process({ topic: "in", partition: 0, offset: 1n, timestamp: 7n, key: Buffer.from("k1"), value: Buffer.from(JSON.stringify(value)) });

  test("the first route whose condition holds takes a record to its sink, with that sink's key and format", () => {
    const o = run({ amount: 500, kind: "refund", account: "a-1" });
    assert.ok(o.ok);
    assert.deepEqual(
      o.sink.map((s) => [s.topic, s.key?.toString(), s.value?.toString()]),
      [["big-payments", "a-1", '{"amount":500,"kind":"refund","account":"a-1"}']],
    );
    const r = run({ amount: 5, kind: "refund" });
    assert.ok(r.ok);
    assert.deepEqual(
      r.sink.map((s) => [s.topic, s.key?.toString()]),
      [["refunds", "k1"]],
      "no key expression: the record's key",
    );
    const n = run("a note");
    assert.ok(n.ok, n.ok ? "" : n.error);
    assert.deepEqual(
      n.sink.map((s) => [s.topic, s.value?.toString()]),
      [["notes", "a note"]],
      "in the sink's own format: string",
    );
  });

  test("a record no route takes goes on through the steps after, to the main sink", () => {
    const o = run({ amount: 5, kind: "pay" });
    assert.ok(o.ok);
    assert.deepEqual(
      o.sink.map((s) => [s.topic, s.value?.toString()]),
      [[undefined, '{"amount":5,"seen":true}']],
    );
  });

  test("a condition that fails, or a sink's key that fails, is the record's failure, named by the route step", () => {
    const o = run({ amount: "lots" });
    assert.deepEqual(o.ok ? undefined : [o.step, o.kind], ["split", "eval"]);
    const k = run({ amount: 500, kind: "pay" });
    assert.ok(!k.ok);
    assert.deepEqual([k.step, k.kind], ["split", "eval"]);
    assert.match(k.error, /^sink "big": /);
  });
});
