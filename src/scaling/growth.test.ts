import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type GrowthLimits, partitionCountsOf, planGrowth, projectGrowth, scalingLimited } from "./growth.ts";
import { decide, type Rates } from "./policy.ts";

const T0 = 1_767_225_600_000;

/** Rates over topic `orders` (and more topics if given), one entry per partition. */
function rates(topics: Record<string, { lag: number[]; in: number[] }>, extra: Partial<Rates> = {}): Rates {
  const lag = new Map<string, number>();
  const inRate = new Map<string, number>();
  for (const [t, v] of Object.entries(topics)) {
    v.lag.forEach((x, i) => lag.set(`${t}:${i}`, x));
    v.in.forEach((x, i) => inRate.set(`${t}:${i}`, x));
  }
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  return {
    at: T0,
    partitionLag: lag,
    partitionInRate: inRate,
    lag: sum(lag),
    inRate: sum(inRate),
    consumeRate: 1000,
    saturated: true,
    groupState: "Stable",
    members: 2,
    ...extra,
  };
}

const limits = (sources: Record<string, number>, more: Partial<GrowthLimits> = {}): GrowthLimits => ({
  sources: new Map(Object.entries(sources)),
  max: 12,
  maxReplicas: 10,
  targetCatchUpMs: 60_000,
  ...more,
});

