import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepSpec, StreamPipelineSpec } from "../src/api-types.gen.ts";
import { compile } from "../src/topology/compile.ts";
import { decodeValue, encodeKey, encodeValue, RecordError } from "./codec.ts";
import { DLQ_HEADERS, deadLetterRecord } from "./dead-letter.ts";
import { graphOf } from "./graph.ts";
import { SourceStage } from "./stages.ts";
import { SinkEncoder, type SourceRecord } from "./stateless.ts";

/** The runtime's source stage for a topology without a keyBy: decode, steps, sink. */
function chain(steps: StepSpec[], over: Partial<StreamPipelineSpec> = {}): SourceStage {
  const r = compile(
    { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["in"] }, steps, sink: { topic: "out" }, ...over },
    { namespace: "ns", name: "p" },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return new SourceStage(r.topology, graphOf(r.topology), new SinkEncoder(r.topology.sink));
}

const rec = (value: string | undefined, over: Partial<SourceRecord> = {}): SourceRecord => ({
  topic: "in",
  partition: 2,
  offset: 41n,
  timestamp: 1_700_000_000_000n,
  key: Buffer.from("k1"),
  value: value === undefined ? undefined : Buffer.from(value),
  headers: new Map([[Buffer.from("trace"), Buffer.from("t-1")]]),
  ...over,
});

const values = (c: SourceStage, r: SourceRecord) => {
  const o = c.process(r);
  if (!o.ok) assert.fail(`expected success, got ${o.step}: ${o.error}`);
  return o.sink.map((x) => x.value?.toString());
};

describe("the codec", () => {
  test("JSON integers become CEL ints, other numbers doubles, and ints go back out digit for digit", () => {
    assert.deepEqual(decodeValue(Buffer.from('{"n":3,"x":1.5,"l":[1,2.5],"big":9007199254740991}'), "json"), {
      n: 3n,
      x: 1.5,
      l: [1n, 2.5],
      big: 9007199254740991n,
    });
    assert.equal(encodeValue({ n: 3n, big: 9007199254740993n, x: 1.5 }, "json")?.toString(), '{"n":3,"big":9007199254740993,"x":1.5}');
  });

  test("formats: malformed JSON is a parse error; a sink format the value does not fit is an encode error", () => {
    assert.throws(
      () => decodeValue(Buffer.from("{nope"), "json"),
      (e: unknown) => e instanceof RecordError && e.kind === "parse" && /not JSON/.test(e.message),
    );
    assert.equal(decodeValue(Buffer.from("héllo"), "string"), "héllo");
    assert.deepEqual(decodeValue(Buffer.from([1, 2]), "bytes"), new Uint8Array([1, 2]));
    assert.equal(decodeValue(undefined, "json"), null, "a tombstone is null");
    assert.equal(encodeValue("s", "string")?.toString(), "s");
    assert.throws(() => encodeValue({ a: 1n }, "string"), /format is string, but the value is map/);
    assert.throws(() => encodeValue(5n, "bytes"), /format is bytes, but the value is int/);
    assert.equal(encodeValue(new Uint8Array([104, 105]), "bytes")?.toString(), "hi");
  });

  test("keys: scalars by their text, never a map or a list", () => {
    for (const [v, want] of [
      ["a", "a"],
      [7n, "7"],
      [2.5, "2.5"],
      [true, "true"],
    ] as const)
      assert.equal(encodeKey(v)?.toString(), want);
    assert.equal(encodeKey(null), undefined);
    assert.throws(() => encodeKey({ a: 1 }), /a key must be a string, a number, a bool or bytes, not map/);
  });
});

