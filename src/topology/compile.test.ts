import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepSpec, StreamPipelineSpec } from "../api-types.gen.ts";
import { workerAcls } from "../kafka-acls.ts";
import { internalTopicRequests } from "../reconcile.ts";
import {
  type CompiledTopology,
  type CompileError,
  changelogRetentionMs,
  compile,
  formatCompileError,
  globalInputs,
  sinkTopics,
  sourceInputs,
  sourceTopicsOf,
  statefulSteps,
} from "./compile.ts";
import { parseDuration } from "./duration.ts";

/** A fixture builder: pipeline().withSteps(...).withSink("out").spec */
function pipeline() {
  const spec: StreamPipelineSpec = { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["payments"] }, sink: { topic: "alerts" } };
  const b = {
    spec,
    withSteps(...steps: StepSpec[]) {
      spec.steps = steps;
      return b;
    },
    withSink(topic: string, key?: string) {
      spec.sink = { topic, ...(key ? { key } : {}) };
      return b;
    },
    with(patch: Partial<StreamPipelineSpec>) {
      Object.assign(spec, patch);
      return b;
    },
    compile() {
      return compile(spec, { namespace: "team-a", name: "fraud" });
    },
  };
  return b;
}

const keyBy = (expr = "value.user"): StepSpec => ({ name: "by-user", keyBy: expr });
const lastPayment = (over: Partial<StepSpec> = {}): StepSpec => ({
  name: "last-payment",
  aggregate: { last: { latest: { value: "value", by: "value.at" } }, n: { count: {} } },
  ...over,
});
const perMinute = (over: Partial<StepSpec> = {}): StepSpec => ({
  name: "per-minute",
  window: { tumbling: "1m", grace: "1m" },
  aggregate: { count: { count: {} }, total: { sum: "value.amount" } },
  ...over,
});

function ok(r: ReturnType<typeof compile>): CompiledTopology {
  if (!r.ok) assert.fail(`expected it to compile: ${r.errors.map(formatCompileError).join("; ")}`);
  return r.topology;
}

function errors(r: ReturnType<typeof compile>): CompileError[] {
  assert.equal(r.ok, false, "expected compile errors");
  return r.ok ? [] : r.errors;
}