describe("partition growth", () => {
  test("input beyond what the partitions' workers read: grown to ceil(demand / rate), within max and maxReplicas", () => {
    // 2 partitions, 1,250/s into each, 500/s a worker, 6,000 behind each: (2,500 + 12,000 / 60) / 500 = 5.4 -> 6.
    const r = rates({ orders: { lag: [6000, 6000], in: [1250, 1250] } });
    assert.deepEqual(planGrowth(r, 500, limits({ orders: 2 }), r), { grow: new Map([["orders", 6]]) });
    assert.deepEqual(planGrowth(r, 500, limits({ orders: 2 }, { max: 4 }), r).grow, new Map([["orders", 4]]));
    assert.deepEqual(planGrowth(r, 500, limits({ orders: 2 }, { maxReplicas: 3 }), r).grow, new Map([["orders", 3]]));
  });

  test("the policy then scales straight to the grown count, in one step", () => {
    const r = rates({ orders: { lag: [6000, 6000], in: [1250, 1250] } });
    const state = { since: T0 - 600_000, history: [], perReplicaRate: 500 };
    const before = decide({ scaling: { mode: "lag", maxReplicas: 10 } }, { rates: r, current: 2, maxParallelism: 2 }, state, T0);
    assert.deepEqual([before.desired, before.cappedBy], [2, "partitions"]);
    const plan = planGrowth(r, before.perReplicaRate, limits({ orders: 2 }), r);
    const projected = projectGrowth(r, plan.grow);
    const counts = partitionCountsOf(projected.partitionLag?.keys() ?? []);
    assert.deepEqual(counts, new Map([["orders", 6]]));
    // The input spread over 6 partitions; the backlog stays where it is; totals unchanged.
    assert.equal(projected.partitionInRate?.get("orders:5"), 2500 / 6);
    assert.equal(projected.partitionLag?.get("orders:5"), 0);
    assert.equal(projected.partitionLag?.get("orders:0"), 6000);
    assert.equal(projected.inRate, 2500);
    const after = decide({ scaling: { mode: "lag", maxReplicas: 10 } }, { rates: projected, current: 2, maxParallelism: 6 }, state, T0);
    assert.deepEqual([after.desired, after.reason, after.cappedBy], [6, "ScaleUp", undefined]);
  });

  test("a backlog with no new input is not grown: its records stay in the partitions they were written to", () => {
    const r = rates({ orders: { lag: [300_000, 300_000], in: [0, 0] } });
    const plan = planGrowth(r, 500, limits({ orders: 2 }));
    assert.equal(plan.grow.size, 0);
    assert.match(plan.held ?? "", /orders: its backlog is in the partitions it has/);
  });

  test("no growth before a worker's rate is measured: a partition added is there for good", () => {
    const r = rates({ orders: { lag: [6000, 6000], in: [1250, 1250] } });
    const plan = planGrowth(r, undefined, limits({ orders: 2 }));
    assert.equal(plan.grow.size, 0);
    assert.match(plan.held ?? "", /only once a worker's rate has been measured/);
  });

  test("unknown lag or input: nothing grown, and said", () => {
    const r = rates({ orders: { lag: [6000, 6000], in: [1250, 1250] } }, { partitionLag: undefined });
    const plan = planGrowth(r, 500, limits({ orders: 2 }));
    assert.equal(plan.grow.size, 0);
    assert.match(plan.held ?? "", /unknown/);
  });

  test("enough partitions, or at max already: nothing to grow", () => {
    const r = rates({ orders: { lag: [6000, 6000], in: [1250, 1250] } });
    assert.deepEqual(planGrowth(r, 5000, limits({ orders: 2 })), { grow: new Map() });
    assert.deepEqual(planGrowth(r, 500, limits({ orders: 2 }, { max: 2 })), { grow: new Map() });
  });

  test("each source topic is planned on its own input", () => {
    const r = rates({ orders: { lag: [0, 0], in: [1500, 1500] }, refunds: { lag: [0, 0], in: [10, 10] } });
    assert.deepEqual(planGrowth(r, 500, limits({ orders: 2, refunds: 2 }), r).grow, new Map([["orders", 6]]));
  });

  test("input seen in one reading only is a burst landing, not a rate: it waits for a second reading", () => {
    // A transaction of 40,000 records committed within one interval: 8,000/s for that interval, then a backlog.
    const landed = rates({ orders: { lag: [20_000, 20_000], in: [8000, 8000] } });
    const before = rates({ orders: { lag: [0, 0], in: [0, 0] } });
    const first = planGrowth(landed, 500, limits({ orders: 2 }), before);
    assert.equal(first.grow.size, 0);
    assert.match(first.held ?? "", /orders: its input has not held for two readings/);
    assert.equal(planGrowth(landed, 500, limits({ orders: 2 })).grow.size, 0, "no earlier reading: nothing held yet");
    const after = rates({ orders: { lag: [19_000, 19_000], in: [0, 0] } });
    assert.equal(planGrowth(after, 500, limits({ orders: 2 }), landed).grow.size, 0, "and then it is a backlog");
  });
});

describe("the ScalingLimited condition", () => {
  const base = { internalTopics: new Set<string>(), autoGrow: false, max: undefined, plan: undefined };

  test("source partitions cap the workers and autoGrow is off: it says how to turn it on", () => {
    const c = scalingLimited({ ...base, decision: { desired: 2, cappedBy: "partitions" }, partitions: new Map([["orders", 2]]) });
    assert.equal(c.status, "True");
    assert.equal(c.reason, "PartitionsCapParallelism");
    assert.match(c.message, /orders \(2\).*spec\.scaling\.partitions\.autoGrow/);
  });

  test("a window step's key groups cap the workers: never grown, and why", () => {
    const c = scalingLimited({
      ...base,
      autoGrow: true,
      max: 8,
      decision: { desired: 8, cappedBy: "partitions" },
      partitions: new Map([
        ["orders", 2],
        ["app-win-repartition", 8],
      ]),
      internalTopics: new Set(["app-win-repartition"]),
    });
    assert.equal(c.reason, "KeyGroupsCapParallelism");
    assert.match(c.message, /app-win-repartition, whose 8 partitions are the pipeline's key groups.*never grown/);
  });

  test("grown to max, or held back: each says so", () => {
    const atMax = scalingLimited({ ...base, autoGrow: true, max: 6, decision: { desired: 6, cappedBy: "partitions" }, partitions: new Map([["orders", 6]]) });
    assert.deepEqual([atMax.status, atMax.reason], ["True", "PartitionsAtMax"]);
    const held = scalingLimited({
      ...base,
      autoGrow: true,
      max: 6,
      decision: { desired: 2, cappedBy: "partitions" },
      partitions: new Map([["orders", 2]]),
      plan: { grow: new Map(), held: "orders: its lag or input rate is unknown" },
    });
    assert.deepEqual([held.reason, held.message.endsWith("orders: its lag or input rate is unknown")], ["PartitionGrowthHeld", true]);
  });

  test("a skewed partition is a limit; maxReplicas and no cap are not", () => {
    assert.equal(
      scalingLimited({ ...base, decision: { desired: 3, cappedBy: "partitionSkew" }, partitions: new Map([["orders", 6]]) }).reason,
      "PartitionSkew",
    );
    for (const cappedBy of ["maxReplicas", undefined] as const) {
      const c = scalingLimited({ ...base, decision: { desired: 3, cappedBy }, partitions: new Map([["orders", 6]]) });
      assert.deepEqual([c.status, c.reason], ["False", "WithinLimits"]);
    }
  });
});