describe("the source stage: decode, stateless steps, sink", () => {
  test("filter, map and flatMap run in order, with the record's metadata in scope", () => {
    const c = chain([
      { name: "big", filter: "value.amount > 100" },
      {
        name: "shape",
        map: "{'id': value.id, 'double': value.amount * 2, 'from': topic + '/' + string(partition) + '@' + string(offset), 'trace': headers.trace}",
      },
      { name: "fan-out", flatMap: "[value, {'id': value.id + '-copy'}]" },
    ]);
    assert.deepEqual(values(c, rec('{"id":"a","amount":150}')), ['{"id":"a","double":300,"from":"in/2@41","trace":"t-1"}', '{"id":"a-copy"}']);
    const dropped = c.process(rec('{"id":"b","amount":5}'));
    assert.deepEqual(dropped, { ok: true, filtered: 1, sink: [], repartition: [] });
  });

  test("outputs keep the source key, headers and timestamp unless the sink says otherwise", () => {
    const plain = chain([{ name: "id", map: "value" }]).process(rec('{"a":1}'));
    assert.ok(plain.ok);
    assert.equal(plain.sink[0]?.key?.toString(), "k1");
    assert.equal(plain.sink[0]?.timestamp, 1_700_000_000_000n);
    assert.equal(plain.sink[0]?.headers.size, 1);
    const keyed = chain([], { sink: { topic: "out", key: "value.user", format: "string" } });
    const r = keyed.process(rec('"not a map"'));
    assert.deepEqual(r.ok ? undefined : [r.step, r.kind], ["sink", "eval"], "a key expression that fails sends the record to the DLQ");
  });

  const failures: [string, StepSpec[], string | undefined, string, string, RegExp][] = [
    ["malformed JSON", [{ name: "f", filter: "true" }], "{broken", "source", "parse", /the value is not JSON/],
    ["a missing field", [{ name: "big", filter: "value.amount > 100" }], '{"id":"a"}', "big", "eval", /No such key: amount/],
    ["a wrong type", [{ name: "big", filter: "value.amount > 100" }], '{"amount":"lots"}', "big", "eval", /no such overload/],
    ["double plus int", [{ name: "add", map: "value.price + 1" }], '{"price":1.5}', "add", "eval", /no such overload/],
    ["a filter on null", [{ name: "big", filter: "value.amount > 100" }], undefined, "big", "eval", /./],
    ["flatMap of a non-list", [{ name: "many", flatMap: "value.items" }], '{"items":{"a":1}}', "many", "eval", /flatMap must give a list, not map/],
  ];
  for (const [name, steps, value, step, kind, error] of failures) {
    test(`a record with ${name} fails at step "${step}" (${kind})`, () => {
      const o = chain(steps).process(rec(value));
      assert.equal(o.ok, false);
      if (o.ok) return;
      assert.equal(o.step, step);
      assert.equal(o.kind, kind);
      assert.match(o.error, error);
      assert.doesNotMatch(o.error, /\n/, "one line: it goes into a header");
    });
  }

  test("with stateful steps nothing is skipped: the keyed record goes to the repartition topic, not the sink", () => {
    const stage = chain([
      { name: "by-user", keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
    ]);
    const o = stage.process(rec('{"user":"u1"}'));
    if (!o.ok) assert.fail(`expected success, got ${o.step}: ${o.error}`);
    assert.deepEqual(o.sink, []);
    assert.equal(o.repartition.length, 1);
    assert.equal(o.repartition[0]?.topic, "ns_p_by-user-repartition");
    assert.equal(o.repartition[0]?.key?.toString(), "u1");
  });
});

describe("dead letters", () => {
  test("carry the record as it came, its headers, and headers that say what failed and where", () => {
    const r = rec("{broken");
    const d = deadLetterRecord(r, { ok: false, step: "source", kind: "parse", error: "the value is not JSON: x" }, "ns/p", undefined, 1_700_000_000_123);
    const h = Object.fromEntries([...d.headers].map(([k, v]) => [k.toString(), v.toString()]));
    assert.deepEqual(h, {
      trace: "t-1",
      [DLQ_HEADERS.error]: "the value is not JSON: x",
      [DLQ_HEADERS.kind]: "parse",
      [DLQ_HEADERS.step]: "source",
      [DLQ_HEADERS.pipeline]: "ns/p",
      [DLQ_HEADERS.topic]: "in",
      [DLQ_HEADERS.partition]: "2",
      [DLQ_HEADERS.offset]: "41",
      [DLQ_HEADERS.time]: "1700000000123",
    });
    assert.equal(d.value?.toString(), "{broken");
    assert.equal(d.key?.toString(), "k1");
    assert.equal(d.timestamp, r.timestamp);
  });

  test("a long error is cut and says so; a stale header of ours is replaced, not doubled", () => {
    const r = rec("x", { headers: new Map([[Buffer.from(DLQ_HEADERS.step), Buffer.from("old")]]) });
    const d = deadLetterRecord(r, { ok: false, step: "s", kind: "eval", error: "e".repeat(5000) }, "ns/p");
    const steps = [...d.headers].filter(([k]) => k.toString() === DLQ_HEADERS.step);
    assert.deepEqual(
      steps.map(([, v]) => v.toString()),
      ["s"],
    );
    const error = [...d.headers].find(([k]) => k.toString() === DLQ_HEADERS.error)?.[1].toString() ?? "";
    assert.ok(error.length < 2100 && error.endsWith("(cut)"));
  });
});

test("defect 9: the internal codec keeps Infinity and NaN, and the sink's JSON refuses them rather than write null", async () => {
  const { decodeInternal, encodeInternal, encodeValue } = await import("./codec.ts");
  const v = { a: Number.POSITIVE_INFINITY, b: Number.NEGATIVE_INFINITY, c: Number.NaN, d: 2.0, e: 0.25 };
  assert.deepEqual(decodeInternal(encodeInternal(v)), v);
  assert.throws(
    () => encodeValue({ x: Number.POSITIVE_INFINITY }, "json"),
    (err: Error & { kind?: string }) => err.kind === "encode" && /Infinity is not a finite number/.test(err.message),
  );
});

test("defect 5: a dead letter that would outgrow the broker's limit is cut to fit, and says what was cut", () => {
  const r = {
    topic: "in",
    partition: 0,
    offset: 3n,
    timestamp: 1n,
    key: Buffer.from("k"),
    value: Buffer.alloc(1_500_000, "x"),
    headers: new Map([[Buffer.from("trace"), Buffer.from("t1")]]),
  };
  const d = deadLetterRecord(r, { ok: false, step: "source", kind: "parse", error: "the value is not JSON" }, "ns/p");
  let size = (d.key?.length ?? 0) + (d.value?.length ?? 0);
  for (const [k, v] of d.headers) size += k.length + v.length;
  assert.ok(size <= 1_000_000, `the copy is ${size} bytes`);
  const h = Object.fromEntries([...d.headers].map(([k, v]) => [k.toString(), v.toString()]));
  assert.equal(h[DLQ_HEADERS.valueTruncated], "1500000");
  assert.equal(h.trace, "t1", "the source's headers stay when cutting the value was enough");
  assert.equal(h[DLQ_HEADERS.kind], "parse");
  assert.ok(d.value?.equals(Buffer.alloc(d.value.length, "x")), "the copy's value is the original's start");

  const small = deadLetterRecord({ ...r, value: Buffer.from("{") }, { ok: false, step: "source", kind: "parse", error: "x" }, "ns/p");
  assert.equal(small.value?.toString(), "{");
  assert.equal(
    [...small.headers.keys()].some((k) => k.toString().startsWith("conveyor.error.value-truncated")),
    false,
    "nothing cut, nothing said",
  );
});

describe("a join with a global input: a lookup in the table every worker holds", () => {
  const countries = new Map([
    ["fr", { name: "France", eu: true }],
    ["ch", { name: "Switzerland", eu: false }],
  ]);
  const globals = { get: (input: string, key: Buffer) => (input === "countries" ? countries.get(key.toString()) : undefined) };
  const stage = (type: "inner" | "left") => {
    const r = compile(
      {
        kafka: { bootstrapServers: ["k:9092"] },
        source: { topics: ["in"] },
        inputs: [{ name: "countries", topics: ["countries"], global: true }],
        steps: [{ name: "with-country", join: { input: "countries", key: "key", lookup: "value.country", as: "c", type } }],
        sink: { topic: "out" },
      },
      { namespace: "ns", name: "p" },
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return new SourceStage(r.topology, graphOf(r.topology), new SinkEncoder(r.topology.sink), Date.now, globals);
  };
  const values = (o: ReturnType<SourceStage["process"]>) => (o.ok ? o.sink.map((s) => JSON.parse(s.value?.toString() ?? "null")) : o);

  test("inner: a record whose key the table has gets its value under as; one it lacks is dropped and counted", () => {
    const s = stage("inner");
    assert.deepEqual(values(s.process(rec('{"id":1,"country":"fr"}'))), [{ id: 1, country: "fr", c: { name: "France", eu: true } }]);
    const missing = s.process(rec('{"id":2,"country":"de"}'));
    assert.ok(missing.ok);
    assert.deepEqual([missing.sink, missing.filtered], [[], 1]);
  });

  test("left: one it lacks goes on with null; a null key or a value that is not a map is the record's failure, naming the step", () => {
    const s = stage("left");
    assert.deepEqual(values(s.process(rec('{"id":2,"country":"de"}'))), [{ id: 2, country: "de", c: null }]);
    assert.deepEqual(values(s.process(rec('{"id":3,"country":null}'))), { ok: false, step: "with-country", kind: "eval", error: "the lookup key is null" });
    const notMap = s.process(rec('"fr"'));
    assert.ok(!notMap.ok);
    assert.equal(notMap.step, "with-country");
  });

  test("a topology with a global join needs the tables: refused at the stage's construction, not at the first record", () => {
    const r = compile(
      {
        kafka: { bootstrapServers: ["k:9092"] },
        source: { topics: ["in"] },
        inputs: [{ name: "countries", topics: ["countries"], global: true }],
        steps: [{ name: "with-country", join: { input: "countries", key: "key", lookup: "value.country", as: "c" } }],
        sink: { topic: "out" },
      },
      { namespace: "ns", name: "p" },
    );
    assert.ok(r.ok);
    assert.throws(() => new SourceStage(r.topology, graphOf(r.topology), new SinkEncoder(r.topology.sink)), /holds no global tables/);
  });
});
