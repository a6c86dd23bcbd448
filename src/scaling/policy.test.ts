import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ScalingSpec } from "../api-types.gen.ts";
import { aligned, type CappedBy, type Decision, decide, deriveRates, type PolicyState, quiet, type Rates, type Reason, type ScalingSample } from "./policy.ts";

const T0 = 1_767_225_600_000;
const at = (seconds: number) => T0 + seconds * 1000;
const key = (i: number) => `payments:${i}`;
const each = (n: number, v: number) => Array<number>(n).fill(v);
const byPartition = (xs: number[]) => new Map(xs.map((x, i) => [key(i), x]));
const total = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

interface Load {
  /** Records behind per partition. */
  lag?: number[] | "unknown";
  /** Records per second appended per partition; no input by default. */
  in?: number[] | "unknown";
  consume?: number;
  saturated?: boolean;
  /** Coordinator state; "Stable" by default, undefined for a group that could not be read. */
  group?: string | undefined;
  /** Members; the current replicas by default. */
  members?: number;
}

/** What the lag reader saw, as a function of the replicas running, since a settled group has one member each. */
const load =
  (l: Load = {}) =>
  (current: number): Rates => {
    const lag = l.lag === "unknown" ? undefined : byPartition(l.lag ?? [0]);
    const partitions = Array.isArray(l.lag) ? l.lag.length : Array.isArray(l.in) ? l.in.length : 1;
    const inRate = l.in === "unknown" ? undefined : byPartition(l.in ?? each(partitions, 0));
    return {
      at: 0,
      partitionLag: lag,
      partitionInRate: inRate,
      lag: lag && total(lag),
      inRate: inRate && total(inRate),
      consumeRate: l.consume,
      saturated: l.saturated ?? false,
      groupState: "group" in l ? l.group : "Stable",
      members: l.members ?? current,
    };
  };
const idle = load({ lag: each(4, 0) });
const unknown = load({ lag: "unknown", in: "unknown" });

interface Run {
  scaling?: ScalingSpec;
  current?: number;
  partitions?: number;
  /** A per-replica rate learned before the run. */
  learned?: number;
}

/** Feeds observations to the policy as the controller would: the replicas follow each decision, the state is threaded. */
function drive(run: Run, steps: [seconds: number, observe: (current: number) => Rates][]): Decision[] {
  let state: PolicyState | undefined = run.learned === undefined ? undefined : { since: T0, history: [], perReplicaRate: run.learned };
  let current = run.current ?? 1;
  const out: Decision[] = [];
  for (const [seconds, observe] of steps) {
    const d = decide(
      { scaling: { mode: "lag", ...run.scaling } },
      { rates: observe(current), current, maxParallelism: run.partitions ?? 12 },
      state,
      at(seconds),
    );
    out.push(d);
    state = d.state;
    current = d.desired ?? current;
  }
  return out;
}

type Want = [desired: number | undefined, reason: Reason, cappedBy?: CappedBy];
const got = (d: Decision): Want => (d.cappedBy ? [d.desired, d.reason, d.cappedBy] : [d.desired, d.reason]);