describe("topology compiler", () => {
  test("the design's example compiles, with internal topics, defaults and a state-schema hash", () => {
    const t = ok(
      pipeline()
        .withSteps(
          { name: "big", filter: "value.amount > 1000" },
          { name: "shape", map: "{'user': value.user_id, 'amount': value.amount}" },
          keyBy(),
          perMinute({ emit: "onWindowClose", late: { topic: "payments-late" } }),
          { name: "suspicious", filter: "value.count > 5" },
        )
        .with({ deadLetter: { topic: "payments-dlq" } })
        .compile(),
    );
    assert.equal(t.applicationId, "team-a.fraud");
    assert.deepEqual(
      t.steps.map((s) => `${s.kind}:${s.name}`),
      ["filter:big", "map:shape", "keyBy:by-user", "window:per-minute", "filter:suspicious"],
    );
    assert.deepEqual(t.internalTopics, ["team-a_fraud_by-user-repartition", "team-a_fraud_per-minute-changelog"]);
    const w = t.steps[3];
    assert.ok(w?.kind === "window");
    assert.deepEqual(w.window, { type: "tumbling", sizeMs: 60_000 });
    assert.equal(w.graceMs, 60_000);
    assert.deepEqual(w.late, { topic: "payments-late" });
    assert.match(w.stateSchemaHash, /^[0-9a-f]{16}$/);
    assert.deepEqual(t.source.watermark, { maxOutOfOrdernessMs: 30_000, idleTimeoutMs: 60_000, maxFutureSkewMs: 300_000 });
    assert.equal(t.source.format, "json");
    assert.deepEqual(t.processing, { guarantee: "atLeastOnce", commitIntervalMs: 100, maxInFlight: 1000 });
    assert.deepEqual(t.deadLetter, { topic: "payments-dlq" });
  });

  const bad: { name: string; build: () => ReturnType<typeof compile>; field: string; message: RegExp; line?: number; column?: number; step?: string }[] = [
    {
      name: "a filter that does not parse",
      build: () => pipeline().withSteps({ name: "big", filter: "value.amount >" }).compile(),
      field: "spec.steps[0].filter",
      message: /Unexpected token: EOF/,
      line: 1,
      column: 15,
      step: "big",
    },
    {
      name: "a type error",
      build: () => pipeline().withSteps({ name: "big", filter: 'value.amount > 1 && 1 + "x" > 0' }).compile(),
      field: "spec.steps[0].filter",
      message: /no such overload: int \+ string/,
      column: 21,
    },
    {
      name: "an unknown function",
      build: () => pipeline().withSteps({ name: "m", map: "shout(value)" }).compile(),
      field: "spec.steps[0].map",
      message: /no matching overload for 'shout\(dyn\)'/,
      column: 1,
    },
    {
      name: "an error on the second line",
      build: () => pipeline().withSteps({ name: "m", map: "{\n  'a': value.a +* 2\n}" }).compile(),
      field: "spec.steps[0].map",
      message: /Unexpected token/,
      line: 2,
    },
    {
      name: "a filter that gives a string",
      build: () => pipeline().withSteps({ name: "f", filter: "'yes'" }).compile(),
      field: "spec.steps[0].filter",
      message: /a filter must give a bool, but this expression gives string/,
    },
    {
      name: "a flatMap that gives an int",
      build: () => pipeline().withSteps({ name: "f", flatMap: "1" }).compile(),
      field: "spec.steps[0].flatMap",
      message: /flatMap must give a list/,
    },
    {
      name: "a key that is a map",
      build: () => pipeline().withSteps(keyBy("{'a': value.a}")).compile(),
      field: "spec.steps[0].keyBy",
      message: /a key must be a string/,
    },
    {
      name: "a sink key that is a list",
      build: () => pipeline().withSink("alerts", "[key]").compile(),
      field: "spec.sink.key",
      message: /a key must be a string/,
    },
    {
      name: "a window with no keyBy before it",
      build: () => pipeline().withSteps(perMinute(), keyBy()).compile(),
      field: "spec.steps[0]",
      message: /needs a keyBy step before it/,
      step: "per-minute",
    },
    {
      name: "a zero-length window",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute({ window: { tumbling: "0s" } }))
          .compile(),
      field: "spec.steps[1].window.tumbling",
      message: /longer than 0/,
    },
    {
      name: "a hop longer than its window",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute({ window: { hopping: { size: "1m", advance: "2m" } } }))
          .compile(),
      field: "spec.steps[1].window.hopping",
      message: /advance must not exceed size/,
    },
    {
      name: "a sum over a string",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute({ aggregate: { s: { sum: "'x'" } } }))
          .compile(),
      field: "spec.steps[1].aggregate[s].sum",
      message: /sum needs a number, but this expression gives string/,
    },
    {
      name: "comprehensions nested three deep",
      build: () => pipeline().withSteps({ name: "f", filter: "value.a.all(x, x.b.all(y, y.c.exists(z, z > 1)))" }).compile(),
      field: "spec.steps[0].filter",
      message: /nest 3 deep/,
    },
    {
      name: "an expression over the size limit",
      build: () =>
        pipeline()
          .withSteps({ name: "m", map: Array.from({ length: 300 }, () => "value.a").join(" + ") })
          .compile(),
      field: "spec.steps[0].map",
      message: /Exceeded maxAstNodes/,
    },
    { name: "a sink that is a source", build: () => pipeline().withSink("payments").compile(), field: "spec.sink.topic", message: /would read its own output/ },
    {
      name: "a malformed duration",
      build: () =>
        pipeline()
          .with({ source: { topics: ["payments"], watermark: { maxOutOfOrderness: "half a minute" } } })
          .compile(),
      field: "spec.source.watermark.maxOutOfOrderness",
      message: /is not a duration/,
    },
    {
      name: "a step of two kinds",
      build: () => pipeline().withSteps({ name: "x", filter: "true", map: "value" }).compile(),
      field: "spec.steps[0]",
      message: /exactly one of filter/,
    },
    {
      name: "a second window with no keyBy between",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute(), perMinute({ name: "per-hour" }))
          .compile(),
      field: "spec.steps[2]",
      message: /a keyBy step goes between two windows \("per-minute" and this one\)/,
      step: "per-hour",
    },
    {
      name: "a window's every update aggregated again",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute({ emit: "onUpdate" }), { name: "by-region", keyBy: "value.key" }, perMinute({ name: "per-hour" }))
          .compile(),
      field: "spec.steps[1].emit",
      message: /window "per-hour" after it would count each one: emit onWindowClose there/,
      step: "per-minute",
    },
    {
      name: "a reduce in a session window",
      build: () =>
        pipeline()
          .withSteps(keyBy(), { name: "sessions", window: { session: { gap: "5m" } }, aggregate: { all: { reduce: { init: "[]", expr: "acc + [value]" } } } })
          .compile(),
      field: "spec.steps[1].aggregate[all].reduce",
      message: /sessions merge, and a reduce has no merge/,
    },
    {
      name: "a table with no keyBy before it",
      build: () => pipeline().withSteps(lastPayment()).compile(),
      field: "spec.steps[0]",
      message: /an aggregate step needs a keyBy step before it/,
      step: "last-payment",
    },
    {
      name: "an emit on a table",
      build: () =>
        pipeline()
          .withSteps(keyBy(), lastPayment({ emit: "onWindowClose" }))
          .compile(),
      field: "spec.steps[1].emit",
      message: /emit and late belong to window steps/,
    },
    {
      name: "a window on a map",
      build: () =>
        pipeline()
          .withSteps({ name: "m", map: "value", window: { tumbling: "1m" } })
          .compile(),
      field: "spec.steps[0].window",
      message: /a window step needs an aggregate/,
    },
    {
      name: "tombstones from a window",
      build: () =>
        pipeline()
          .withSteps(keyBy(), perMinute({ emitTombstones: true }))
          .compile(),
      field: "spec.steps[1].emitTombstones",
      message: /belongs to an aggregate step without a window/,
    },
    {
      name: "tombstones with no ttl",
      build: () =>
        pipeline()
          .withSteps(keyBy(), lastPayment({ emitTombstones: true }))
          .compile(),
      field: "spec.steps[1].emitTombstones",
      message: /set a ttl/,
    },
    {
      name: "tombstones from a table with a step after it",
      build: () =>
        pipeline()
          .with({ state: { ttl: "1h" } })
          .withSteps(keyBy(), lastPayment({ emitTombstones: true }), { name: "shape", map: "value.last" })
          .compile(),
      field: "spec.steps[1].emitTombstones",
      message: /must be the last/,
    },
    {
      name: "a table's changes aggregated again",
      build: () => pipeline().withSteps(keyBy(), lastPayment(), { name: "by-region", keyBy: "value.key" }, perMinute()).compile(),
      field: "spec.steps[1].aggregate",
      message: /table "last-payment" writes each change of a key, and step "per-minute" after it would count each one/,
      step: "last-payment",
    },
    {
      name: "a table right after a window",
      build: () => pipeline().withSteps(keyBy(), perMinute(), lastPayment()).compile(),
      field: "spec.steps[2]",
      message: /a keyBy step goes between two stateful steps \("per-minute" and this one\)/,
      step: "last-payment",
    },
    {
      name: "a top 0",
      build: () =>
        pipeline()
          .withSteps(keyBy(), lastPayment({ aggregate: { top: { topN: { limit: 0, by: "value.amount" } } } }))
          .compile(),
      field: "spec.steps[1].aggregate[top].topN.limit",
      message: /limit must be a whole number from 1 to 100/,
    },
    {
      name: "a latest ordered by a map",
      build: () =>
        pipeline()
          .withSteps(keyBy(), lastPayment({ aggregate: { last: { latest: { value: "value", by: "{'a': 1}" } } } }))
          .compile(),
      field: "spec.steps[1].aggregate[last].latest.by",
      message: /`by` orders records/,
    },
    {
      name: "a latest and a topN in one aggregation",
      build: () =>
        pipeline()
          .withSteps(keyBy(), lastPayment({ aggregate: { x: { latest: { value: "value" }, topN: { limit: 2, by: "value.amount" } } } }))
          .compile(),
      field: "spec.steps[1].aggregate[x]",
      message: /exactly one of count, sum, min, max, avg, reduce, latest, topN/,
    },
    {
      name: "a route to a sink that is not there",
      build: () =>
        pipeline()
          .with({ sinks: [{ name: "big", topic: "big-payments" }] })
          .withSteps({
            name: "split",
            route: [
              { when: "value.amount > 100", to: "big" },
              { when: "true", to: "small" },
            ],
          })
          .compile(),
      field: "spec.steps[0].route[1].to",
      message: /no sink in spec.sinks is named "small"/,
      step: "split",
    },
    {
      name: "a route's condition that gives a string",
      build: () =>
        pipeline()
          .with({ sinks: [{ name: "big", topic: "big-payments" }] })
          .withSteps({ name: "split", route: [{ when: "'yes'", to: "big" }] })
          .compile(),
      field: "spec.steps[0].route[0].when",
      message: /a route's when must give a bool/,
    },
    {
      name: "a named sink that is a source",
      build: () =>
        pipeline()
          .with({ sinks: [{ name: "again", topic: "payments" }] })
          .withSteps({ name: "split", route: [{ when: "true", to: "again" }] })
          .compile(),
      field: "spec.sinks[0].topic",
      message: /must not be a source topic/,
    },
    {
      name: "a named sink's key that is a map",
      build: () =>
        pipeline()
          .with({ sinks: [{ name: "big", topic: "big-payments", key: "{'a': 1}" }] })
          .withSteps({ name: "split", route: [{ when: "true", to: "big" }] })
          .compile(),
      field: "spec.sinks[0].key",
      message: /a key must be a string/,
    },
    {
      name: "named sinks and no route",
      build: () =>
        pipeline()
          .with({ sinks: [{ name: "big", topic: "big-payments" }] })
          .withSteps({ name: "f", filter: "true" })
          .compile(),
      field: "spec.sinks",
      message: /no route step sends to these sinks/,
    },
    {
      name: "an event time that is a map",
      build: () =>
        pipeline()
          .with({ source: { topics: ["payments"], eventTime: "{'a': 1}" } })
          .compile(),
      field: "spec.source.eventTime",
      message: /event time must be a timestamp/,
    },
  ];
  for (const c of bad) {
    test(`refuses ${c.name}, naming ${c.field}`, () => {
      const errs = errors(c.build());
      const e = errs.find((x) => x.field === c.field);
      assert.ok(e, `no error names ${c.field}: ${errs.map(formatCompileError).join("; ")}`);
      assert.match(e.message, c.message);
      if (c.line !== undefined) assert.equal(e.line, c.line);
      if (c.column !== undefined) assert.equal(e.column, c.column);
      if (c.step !== undefined) assert.equal(e.step, c.step);
    });
  }

  test("a user topic named as any pipeline's internal topic is refused, naming its field; an ordinary name is not", () => {
    const base = { kafka: { bootstrapServers: ["k"] }, source: { topics: ["in"] }, sink: { topic: "out" } };
    const fields = (spec: object) => {
      const r = compile(spec as Parameters<typeof compile>[0], { namespace: "team-b", name: "p" });
      return r.ok ? [] : r.errors.map((e) => e.field);
    };
    assert.deepEqual(fields({ ...base, sink: { topic: "team-a_orders_per-minute-changelog" } }), ["spec.sink.topic"]);
    assert.deepEqual(fields({ ...base, source: { topics: ["in", "team-a.orders-by-user-repartition"] } }), ["spec.source.topics[1]"]);
    assert.deepEqual(fields({ ...base, deadLetter: { topic: "team-a_x.y_by-user-repartition" } }), ["spec.deadLetter.topic"]);
    assert.deepEqual(fields({ ...base, sink: { topic: "orders-changelog" } }), [], "no namespace part: an ordinary name");
    assert.deepEqual(fields({ ...base, sink: { topic: "orders_v2" } }), []);
  });

  test("every error is reported, not only the first", () => {
    const errs = errors(pipeline().withSteps({ name: "a", filter: "1 +" }, { name: "b", map: "nope(" }).withSink("payments").compile());
    assert.deepEqual(
      errs.map((e) => e.field),
      ["spec.steps[0].filter", "spec.steps[1].map", "spec.sink.topic"],
    );
    assert.match(formatCompileError(errs[0] as CompileError), /^spec\.steps\[0\]\.filter \(step "a"\) at line 1, column \d+: /);
  });

  test("the state-schema hash follows what the stored state depends on, and nothing else", () => {
    const hash = (...steps: StepSpec[]) => {
      const w = ok(
        pipeline()
          .withSteps(...steps)
          .compile(),
      ).steps.find((s) => s.kind === "window");
      assert.ok(w?.kind === "window");
      return w.stateSchemaHash;
    };
    const base = hash(keyBy(), perMinute());
    assert.equal(hash(keyBy(), perMinute()), base, "deterministic");
    assert.equal(hash({ name: "f", filter: "true" }, keyBy(), perMinute()), base, "a filter before does not change state");
    assert.equal(hash(keyBy(), perMinute({ window: { tumbling: "1m", grace: "5m" } })), base, "grace does not change state");
    assert.equal(hash(keyBy(), perMinute({ emit: "onUpdate" })), base, "emit mode does not change state");
    assert.notEqual(hash(keyBy(), perMinute({ window: { tumbling: "2m" } })), base, "window size does");
    assert.notEqual(hash(keyBy("value.account"), perMinute()), base, "the key does");
    assert.notEqual(hash(keyBy(), perMinute({ aggregate: { count: { count: {} } } })), base, "the aggregations do");
  });

  test("any number of keyBy and window steps: each window keyed by the keyBy before it, with topics and state of its own", () => {
    const t = ok(
      pipeline()
        .withSteps(
          keyBy(),
          perMinute(),
          { name: "by-minute", keyBy: "value.windowStart" },
          { name: "top-user", window: { tumbling: "1m" }, aggregate: { top: { max: "value.count" } } },
          { name: "by-top", keyBy: "value.top" },
          { name: "shape", map: "{'top': value.top}" },
        )
        .compile(),
    );
    const windows = t.steps.filter((s) => s.kind === "window");
    assert.deepEqual(
      windows.map((w) => [w.name, w.changelogTopic]),
      [
        ["per-minute", "team-a_fraud_per-minute-changelog"],
        ["top-user", "team-a_fraud_top-user-changelog"],
      ],
    );
    assert.deepEqual(t.internalTopics, [
      "team-a_fraud_by-user-repartition",
      "team-a_fraud_per-minute-changelog",
      "team-a_fraud_by-minute-repartition",
      "team-a_fraud_top-user-changelog",
      "team-a_fraud_by-top-repartition",
    ]);
    const single = ok(pipeline().withSteps(keyBy(), perMinute()).compile()).steps.find((s) => s.kind === "window");
    assert.equal(windows[0]?.stateSchemaHash, single?.kind === "window" ? single.stateSchemaHash : "", "the first window's state is as alone");
    assert.notEqual(windows[1]?.stateSchemaHash, windows[0]?.stateSchemaHash);
  });

  test("an aggregate step without a window is a table: the global window, emitting each change, with a changelog kept for ever", () => {
    const t = ok(
      pipeline()
        .with({ state: { ttl: "1h" } })
        .withSteps(
          keyBy(),
          lastPayment({ aggregate: { top: { topN: { limit: 3, by: "[value.amount, value.at]" } }, last: { latest: { value: "value.amount" } } } }),
          {
            name: "shape",
            map: "value.top",
          },
        )
        .compile(),
    );
    const table = t.steps[1];
    assert.ok(table?.kind === "window");
    assert.deepEqual(table.window, { type: "global" });
    assert.equal(table.emit, "onChange");
    assert.equal(table.graceMs, 0);
    assert.deepEqual(table.aggregate, { top: { fn: "topN", n: 3, by: "[value.amount, value.at]" }, last: { fn: "latest", value: "value.amount" } });
    assert.equal(table.changelogTopic, "team-a_fraud_last-payment-changelog");
    assert.equal(changelogRetentionMs(table), undefined, "compacted and kept: expired keys get tombstones");
    assert.deepEqual(internalTopicRequests(t, 4).find((r) => r.name === table.changelogTopic)?.configs, { "cleanup.policy": "compact", "retention.ms": "-1" });
    const tombstones = ok(
      pipeline()
        .with({ state: { ttl: "1h" } })
        .withSteps(keyBy(), lastPayment({ emitTombstones: true }))
        .compile(),
    ).steps[1];
    assert.ok(tombstones?.kind === "window" && tombstones.emitTombstones === true);
  });

  test("a route step and named sinks: each sink with its topic, key and format; every sink topic gets the worker's write ACL", () => {
    const t = ok(
      pipeline()
        .with({
          sinks: [
            { name: "big", topic: "big-payments", key: "value.account", format: "string" },
            { name: "refunds", topic: "refunds" },
          ],
        })
        .withSteps(
          {
            name: "split",
            route: [
              { when: "value.amount > 100", to: "big" },
              { when: "value.kind == 'refund'", to: "refunds" },
            ],
          },
          keyBy(),
          perMinute(),
        )
        .compile(),
    );
    assert.deepEqual(t.steps[0], {
      name: "split",
      kind: "route",
      routes: [
        { when: "value.amount > 100", to: "big" },
        { when: "value.kind == 'refund'", to: "refunds" },
      ],
    });
    assert.deepEqual(t.sinks, { big: { topic: "big-payments", key: "value.account", format: "string" }, refunds: { topic: "refunds", format: "json" } });
    assert.deepEqual(sinkTopics(t), ["alerts", "big-payments", "refunds"]);
    const writes = workerAcls(t)
      .filter((r) => r.operation === "WRITE" && r.resource === "topic" && !r.prefix)
      .map((r) => r.name);
    for (const topic of sinkTopics(t)) assert.ok(writes.includes(topic), `the workers may write ${topic}`);
  });

  test("named inputs: each with its topics, format, event time and watermark; read, described and counted as the source is", () => {
    const t = ok(
      pipeline()
        .with({
          source: { topics: ["payments"], eventTime: "value.at", watermark: { maxOutOfOrderness: "5s" } },
          inputs: [
            {
              name: "legacy",
              topics: ["payments-v1", "payments-v0"],
              format: "string",
              eventTime: "int(value.split(',')[1])",
              watermark: { idleTimeout: "10s" },
            },
          ],
        })
        .withSteps(keyBy("topic == 'payments' ? value.user : value.split(',')[0]"), {
          name: "per-minute",
          window: { tumbling: "1m" },
          aggregate: { n: { count: {} } },
        })
        .compile(),
    );
    assert.deepEqual(t.inputs, [
      {
        name: "legacy",
        topics: ["payments-v1", "payments-v0"],
        format: "string",
        eventTime: "int(value.split(',')[1])",
        watermark: { maxOutOfOrdernessMs: 30_000, idleTimeoutMs: 10_000, maxFutureSkewMs: 300_000 },
      },
    ]);
    assert.deepEqual(t.source.watermark, { maxOutOfOrdernessMs: 5_000, idleTimeoutMs: 60_000, maxFutureSkewMs: 300_000 });
    assert.deepEqual(sourceTopicsOf(t), ["payments", "payments-v1", "payments-v0"]);
    assert.deepEqual(
      sourceInputs(t).map((i) => [i.name, i.format]),
      [
        ["source", "json"],
        ["legacy", "string"],
      ],
    );
    const reads = workerAcls(t)
      .filter((r) => r.operation === "READ" && r.resource === "topic" && !r.prefix)
      .map((r) => r.name);
    assert.deepEqual(reads, sourceTopicsOf(t), "the workers may read every input's topics, and no other by name");
    // the state was decoded from the inputs' formats too: another input format is another state schema
    const hashOf = (inputs: StreamPipelineSpec["inputs"]) => {
      const w = ok(
        pipeline()
          .with(inputs ? { inputs } : {})
          .withSteps(keyBy(), perMinute())
          .compile(),
      ).steps.find((s) => s.kind === "window");
      return w?.kind === "window" ? w.stateSchemaHash : "";
    };
    assert.notEqual(hashOf([{ name: "legacy", topics: ["v1"], format: "string" }]), hashOf([{ name: "legacy", topics: ["v1"], format: "json" }]));
    assert.notEqual(hashOf([{ name: "legacy", topics: ["v1"] }]), hashOf(undefined));
  });

  test("named inputs are refused with their field paths: a topic read twice, the source's name, bad event times and durations, internal topics, an input written to", () => {
    const errs = errors(
      pipeline()
        .with({
          inputs: [
            { name: "source", topics: ["other"] },
            { name: "legacy", topics: ["payments", "team-b_orders_by-user-changelog"], eventTime: "value.at +", watermark: { idleTimeout: "soon" } },
            { name: "legacy", topics: ["more"], eventTime: "'yesterday'" },
            { name: "out", topics: ["alerts", "more"] },
          ],
        })
        .compile(),
    );
    const fields = errs.map((e) => e.field).sort();
    assert.deepEqual(fields, [
      "spec.inputs[0].name",
      "spec.inputs[1].eventTime",
      "spec.inputs[1].topics[0]",
      "spec.inputs[1].topics[1]",
      "spec.inputs[1].watermark.idleTimeout",
      "spec.inputs[2].eventTime",
      "spec.inputs[2].name",
      "spec.inputs[3].topics[1]",
      "spec.sink.topic",
    ]);
    const message = (f: string) =>
      errs
        .filter((e) => e.field === f)
        .map((e) => e.message)
        .join("; ");
    assert.match(message("spec.inputs[1].topics[0]"), /payments is read by spec\.source already/);
    assert.match(message("spec.inputs[3].topics[1]"), /more is read by input "legacy" already/);
    assert.match(message("spec.inputs[1].topics[1]"), /internal topic/);
    assert.match(message("spec.inputs[2].eventTime"), /event time must be a timestamp or milliseconds/);
    assert.match(message("spec.sink.topic"), /must not be a source topic/);
  });

  test("a join step: the input is the table (not a part of the union), its records keyed by the join's key into the keyBy's topic; a changelog of its own", () => {
    const t = ok(
      pipeline()
        .with({
          inputs: [
            { name: "accounts", topics: ["accounts"], eventTime: "value.updatedAt" },
            { name: "more", topics: ["more-payments"] },
          ],
        })
        .withSteps(
          keyBy("value.account"),
          { name: "with-account", join: { input: "accounts", key: "value.id", as: "acct" } },
          { name: "big", filter: "value.acct.limit < value.amount" },
        )
        .compile(),
    );
    const join = t.steps[1];
    assert.ok(join?.kind === "join");
    assert.deepEqual(
      { ...join, stateSchemaHash: "" },
      {
        name: "with-account",
        kind: "join",
        input: "accounts",
        key: "value.id",
        as: "acct",
        type: "inner",
        late: { drop: true },
        repartitionTopic: "team-a_fraud_by-user-repartition",
        changelogTopic: "team-a_fraud_with-account-changelog",
        stateSchemaHash: "",
      },
    );
    assert.match(join.stateSchemaHash, /^[0-9a-f]{16}$/);
    assert.deepEqual(
      t.inputs?.map((i) => [i.name, i.join]),
      [
        ["accounts", "with-account"],
        ["more", undefined],
      ],
    );
    assert.deepEqual(
      statefulSteps(t).map((s) => s.name),
      ["with-account"],
    );
    assert.ok(t.internalTopics.includes("team-a_fraud_with-account-changelog"));
    assert.equal(changelogRetentionMs(join), undefined, "compacted and kept: versions per key, held records deleted once released");
    const reads = workerAcls(t).filter((r) => r.operation === "READ" && r.resource === "topic" && !r.prefix);
    assert.ok(
      reads.some((r) => r.name === "accounts"),
      "the workers read the table's topic",
    );
    assert.ok(
      workerAcls(t).some((r) => r.resource === "group" && r.prefix),
      "and restore the join's changelog under their restore groups",
    );
  });

  test("join steps are refused with their field paths: no keyBy before, beside a window, an unknown input, an input two joins name, a key that is not a scalar, a late topic that is a source", () => {
    const join = (name: string, input = "accounts", key = "value.id") => ({ name, join: { input, key, as: "acct" } });
    const fieldsOf = (steps: StepSpec[], inputs = [{ name: "accounts", topics: ["accounts"] }]) =>
      errors(
        pipeline()
          .with({ inputs })
          .withSteps(...steps)
          .compile(),
      ).map((e) => `${e.field}: ${e.message}`);
    assert.deepEqual(fieldsOf([join("j")]), ["spec.steps[0]: a join step needs a keyBy step before it: the two sides meet per key"]);
    const compiles = (steps: StepSpec[], inputs = [{ name: "accounts", topics: ["accounts"] }]) =>
      ok(
        pipeline()
          .with({ inputs })
          .withSteps(...steps)
          .compile(),
      ).steps.map((x) => x.kind);
    assert.deepEqual(
      compiles([keyBy(), perMinute(), { name: "again", keyBy: "value.key" }, join("j")]),
      ["keyBy", "window", "keyBy", "join"],
      "a join after a later keyBy",
    );
    assert.match(fieldsOf([keyBy(), perMinute(), join("j")]).join(), /^spec\.steps\[2\]: a keyBy step goes between "per-minute" and this join/);
    assert.deepEqual(fieldsOf([keyBy(), join("j", "nope")]), ['spec.steps[1].join.input: no input in spec.inputs is named "nope"']);
    assert.deepEqual(fieldsOf([keyBy(), join("j"), { name: "k2", keyBy: "value.x" }, join("j2")]), [
      'spec.steps[3].join.input: input "accounts" is already joined by step "j": an input is the other side of one join',
    ]);
    assert.deepEqual(
      compiles(
        [keyBy(), join("j"), { name: "k2", keyBy: "value.x" }, join("j2", "merchants")],
        [
          { name: "accounts", topics: ["accounts"] },
          { name: "merchants", topics: ["merchants"] },
        ],
      ),
      ["keyBy", "join", "keyBy", "join"],
      "two joins, each with its own input",
    );
    assert.deepEqual(fieldsOf([keyBy(), join("j", "accounts", "[value.id]")]), [
      "spec.steps[1].join.key: a key must be a string, a number, a bool or bytes, but this expression gives list",
    ]);
    assert.deepEqual(fieldsOf([keyBy(), { ...join("j"), late: { topic: "payments" } }]), [
      "spec.steps[1].late.topic: the late topic must not be the sink or a source",
    ]);
  });

  test("a windowed stream-stream join: within and grace in ms, outer allowed; outer or grace without within refused at their paths; another state schema than a stream-table join", () => {
    const compileJoin = (join: NonNullable<StepSpec["join"]>) =>
      pipeline()
        .with({ inputs: [{ name: "clicks", topics: ["clicks"], eventTime: "value.ts" }] })
        .withSteps(keyBy("value.ad"), { name: "with-click", join })
        .compile();
    const t = ok(compileJoin({ input: "clicks", key: "value.ad", as: "click", type: "outer", within: "10m", grace: "5s" }));
    const step = t.steps[1];
    assert.ok(step?.kind === "join");
    assert.deepEqual([step.type, step.withinMs, step.graceMs], ["outer", 600_000, 5_000]);
    const plain = ok(compileJoin({ input: "clicks", key: "value.ad", as: "click" })).steps[1];
    assert.ok(plain?.kind === "join");
    assert.deepEqual([plain.withinMs, plain.graceMs], [undefined, undefined], "no within: a stream-table join");
    const noGrace = ok(compileJoin({ input: "clicks", key: "value.ad", as: "click", within: "10m" })).steps[1];
    assert.ok(noGrace?.kind === "join");
    assert.equal(noGrace.graceMs, 0);
    assert.notEqual(noGrace.stateSchemaHash, plain.stateSchemaHash, "both sides' records, not a table's versions");
    const longer = ok(compileJoin({ input: "clicks", key: "value.ad", as: "click", within: "1h" })).steps[1];
    assert.ok(longer?.kind === "join");
    assert.equal(longer.stateSchemaHash, noGrace.stateSchemaHash, "within may change: the layout stays");
    assert.deepEqual(
      errors(compileJoin({ input: "clicks", key: "value.ad", as: "click", type: "outer", grace: "5s" })).map((e) => `${e.field}: ${e.message}`),
      [
        "spec.steps[1].join.type: an outer join is a windowed stream-stream join: it needs within",
        "spec.steps[1].join.grace: grace belongs to a windowed stream-stream join: it needs within",
      ],
    );
    assert.deepEqual(
      errors(compileJoin({ input: "clicks", key: "value.ad", as: "click", within: "soon" })).map((e) => e.field),
      ["spec.steps[1].join.within"],
    );
  });

  test("a table-table join: table on the step, last in the pipeline, without within; another state schema", () => {
    const compileJoin = (join: NonNullable<StepSpec["join"]>, after: StepSpec[] = []) =>
      pipeline()
        .with({ inputs: [{ name: "limits", topics: ["limits"] }] })
        .withSteps(keyBy("key"), { name: "with-limit", join }, ...after)
        .compile();
    const t = ok(compileJoin({ input: "limits", key: "key", as: "limit", type: "left", table: true }));
    const step = t.steps[1];
    assert.ok(step?.kind === "join");
    assert.deepEqual([step.table, step.withinMs], [true, undefined]);
    const plain = ok(compileJoin({ input: "limits", key: "key", as: "limit", type: "left" })).steps[1];
    assert.ok(plain?.kind === "join");
    assert.notEqual(step.stateSchemaHash, plain.stateSchemaHash);
    assert.deepEqual(
      errors(compileJoin({ input: "limits", key: "key", as: "limit", table: true, within: "1m" }, [{ name: "m", map: "value" }])).map(
        (e) => `${e.field}: ${e.message}`,
      ),
      [
        "spec.steps[1].join.table: a table-table join keeps each side's latest value: within belongs to a join of two streams",
        "spec.steps[1].join.table: a table-table join must be the last step: a result it ends is a tombstone, with no value for a step after it to read",
      ],
    );
  });

  test("a join with a global input: a lookup anywhere, even before any keyBy; the input outside the group's topics; refused without lookup, with within, or unjoined", () => {
    const withGlobal = (steps: StepSpec[], inputs: NonNullable<StreamPipelineSpec["inputs"]> = [{ name: "countries", topics: ["countries"], global: true }]) =>
      pipeline()
        .with({ inputs })
        .withSteps(...steps)
        .compile();
    const lookup = { name: "with-country", join: { input: "countries", key: "key", lookup: "value.country", as: "country", type: "left" as const } };
    const t = ok(withGlobal([lookup, { name: "eu", filter: "value.country != null && value.country.eu" }]));
    assert.deepEqual(t.steps[0], {
      name: "with-country",
      kind: "lookup",
      input: "countries",
      key: "key",
      lookup: "value.country",
      as: "country",
      type: "left",
    });
    assert.deepEqual(sourceTopicsOf(t), ["payments"], "the group does not read a global input");
    assert.deepEqual(
      globalInputs(t).map((i) => i.name),
      ["countries"],
    );
    assert.deepEqual(t.internalTopics, [], "no repartition, no changelog");
    const acls = workerAcls(t);
    assert.ok(
      acls.some((r) => r.resource === "topic" && r.name === "countries" && r.operation === "READ"),
      "the workers read it",
    );
    assert.ok(
      acls.some((r) => r.resource === "group" && r.prefix && r.operation === "READ"),
      "under the pipeline's reader groups",
    );
    const messages = (steps: StepSpec[], inputs?: NonNullable<StreamPipelineSpec["inputs"]>) =>
      errors(withGlobal(steps, inputs)).map((e) => `${e.field}: ${e.message}`);
    assert.deepEqual(messages([{ name: "j", join: { input: "countries", key: "key", as: "c" } }]), [
      "spec.steps[0].join.lookup: a join with a global input needs lookup: the key to look each record up by",
    ]);
    assert.deepEqual(messages([{ name: "j", join: { input: "countries", key: "key", lookup: "value.c", as: "c", within: "1m" } }]), [
      "spec.steps[0].join.within: a global input is a table looked up as it stands: within and grace belong to a join of two streams",
    ]);
    assert.deepEqual(messages([{ name: "j", join: { input: "countries", key: "key", lookup: "[value.c]", as: "c" } }]), [
      "spec.steps[0].join.lookup: a key must be a string, a number, a bool or bytes, but this expression gives list",
    ]);
    assert.deepEqual(
      messages([keyBy(), { name: "j", join: { input: "accounts", key: "key", lookup: "value.c", as: "c" } }], [{ name: "accounts", topics: ["accounts"] }]),
      ['spec.steps[1].join.lookup: lookup belongs to a join with a global input, and "accounts" is not one'],
    );
    assert.deepEqual(messages([{ name: "j", join: { input: "countries", key: "key", lookup: "value.c", as: "c" }, late: { drop: true } }]), [
      "spec.steps[0].late: a join with a global input looks records up as they come: none is late",
    ]);
    assert.deepEqual(messages([{ name: "m", map: "value" }]), [
      'spec.inputs[0].global: a global input is read only by a join step that names it, and no step joins "countries"',
    ]);
  });

  const durations: [string, number | undefined][] = [
    ["100ms", 100],
    ["30s", 30_000],
    ["1m30s", 90_000],
    ["1.5h", 5_400_000],
    ["0s", 0],
    ["", undefined],
    ["30", undefined],
    ["1d", undefined],
    ["5m junk", undefined],
  ];
  for (const [text, ms] of durations) test(`duration "${text}"`, () => assert.equal(parseDuration(text), ms));
});
