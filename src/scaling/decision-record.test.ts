import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipeline } from "../api.ts";
import { compile } from "../topology/compile.ts";
import { compactRecommendations, lagTargetFor, maxParallelismOf, newestScaling, policyStateOf, scaleEventOf, scalingStatusOf } from "./decision-record.ts";
import type { Decision, Recommendation } from "./policy.ts";

const T0 = Date.parse("2026-01-01T00:00:00.000Z");
const at = (seconds: number) => T0 + seconds * 1000;

function decision(over: Partial<Decision> = {}): Decision {
  return {
    desired: 4,
    current: 1,
    reason: "ScaleUp",
    cappedBy: "maxReplicas",
    lag: 148_213,
    inRate: 0,
    consumeRate: 1998.4444444,
    lastScaleTime: at(10),
    state: { since: at(0), history: [{ at: at(10), desired: 4 }], lastScaleTime: at(10) },
    ...over,
  };
}

describe("status.scaling", () => {
  test("records the decision, what it saw and the policy's state, which reads back as it was", () => {
    const d = decision({
      perReplicaRate: 1999.123456789,
      state: {
        since: at(0),
        perReplicaRate: 1999.123456789,
        history: [
          { at: at(2), desired: 3 },
          { at: at(4), desired: 2 },
        ],
        lastScaleTime: at(10),
        idleSince: at(8),
      },
    });
    const s = scalingStatusOf(d, { sampleAt: at(10), errors: [] });
    assert.deepEqual(s, {
      desired: 4,
      current: 1,
      reason: "ScaleUp",
      cappedBy: "maxReplicas",
      lag: 148_213,
      inputRate: 0,
      consumeRate: 1998.44,
      perReplicaRate: 1999.12,
      lastScaleTime: "2026-01-01T00:00:10.000Z",
      sampleTime: "2026-01-01T00:00:10.000Z",
      state: {
        since: "2026-01-01T00:00:00.000Z",
        idleSince: "2026-01-01T00:00:08.000Z",
        recommendations: [
          { at: "2026-01-01T00:00:02.000Z", desired: 3 },
          { at: "2026-01-01T00:00:04.000Z", desired: 2 },
        ],
      },
    });
    assert.deepEqual(policyStateOf(s), { ...d.state, perReplicaRate: 1999.12 });
  });

  test("an unknown lag is absent, never 0, and the failed reads are listed, bounded and well-formed", () => {
    const d = decision({ desired: 3, current: 3, reason: "UnknownLag", cappedBy: undefined, lag: undefined, inRate: undefined, consumeRate: undefined });
    const errors = ["describing group g: timeout", `reading the end offsets of a: ${"x".repeat(2000)}\ud83d`, "3", "4", "5", "6"];
    const s = scalingStatusOf(d, { sampleAt: at(10), errors });
    assert.equal("lag" in s, false);
    assert.equal("inputRate" in s, false);
    assert.equal("cappedBy" in s, false);
    assert.equal(s.errors?.length, 5);
    assert.equal(s.errors?.[0], "describing group g: timeout");
    assert.ok((s.errors?.[1]?.length ?? 0) <= 512);
    assert.ok(s.errors?.every((e) => e.isWellFormed()));
  });

  test("no state yet, or a state that does not parse, gives the policy nothing to go on from", () => {
    assert.equal(policyStateOf(undefined), undefined);
    const s = scalingStatusOf(decision(), { sampleAt: at(10), errors: [] });
    assert.equal(policyStateOf({ ...s, state: { ...s.state, since: "yesterday" } }), undefined);
  });

  test("the newer of two records wins, by the time of their readings", () => {
    const older = scalingStatusOf(decision({ desired: 1 }), { sampleAt: at(10), errors: [] });
    const newer = scalingStatusOf(decision({ desired: 4 }), { sampleAt: at(12), errors: [] });
    assert.equal(newestScaling(older, newer), newer);
    assert.equal(newestScaling(newer, older), newer);
    assert.equal(newestScaling(undefined, older), older);
    assert.equal(newestScaling(older, undefined), older);
  });
});

describe("compacted recommendations", () => {
  test("keep only what a later, higher or equal one does not outlast", () => {
    const h = (xs: [number, number][]): Recommendation[] => xs.map(([s, desired]) => ({ at: at(s), desired }));
    assert.deepEqual(
      compactRecommendations(
        h([
          [0, 4],
          [2, 3],
          [4, 3],
          [6, 5],
          [8, 2],
          [10, 1],
          [12, 2],
        ]),
      ),
      h([
        [6, 5],
        [12, 2],
      ]),
    );
  });

  test("the highest recommendation within any later window is the same as over the whole history", () => {
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let run = 0; run < 200; run++) {
      const history: Recommendation[] = [];
      for (let s = 0; s < 60; s += 1 + Math.floor(next() * 3)) history.push({ at: at(s), desired: Math.floor(next() * 8) });
      const compact = compactRecommendations(history);
      assert.ok(compact.length <= 8, "one entry per distinct value at most");
      for (let t = 0; t < 90; t += 1) {
        const windowStart = at(t - 20);
        const highest = (xs: Recommendation[]) => Math.max(-1, ...xs.filter((r) => r.at > windowStart && r.at <= at(60)).map((r) => r.desired));
        assert.equal(highest(compact), highest(history), `run ${run}, t ${t}`);
      }
    }
  });
});