describe("lag scaling policy", () => {
  const cases: (Run & { name: string; steps: [number, (current: number) => Rates][]; want: Want[]; rates?: (number | undefined)[] })[] = [
    {
      name: "before any throughput is measured: lag / lagPerReplica",
      steps: [[0, load({ lag: each(12, 250) })]],
      want: [[3, "ScaleUp"]],
    },
    {
      name: "lagPerReplica from the spec",
      scaling: { lagPerReplica: 500 },
      steps: [[0, load({ lag: each(12, 250) })]],
      want: [[6, "ScaleUp"]],
    },
    {
      name: "an interval that was not saturated teaches nothing",
      steps: [[0, load({ lag: each(12, 250), consume: 5000 })]],
      want: [[3, "ScaleUp"]],
      rates: [undefined],
    },
    {
      name: "a saturated interval teaches consumeRate / members; then (inRate + lag / targetCatchUp) / perReplicaRate",
      current: 2,
      // 400/s over 2 members is 200/s each; (600/s + 12000 / 60s) / 200 = 4.
      steps: [[0, load({ lag: each(12, 1000), in: each(12, 50), consume: 400, saturated: true })]],
      want: [[4, "ScaleUp"]],
      rates: [200],
    },
    {
      name: "the per-replica rate is an EWMA of saturated intervals only",
      current: 2,
      steps: [
        [0, load({ lag: each(12, 100), consume: 400, saturated: true })],
        [5, load({ lag: each(12, 100), consume: 800, saturated: true })],
        [10, load({ lag: each(12, 100), consume: 2000 })],
      ],
      want: [
        [2, "Stabilizing"],
        [2, "Stabilizing"],
        [2, "Stabilizing"],
      ],
      rates: [200, 260, 260],
    },
    {
      name: "targetCatchUp from the spec",
      learned: 100,
      scaling: { targetCatchUp: "2m" },
      // 12000 / 120s / 100 = 1, where the default 60s would ask for 2.
      steps: [[0, load({ lag: each(12, 1000) })]],
      want: [[1, "Steady"]],
    },
    {
      name: "clamped to maxReplicas",
      partitions: 24,
      steps: [[0, load({ lag: each(24, 1000) })]],
      want: [[12, "ScaleUp", "maxReplicas"]],
    },
    {
      name: "clamped to the partition count, which the caller may grow",
      partitions: 8,
      steps: [[0, load({ lag: each(8, 2500) })]],
      want: [[8, "ScaleUp", "partitions"]],
    },
    {
      name: "as many partitions as maxReplicas: maxReplicas is the cap to name",
      steps: [[0, load({ lag: each(12, 2000) })]],
      want: [[12, "ScaleUp", "maxReplicas"]],
    },
    {
      name: "floored at minReplicas",
      scaling: { minReplicas: 3 },
      steps: [
        [0, idle],
        [5, idle],
      ],
      want: [
        [3, "ScaleUp", "minReplicas"],
        [3, "Steady", "minReplicas"],
      ],
    },
    {
      name: "scale-up goes straight to the target in one step",
      steps: [[0, load({ lag: each(12, 500) })]],
      want: [[6, "ScaleUp"]],
    },
    {
      name: "scale-down waits until the target has held for a whole window after the last step, then goes straight to it",
      steps: [
        [0, load({ lag: each(4, 1500) })],
        [60, load({ lag: each(4, 1000) })],
        [120, load({ lag: each(4, 500) })],
        [240, load({ lag: each(4, 750) })],
        [310, load({ lag: each(4, 250) })],
        [320, load({ lag: each(4, 250) })],
        [611, load({ lag: each(4, 250) })],
      ],
      // At 310 s the window after the step has passed, but 4, 2 and 3 were recommended within it; at 611 s only 1 was.
      want: [
        [6, "ScaleUp"],
        [6, "Stabilizing"],
        [6, "Stabilizing"],
        [6, "Stabilizing"],
        [6, "Stabilizing"],
        [6, "Stabilizing"],
        [1, "ScaleDown"],
      ],
    },
    {
      name: "scaleDownStabilization from the spec",
      scaling: { scaleDownStabilization: "30s" },
      steps: [
        [0, load({ lag: each(4, 1500) })],
        [29, load({ lag: each(4, 250) })],
        [30, load({ lag: each(4, 250) })],
      ],
      want: [
        [6, "ScaleUp"],
        [6, "Stabilizing"],
        [1, "ScaleDown"],
      ],
    },
    {
      name: "KEDA trap, no tolerance band: 2 → 1 is reached",
      current: 2,
      steps: [
        [0, load({ lag: each(4, 375) })],
        [301, load({ lag: each(4, 225) })],
      ],
      want: [
        [2, "Steady"],
        [1, "ScaleDown"],
      ],
    },
    {
      name: "KEDA trap, no tolerance band: 12 → 6 on 12 partitions; 11 is never chosen, one of them would read 2",
      current: 12,
      steps: [
        [0, load({ lag: each(12, 1000) })],
        [301, load({ lag: [...each(11, 1000), 0] })],
        [302, load({ lag: each(12, 500) })],
        [603, load({ lag: each(12, 500) })],
      ],
      want: [
        [12, "Steady"],
        [12, "Steady"],
        [12, "Stabilizing"],
        [6, "ScaleDown"],
      ],
    },
    {
      name: "KEDA trap, transaction markers: one record behind on partitions without input is drained",
      scaling: { lagPerReplica: 1 },
      steps: [[0, load({ lag: each(12, 1) })]],
      want: [[1, "Steady", "minReplicas"]],
    },
    {
      name: "one record behind on partitions with input is lag",
      scaling: { lagPerReplica: 1 },
      steps: [[0, load({ lag: each(12, 1), in: each(12, 0.5) })]],
      want: [[12, "ScaleUp"]],
    },
    {
      name: "one record behind before the input rate is known is lag: a lone record is never stranded",
      scaling: { lagPerReplica: 1 },
      steps: [[0, load({ lag: each(12, 1), in: "unknown" })]],
      want: [[12, "ScaleUp"]],
    },
    {
      name: "transaction markers do not keep a worker from zero, nor wake one",
      scaling: { minReplicas: 0, scaleToZeroAfter: "1m" },
      steps: [
        [0, load({ lag: each(4, 1) })],
        [60, load({ lag: each(4, 1) })],
        [90, load({ lag: each(4, 1) })],
      ],
      want: [
        [1, "Steady"],
        [0, "ScaleToZero"],
        [0, "Steady"],
      ],
    },
    {
      name: "KEDA trap, unknown reads: replicas kept, and a scale-in waits a full known window after them",
      current: 4,
      steps: [
        [0, load({ lag: each(4, 1000) })],
        [400, unknown],
        [401, load({ lag: each(4, 250) })],
        [701, load({ lag: each(4, 250) })],
      ],
      want: [
        [4, "Steady"],
        [4, "UnknownLag"],
        [4, "Stabilizing"],
        [1, "ScaleDown"],
      ],
    },
    {
      name: "the broker down (group and lag unknown): replicas kept, and a scale-in waits a full known window after",
      current: 4,
      steps: [
        [0, load({ lag: each(4, 1000) })],
        [400, load({ lag: "unknown", group: undefined })],
        [401, load({ lag: each(4, 250) })],
        [701, load({ lag: each(4, 250) })],
      ],
      want: [
        [4, "Steady"],
        [4, "UnknownGroup"],
        [4, "Stabilizing"],
        [1, "ScaleDown"],
      ],
    },
    {
      name: "lag unknown: scale up on the input rate alone, never down",
      learned: 100,
      current: 2,
      steps: [
        [0, load({ lag: "unknown", in: each(12, 50) })],
        [5, load({ lag: "unknown", in: each(12, 0) })],
      ],
      want: [
        [6, "ScaleUp"],
        [6, "UnknownLag", "minReplicas"],
      ],
    },
    {
      name: "input rate unknown once throughput is measured: no scale-in on lag alone",
      learned: 100,
      current: 6,
      steps: [[0, load({ lag: each(12, 100), in: "unknown" })]],
      want: [[6, "UnknownRate"]],
    },
    {
      name: "KEDA trap, rebalance noise: hold while the group is not stable with one member per replica",
      current: 2,
      steps: [
        [0, load({ lag: each(12, 5000), group: "PreparingRebalance" })],
        [5, load({ lag: each(12, 5000), members: 1 })],
        [10, load({ lag: each(12, 100) })],
      ],
      want: [
        [2, "HoldRebalance"],
        [2, "HoldRebalance"],
        [2, "Steady"],
      ],
    },
    {
      name: "after a step, hold until the group has settled on the new count",
      steps: [
        [0, load({ lag: each(12, 250) })],
        [5, load({ lag: each(12, 2000), members: 1 })],
        [10, load({ lag: each(12, 2000), group: "CompletingRebalance" })],
        [15, load({ lag: each(12, 250) })],
      ],
      want: [
        [3, "ScaleUp"],
        [3, "HoldRebalance"],
        [3, "HoldRebalance"],
        [3, "Steady"],
      ],
    },
    {
      name: "a group that could not be read: hold",
      current: 2,
      steps: [[0, load({ lag: each(12, 5000), group: undefined })]],
      want: [[2, "UnknownGroup"]],
    },
    {
      name: "a hot partition: only the replicas the other partitions can use",
      learned: 100,
      partitions: 8,
      // 60000 on one partition needs 1000/s, ten replicas' worth, that only one replica can read; the other
      // seven bring 350/s. The formula says 14, maxReplicas 12, partitions 8; what can run is 1 + 3.5.
      steps: [[0, load({ lag: [60000, ...each(7, 0)], in: [0, ...each(7, 50)] })]],
      want: [[5, "ScaleUp", "partitionSkew"]],
    },
    {
      name: "a hot partition and nothing else to do: no idle replicas",
      learned: 100,
      partitions: 4,
      steps: [[0, load({ lag: [60000, 0, 0, 0] })]],
      want: [[1, "Steady", "partitionSkew"]],
    },
    {
      name: "every partition hot: the partition count caps, not skew",
      learned: 100,
      partitions: 8,
      steps: [[0, load({ lag: each(8, 60000) })]],
      want: [[8, "ScaleUp", "partitions"]],
    },
    {
      name: "minReplicas 0: to zero after scaleToZeroAfter without input or lag, and awake on new records at once",
      scaling: { minReplicas: 0, scaleToZeroAfter: "2m" },
      steps: [
        [0, idle],
        [60, idle],
        [120, idle],
        [130, idle],
        [135, load({ lag: [5, 0, 0, 0], in: [1, 0, 0, 0] })],
      ],
      want: [
        [1, "Steady"],
        [1, "Steady"],
        [0, "ScaleToZero"],
        [0, "Steady"],
        [1, "WakeUp"],
      ],
    },
    {
      name: "input restarts the idle clock",
      scaling: { minReplicas: 0, scaleToZeroAfter: "2m" },
      steps: [
        [0, idle],
        [60, load({ lag: each(4, 0), in: [2, 0, 0, 0] })],
        [130, idle],
        [249, idle],
        [250, idle],
      ],
      want: [
        [1, "Steady"],
        [1, "Steady"],
        [1, "Steady"],
        [1, "Steady"],
        [0, "ScaleToZero"],
      ],
    },
    {
      name: "an unknown read restarts the idle clock",
      scaling: { minReplicas: 0, scaleToZeroAfter: "2m" },
      steps: [
        [0, idle],
        [60, unknown],
        [120, idle],
        [239, idle],
        [240, idle],
      ],
      want: [
        [1, "Steady"],
        [1, "UnknownLag"],
        [1, "Steady"],
        [1, "Steady"],
        [0, "ScaleToZero"],
      ],
    },
    {
      name: "without scaleToZeroAfter, idling as long as the stabilization window",
      scaling: { minReplicas: 0, scaleDownStabilization: "1m" },
      steps: [
        [0, idle],
        [59, idle],
        [60, idle],
      ],
      want: [
        [1, "Steady"],
        [1, "Steady"],
        [0, "ScaleToZero"],
      ],
    },
    {
      name: "at zero: woken straight to what the backlog needs",
      scaling: { minReplicas: 0 },
      current: 0,
      steps: [[0, load({ lag: each(4, 1500) })]],
      want: [[6, "WakeUp"]],
    },
    {
      name: "at zero: woken by records arriving while the lag cannot be read",
      scaling: { minReplicas: 0 },
      current: 0,
      steps: [[0, load({ lag: "unknown", in: [3, 0, 0, 0] })]],
      want: [[1, "WakeUp"]],
    },
    {
      name: "at zero with nothing read: stay",
      scaling: { minReplicas: 0 },
      current: 0,
      steps: [[0, unknown]],
      want: [[0, "UnknownLag"]],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const ds = drive(c, c.steps);
      assert.deepEqual(ds.map(got), c.want);
      if (c.rates)
        assert.deepEqual(
          ds.map((d) => d.perReplicaRate),
          c.rates,
        );
    });
  }

  test("a step records its time; holding and staying do not", () => {
    const ds = drive({}, [
      [0, load({ lag: each(12, 250) })],
      [5, load({ lag: each(12, 250), group: "PreparingRebalance" })],
      [10, load({ lag: each(12, 250) })],
    ]);
    assert.deepEqual(
      ds.map((d) => d.lastScaleTime),
      [at(0), at(0), at(0)],
    );
  });

  test("the decision reports what it saw", () => {
    const [d] = drive({ current: 2 }, [[0, load({ lag: each(12, 1000), in: each(12, 50), consume: 400, saturated: true })]]);
    assert.equal(d?.lag, 12000);
    assert.equal(d?.inRate, 600);
    assert.equal(d?.consumeRate, 400);
    assert.equal(d?.current, 2);
  });

  test("modes: fixed runs spec.replicas, external leaves the scale to others", () => {
    const inputs = { rates: load({ lag: each(12, 5000) })(3), current: 3, maxParallelism: 12 };
    const cases: [Parameters<typeof decide>[0], number | undefined, Reason][] = [
      [{ scaling: { mode: "fixed" }, replicas: 5 }, 5, "Fixed"],
      [{ replicas: 2 }, 2, "Fixed"],
      [{}, 1, "Fixed"],
      [{ scaling: { mode: "external" }, replicas: 5 }, undefined, "External"],
    ];
    for (const [spec, desired, reason] of cases) {
      const d = decide(spec, inputs, undefined, T0);
      assert.deepEqual([d.desired, d.reason], [desired, reason], JSON.stringify(spec));
    }
  });
});

