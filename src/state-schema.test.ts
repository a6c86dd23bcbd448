import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepSpec, StreamPipelineSpec } from "./api-types.gen.ts";
import { acceptedSchemas, incompatibleSteps, resetRequested, stateSchemasOf } from "./state-schema.ts";
import { type CompiledTopology, compile, formatCompileError } from "./topology/compile.ts";

function topology(...steps: StepSpec[]): CompiledTopology {
  const spec: StreamPipelineSpec = { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["payments"] }, sink: { topic: "alerts" }, steps };
  const r = compile(spec, { namespace: "team-a", name: "fraud" });
  if (!r.ok) assert.fail(r.errors.map(formatCompileError).join("; "));
  return r.topology;
}

const keyBy = (expr = "value.user"): StepSpec => ({ name: "by-user", keyBy: expr });
const window = (over: Partial<StepSpec> = {}): StepSpec => ({ name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } }, ...over });

describe("state-schema compatibility", () => {
  const base = topology(keyBy(), window());
  const accepted = stateSchemasOf(base);

  const cases: { name: string; t: CompiledTopology; incompatible: string[]; fresh?: true }[] = [
    { name: "nothing accepted yet: a new pipeline", t: topology(keyBy("value.region"), window()), incompatible: [], fresh: true },
    { name: "the same topology", t: base, incompatible: [] },
    { name: "a stateless step added before the key", t: topology({ name: "big", filter: "value.amount > 1" }, keyBy(), window()), incompatible: [] },
    { name: "the emit mode changed (not part of the state)", t: topology(keyBy(), window({ emit: "onUpdate" })), incompatible: [] },
    {
      name: "an aggregation added",
      t: topology(keyBy(), window({ aggregate: { n: { count: {} }, s: { sum: "value.amount" } } })),
      incompatible: ["per-minute"],
    },
    { name: "the window size changed", t: topology(keyBy(), window({ window: { tumbling: "5m" } })), incompatible: ["per-minute"] },
    { name: "the key expression changed", t: topology(keyBy("value.region"), window()), incompatible: ["per-minute"] },
    { name: "a new window step under another name", t: topology(keyBy(), window({ name: "per-five" })), incompatible: [] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const before = c.fresh ? undefined : accepted;
      assert.deepEqual(
        incompatibleSteps(before, c.t).map((x) => x.step),
        c.incompatible,
      );
      for (const x of incompatibleSteps(before, c.t)) {
        assert.equal(x.from, accepted["per-minute"]);
        assert.equal(x.changelogTopic, "team-a_fraud_per-minute-changelog");
      }
    });
  }

  test("a removed step keeps its entry, so bringing it back changed is still refused", () => {
    const stateless = topology({ name: "big", filter: "value.amount > 1" });
    const kept = acceptedSchemas(accepted, stateless);
    assert.deepEqual(kept, accepted);
    const back = topology(keyBy(), window({ aggregate: { m: { max: "value.amount" } } }));
    assert.deepEqual(
      incompatibleSteps(kept, back).map((x) => x.step),
      ["per-minute"],
    );
  });

  test("a reset is asked for only by a token that no reset has used", () => {
    assert.equal(resetRequested(undefined, undefined), false);
    assert.equal(resetRequested("", undefined), false);
    assert.equal(resetRequested("2026-11-29", undefined), true);
    assert.equal(resetRequested("2026-11-29", "2026-11-29"), false);
    assert.equal(resetRequested("2026-11-30", "2026-11-29"), true);
  });
});