describe("the scale event", () => {
  const spec = { scaling: { mode: "lag" as const, targetCatchUp: "20s", scaleDownStabilization: "20s" } };
  const cases: { name: string; d: Decision; reason?: string; message?: RegExp }[] = [
    {
      name: "a scale-up before the per-worker rate is measured",
      d: decision(),
      reason: "ScaledUp",
      message:
        /^Scaled up from 1 to 4 workers \(ScaleUp\): lag 148,213 records, input 0\/s, consumed 1,998.4\/s, unknown per worker; lag \/ lagPerReplica \(1000\) needs more workers; the per-worker rate is not measured yet; capped by maxReplicas$/,
    },
    {
      name: "a scale-up on the measured rate",
      d: decision({ desired: 3, cappedBy: undefined, perReplicaRate: 2000, inRate: 1500 }),
      reason: "ScaledUp",
      message: /from 1 to 3 workers .* input 1,500\/s, .* 2,000\/s per worker; \(input \+ lag \/ targetCatchUp 20s\) \/ per-worker rate needs more workers$/,
    },
    {
      name: "a scale-down to the highest target within the window, above today's",
      d: decision({
        desired: 2,
        current: 4,
        reason: "ScaleDown",
        cappedBy: "minReplicas",
        lag: 0,
        perReplicaRate: 2000,
        state: {
          since: at(0),
          history: [
            { at: at(10), desired: 2 },
            { at: at(30), desired: 1 },
          ],
        },
      }),
      reason: "ScaledDown",
      message:
        /^Scaled down from 4 to 2 workers \(ScaleDown\): .*every target within the 20s stabilization window is at most 2; the target now is 1 \(capped by minReplicas\)$/,
    },
    {
      name: "a scale-down to today's target",
      d: decision({
        desired: 1,
        current: 4,
        reason: "ScaleDown",
        cappedBy: "minReplicas",
        lag: 0,
        perReplicaRate: 2000,
        state: { since: at(0), history: [{ at: at(30), desired: 1 }] },
      }),
      reason: "ScaledDown",
      message:
        /^Scaled down from 4 to 1 workers \(ScaleDown\): lag 0 records, .*every target within the 20s stabilization window is at most 1; capped by minReplicas$/,
    },
    {
      name: "to zero",
      d: decision({ desired: 0, current: 2, reason: "ScaleToZero", cappedBy: undefined }),
      reason: "ScaledToZero",
      message: /no input and no lag for 20s/,
    },
    {
      name: "from zero",
      d: decision({ desired: 1, current: 0, reason: "WakeUp", cappedBy: undefined }),
      reason: "WokeUp",
      message: /records arrived while no worker ran/,
    },
    { name: "no change, no event", d: decision({ desired: 4, current: 4, reason: "Stabilizing" }) },
    { name: "a hold, no event", d: decision({ desired: 2, current: 2, reason: "HoldRebalance", lag: undefined }) },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const e = scaleEventOf(c.d, spec);
      assert.equal(e?.reason, c.reason);
      if (c.message) assert.match(e?.message ?? "", c.message);
    });
  }
});

describe("what the autoscaler reads", () => {
  const pipeline = (steps: StreamPipeline["spec"]["steps"]): StreamPipeline => ({
    metadata: { namespace: "team-a", name: "fraud" },
    spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["payments", "refunds"], startFrom: "earliest" }, steps, sink: { topic: "out" } },
  });
  const topologyOf = (p: StreamPipeline) => {
    const c = compile(p.spec, { namespace: "team-a", name: "fraud" });
    assert.ok(c.ok);
    return c.topology;
  };

  test("a stateless pipeline's group reads its sources", () => {
    const p = pipeline([{ name: "big", filter: "value.amount > 1000" }]);
    assert.deepEqual(lagTargetFor(p, topologyOf(p), { bootstrapServers: ["k:9092"] }), {
      kafka: { bootstrapServers: ["k:9092"] },
      group: "team-a.fraud",
      topics: ["payments", "refunds"],
      startFrom: "earliest",
    });
  });

  test("a keyed pipeline's group also reads its repartition topic, whose backlog is work too", () => {
    const p = pipeline([
      { name: "by-user", keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
    ]);
    assert.deepEqual(lagTargetFor(p, topologyOf(p), { bootstrapServers: ["k:9092"] }).topics, ["payments", "refunds", "team-a_fraud_by-user-repartition"]);
  });

  test("parallelism is the widest topic's partition count; unknown offsets cap nothing", () => {
    const offsets = new Map<string, bigint>([
      ["payments:0", 5n],
      ["payments:1", 5n],
      ["a:b:0", 1n],
      ["a:b:1", 1n],
      ["a:b:2", 1n],
    ]);
    assert.equal(maxParallelismOf(offsets), 3);
    assert.equal(maxParallelismOf(undefined), Number.POSITIVE_INFINITY);
  });
});