const offsets = (o: Record<string, number | undefined>) => new Map(Object.entries(o).map(([p, v]) => [p, v === undefined ? undefined : BigInt(v)]));
const ends = (o: Record<string, number>) => new Map(Object.entries(o).map(([p, v]) => [p, BigInt(v)]));

function sample(
  seconds: number,
  end: Record<string, number> | undefined,
  committed: Record<string, number | undefined> | undefined,
  members = 1,
): ScalingSample {
  return { at: at(seconds), endOffsets: end && ends(end), committed: committed && offsets(committed), groupState: "Stable", members };
}

describe("rates from successive samples", () => {
  const [p0, p1] = [key(0), key(1)];
  const before = sample(0, { [p0]: 100, [p1]: 200 }, { [p0]: 50, [p1]: 200 });
  const cases: {
    name: string;
    prev: ScalingSample | undefined;
    cur: ScalingSample;
    start?: Record<string, number>;
    want: Pick<Rates, "lag" | "inRate" | "consumeRate">;
  }[] = [
    {
      name: "in, consumed and behind over ten seconds",
      prev: before,
      cur: sample(10, { [p0]: 300, [p1]: 250 }, { [p0]: 150, [p1]: 240 }),
      want: { lag: 160, inRate: 25, consumeRate: 14 },
    },
    {
      name: "no previous sample: lag only",
      prev: undefined,
      cur: sample(10, { [p0]: 300, [p1]: 250 }, { [p0]: 150, [p1]: 240 }),
      want: { lag: 160, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "end offsets unread (a broker outage): lag and input unknown, not 0",
      prev: before,
      cur: sample(10, undefined, { [p0]: 150, [p1]: 240 }),
      want: { lag: undefined, inRate: undefined, consumeRate: 14 },
    },
    {
      name: "committed offsets unread: lag and consumption unknown",
      prev: before,
      cur: sample(10, { [p0]: 300, [p1]: 250 }, undefined),
      want: { lag: undefined, inRate: 25, consumeRate: undefined },
    },
    {
      name: "nothing read",
      prev: before,
      cur: sample(10, undefined, undefined),
      want: { lag: undefined, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "the previous read failed: no rates",
      prev: sample(0, undefined, undefined),
      cur: sample(10, { [p0]: 300, [p1]: 250 }, { [p0]: 150, [p1]: 240 }),
      want: { lag: 160, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "two samples at one instant: no rates",
      prev: before,
      cur: sample(0, { [p0]: 300, [p1]: 250 }, { [p0]: 150, [p1]: 240 }),
      want: { lag: 160, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "a partition added between samples counts its records from offset 0 and is read from its start",
      prev: sample(0, { [p0]: 100 }, { [p0]: 100 }),
      cur: sample(10, { [p0]: 200, [p1]: 30 }, { [p0]: 150, [p1]: undefined }),
      start: { [p1]: 0 },
      want: { lag: 80, inRate: 13, consumeRate: 5 },
    },
    {
      name: "a first commit on an added partition counts from where the group began",
      prev: sample(0, { [p0]: 100 }, { [p0]: 100 }),
      cur: sample(10, { [p0]: 200, [p1]: 30 }, { [p0]: 150, [p1]: 20 }),
      start: { [p1]: 0 },
      want: { lag: 60, inRate: 13, consumeRate: 7 },
    },
    {
      name: "offsets that went back (topic re-created, group reset) are not negative rates",
      prev: sample(0, { [p0]: 1000 }, { [p0]: 900 }),
      cur: sample(10, { [p0]: 10 }, { [p0]: 5 }),
      want: { lag: 5, inRate: 0, consumeRate: 0 },
    },
    {
      name: "a commit past the read-committed end is no lag, not negative lag",
      prev: undefined,
      cur: sample(0, { [p0]: 100 }, { [p0]: 101 }),
      want: { lag: 0, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "KEDA trap, no committed offset under startFrom earliest: the whole retained log",
      prev: undefined,
      cur: sample(0, { [p0]: 5000, [p1]: 5000 }, { [p0]: undefined, [p1]: undefined }),
      start: { [p0]: 0, [p1]: 1000 },
      want: { lag: 9000, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "KEDA trap, no committed offset under startFrom latest: no lag, not 1",
      prev: undefined,
      cur: sample(0, { [p0]: 5000, [p1]: 5000 }, { [p0]: undefined, [p1]: undefined }),
      start: { [p0]: 5000, [p1]: 5000 },
      want: { lag: 0, inRate: undefined, consumeRate: undefined },
    },
    {
      name: "no committed offset and no start offset given: the full log from 0",
      prev: undefined,
      cur: sample(0, { [p0]: 5000, [p1]: 5000 }, { [p0]: undefined, [p1]: undefined }),
      want: { lag: 10000, inRate: undefined, consumeRate: undefined },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = deriveRates(c.prev, c.cur, c.start && ends(c.start));
      assert.deepEqual({ lag: r.lag, inRate: r.inRate, consumeRate: r.consumeRate }, c.want);
    });
  }

  // Every partition's end moves 100 records a second, and its committed offset follows `lag` behind.
  const behind = (seconds: number, lag: number[], members = 2, groupState = "Stable", withAssignment?: number): ScalingSample => {
    const end = 10_000 + seconds * 100;
    return {
      at: at(seconds),
      endOffsets: new Map(lag.map((_, i) => [key(i), BigInt(end)])),
      committed: new Map(lag.map((l, i) => [key(i), BigInt(end - l)])),
      groupState,
      members,
      ...(withAssignment === undefined ? {} : { membersWithAssignment: withAssignment }),
    };
  };
  const saturation: [string, ScalingSample, ScalingSample, boolean][] = [
    ["every member has a backlog throughout", behind(0, each(4, 500)), behind(10, each(4, 500)), true],
    ["a rebalance at one end", behind(0, each(4, 500)), behind(10, each(4, 500), 2, "PreparingRebalance"), false],
    ["the membership changed", behind(0, each(4, 500), 1), behind(10, each(4, 500)), false],
    ["a member holds no partition", behind(0, each(4, 500)), behind(10, each(4, 500), 2, "Stable", 1), false],
    ["fewer partitions behind than members", behind(0, [500, 0, 0, 0]), behind(10, [500, 0, 0, 0]), false],
    ["drained by the end of the interval", behind(0, each(4, 500)), behind(10, each(4, 0)), false],
    ["only transaction markers behind", behind(0, each(4, 1)), behind(10, each(4, 1)), false],
  ];
  for (const [name, prev, cur, want] of saturation) test(`saturated: ${name}`, () => assert.equal(deriveRates(prev, cur).saturated, want));

  test("saturated: a windowed pipeline's own watermark markers are not a backlog; records beyond them are", () => {
    // One worker, 2 source partitions caught up and 4 repartition partitions each with a few markers unread.
    const windowed = (seconds: number, internalLag: number): ScalingSample => {
      const lag = new Map([
        ...[0, 1].map((i) => [`orders:${i}`, 0] as const),
        ...[0, 1, 2, 3].map((i) => [`app-by-key-repartition:${i}`, internalLag] as const),
      ]);
      const end = 10_000 + seconds * 10;
      return {
        at: at(seconds),
        endOffsets: new Map([...lag.keys()].map((k) => [k, BigInt(end)])),
        committed: new Map([...lag].map(([k, l]) => [k, BigInt(end - l)])),
        groupState: "Stable",
        members: 1,
      };
    };
    const internal = new Set(["app-by-key-repartition"]);
    assert.equal(deriveRates(windowed(0, 8), windowed(10, 8), new Map(), internal).saturated, false, "markers only");
    assert.equal(deriveRates(windowed(0, 8), windowed(10, 8)).saturated, true, "without the internal topics named, they looked like a backlog");
    assert.equal(deriveRates(windowed(0, 500), windowed(10, 500), new Map(), internal).saturated, true, "records behind on the repartition topic");
  });

  test("from samples to a decision: a saturated interval teaches the per-replica rate", () => {
    const r = deriveRates(behind(0, each(4, 6000)), behind(10, each(4, 6000)));
    // The end and the commits both moved 1000 per partition in 10 s: 400/s in and 400/s consumed by 2 members.
    assert.deepEqual([r.inRate, r.consumeRate, r.saturated], [400, 400, true]);
    const d = decide({ scaling: { mode: "lag" } }, { rates: r, current: 2, maxParallelism: 4 }, undefined, at(10));
    // (400 + 24000 / 60) / 200 = 4.
    assert.deepEqual([d.perReplicaRate, d.desired, d.reason], [200, 4, "ScaleUp"]);
  });

  test("from samples to a decision: a never-committed group under latest is not woken", () => {
    const r = deriveRates(undefined, sample(0, { [p0]: 5000 }, { [p0]: undefined }, 0), ends({ [p0]: 5000 }));
    const d = decide({ scaling: { mode: "lag", minReplicas: 0 } }, { rates: r, current: 0, maxParallelism: 2 }, undefined, at(0));
    assert.deepEqual([d.desired, d.reason], [0, "Steady"]);
  });

  test("from samples to a decision: a broker outage is unknown, no scale-in", () => {
    const r = deriveRates(before, { ...sample(10, undefined, undefined), members: 3 });
    const d = decide({ scaling: { mode: "lag" } }, { rates: r, current: 3, maxParallelism: 2 }, undefined, at(10));
    assert.deepEqual([d.desired, d.reason], [3, "UnknownLag"]);
  });
});

describe("aligned: workers that share the partitions evenly", () => {
  const cases: [raw: number, partitions: number, want: number][] = [
    [3, 4, 4], // 3 would leave one worker with 2 of the 4 partitions
    [2, 4, 2],
    [5, 12, 6],
    [6, 12, 6],
    [7, 12, 12],
    [11, 12, 12],
    [1, 12, 1],
    [12, 12, 12],
    [20, 12, 20], // above the partitions: bound() caps it and says so
  ];
  for (const [raw, partitions, want] of cases)
    test(`a need of ${raw} on ${partitions} partitions: ${want} workers`, () => assert.equal(aligned(raw, partitions), want));
});

describe("a windowed pipeline: the watermark markers on its repartition topic are not input", () => {
  const source = (i: number) => `orders:${i}`;
  const internal = (i: number) => `ns.p-by-user-repartition:${i}`;
  const internalTopics = new Set(["ns.p-by-user-repartition"]);
  /** 6 source and 6 repartition partitions: source lag and input as given; markers flowing while workers run. */
  const windowed =
    (o: { sourceLag?: number; sourceIn?: number; internalLag?: number; markers?: boolean }) =>
    (current: number): Rates => {
      const lag = new Map<string, number>();
      const inRate = new Map<string, number>();
      for (let i = 0; i < 6; i++) {
        lag.set(source(i), o.sourceLag ?? 0);
        inRate.set(source(i), o.sourceIn ?? 0);
        // Each of 6 source partitions' workers writes a marker every 200 ms into every repartition partition.
        lag.set(internal(i), current > 0 || o.internalLag !== undefined ? (o.internalLag ?? 4) : 0);
        inRate.set(internal(i), current > 0 && o.markers !== false ? 30 : 0);
      }
      return {
        at: 0,
        partitionLag: lag,
        partitionInRate: inRate,
        lag: total(lag),
        inRate: total(inRate),
        consumeRate: undefined,
        saturated: false,
        groupState: current > 0 ? "Stable" : "Empty",
        members: current,
      };
    };
  const run = (steps: [number, (current: number) => Rates][], current = 1) => {
    let state: PolicyState | undefined;
    let replicas = current;
    const out: Want[] = [];
    for (const [seconds, observe] of steps) {
      const d = decide(
        { scaling: { mode: "lag", minReplicas: 0, scaleToZeroAfter: "30s" } },
        { rates: observe(replicas), current: replicas, maxParallelism: 6, internalTopics },
        state,
        at(seconds),
      );
      out.push(got(d));
      state = d.state;
      replicas = d.desired ?? replicas;
    }
    return out;
  };

  test("no source input and only markers behind: to zero after scaleToZeroAfter, and no wake-up from the markers left", () => {
    assert.deepEqual(
      run([
        [0, windowed({})],
        [29, windowed({})],
        [31, windowed({})],
        [40, windowed({ internalLag: 3 })],
      ]),
      [
        [1, "Steady"],
        [1, "Steady"],
        [0, "ScaleToZero"],
        [0, "Steady"],
      ],
    );
  });

  test("source records wake it; a repartition backlog beyond the markers' keeps it up", () => {
    assert.deepEqual(run([[0, windowed({ sourceLag: 100 })]], 0), [[1, "WakeUp"]]);
    // 200 records behind on each repartition partition (above the markers' slack of 60): work, never asleep.
    const busy = run([
      [0, windowed({ internalLag: 200 })],
      [31, windowed({ internalLag: 200 })],
      [62, windowed({ internalLag: 200 })],
    ]);
    assert.ok(
      busy.every(([desired, reason]) => (desired ?? 0) >= 1 && reason !== "ScaleToZero"),
      JSON.stringify(busy),
    );
  });

  test("without internal topics named, the markers count as input, as before", () => {
    const rates = windowed({})(1);
    assert.equal(quiet(rates, new Set()), false);
    assert.equal(quiet(rates, internalTopics), true);
  });
});
