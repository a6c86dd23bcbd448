import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { KubernetesObject, V1StatefulSet } from "@kubernetes/client-node";
import type { PipelineCondition, ScalingSpec, StreamPipeline, StreamPipelineStatus } from "./api.ts";
import { defaultOperatorConfig } from "./children.ts";
import { CredentialsError } from "./kafka-client.ts";
import { jsonLogger } from "./log.ts";
import { type OperatorMetrics, operatorMetrics } from "./metrics.ts";
import {
  CLEANUP_FINALIZER,
  type Context,
  conditionMessage,
  FINALIZE_KAFKA_DEADLINE_MS,
  MAX_CONDITION_MESSAGE,
  pipelineMeta,
  reconcile,
  setCondition,
  statusFor,
} from "./reconcile.ts";
import { Autoscaler, type LagPoller } from "./scaling/autoscaler.ts";
import { POLL_INTERVAL_MS, scalingStatusOf } from "./scaling/decision-record.ts";
import type { LagReading, LagTarget } from "./scaling/lag-reader.ts";
import { deriveRates, type Rates, type ScalingSample } from "./scaling/policy.ts";

const t0 = "2026-01-01T00:00:00.000Z";
const t1 = "2026-01-01T00:05:00.000Z";

function pipeline(replicas: number, conditions?: PipelineCondition[]): StreamPipeline {
  return {
    metadata: { name: "p", namespace: "ns", generation: 2 },
    spec: { kafka: { bootstrapServers: ["k:1"] }, source: { topics: ["a"] }, sink: { topic: "b" }, replicas },
    status: conditions ? { conditions } : undefined,
  };
}

function sts(replicas: number, ready: number, observed = 1, generation = 1, desired = replicas): V1StatefulSet {
  return {
    metadata: { generation },
    spec: { replicas: desired, selector: {}, serviceName: "", template: {} },
    status: { replicas, readyReplicas: ready, observedGeneration: observed },
  };
}

describe("pipeline status", () => {
  const cases: { name: string; want: number; sts: V1StatefulSet; ready: string; reason: string }[] = [
    { name: "all workers ready", want: 2, sts: sts(2, 2), ready: "True", reason: "WorkersReady" },
    { name: "one of two ready", want: 2, sts: sts(2, 1), ready: "False", reason: "WorkersStarting" },
    { name: "StatefulSet not yet observed its new generation", want: 2, sts: sts(2, 2, 1, 2), ready: "False", reason: "WorkersStarting" },
    { name: "scaled to zero", want: 0, sts: sts(0, 0), ready: "True", reason: "ScaledToZero" },
    { name: "still scaling down", want: 1, sts: sts(2, 2, 1, 1, 1), ready: "False", reason: "WorkersStarting" },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const s = statusFor(pipeline(c.want), c.sts, new Date(t0));
      const ready = s.conditions?.find((x) => x.type === "Ready");
      assert.equal(ready?.status, c.ready);
      assert.equal(ready?.reason, c.reason);
      assert.equal(ready?.observedGeneration, 2);
      assert.deepEqual(
        s.conditions?.map((x) => x.type),
        ["Ready", "Progressing", "Degraded"],
      );
      assert.equal(s.observedGeneration, 2);
      assert.equal(s.consumerGroup, "ns.p");
    });
  }

  test("a condition keeps its transition time while its status holds, and takes a new one when it flips", () => {
    const first = setCondition(undefined, { type: "Ready", status: "False", reason: "A", message: "", lastTransitionTime: t0 });
    const same = setCondition(first, { type: "Ready", status: "False", reason: "B", message: "m", lastTransitionTime: t1 });
    assert.equal(same.length, 1);
    assert.equal(same[0]?.lastTransitionTime, t0);
    assert.equal(same[0]?.reason, "B");
    const flipped = setCondition(same, { type: "Ready", status: "True", reason: "C", message: "", lastTransitionTime: t1 });
    assert.equal(flipped[0]?.lastTransitionTime, t1);
  });

  test("condition messages are well-formed and bounded, whatever an error quotes", () => {
    const loneSurrogate = "Unexpected character: \ud83d";
    assert.equal(conditionMessage(loneSurrogate).isWellFormed(), true);
    assert.equal(conditionMessage("ok 🙂"), "ok 🙂");
    const long = conditionMessage("x".repeat(MAX_CONDITION_MESSAGE * 2));
    assert.equal(long.length, MAX_CONDITION_MESSAGE);
    assert.ok(long.endsWith("…"));
  });
});

// The lag autoscaler's wiring, against a fake cluster and a scripted broker: what reconcile does with each
// decision, with the clock in the test's hands.
interface World {
  /** end and committed offset per partition of the source topic */
  end: number[];
  committed: number[];
  group: string;
  members: number;
  /** every read fails */
  down?: boolean;
}

class ScriptedReader implements LagPoller {
  polls = 0;
  private prev: ScalingSample | undefined;
  private prevRates: Rates | undefined;
  private readonly world: () => World;
  private readonly clock: () => number;

  constructor(world: () => World, clock: () => number) {
    this.world = world;
    this.clock = clock;
  }

  async poll(_key: string, target: LagTarget): Promise<LagReading> {
    this.polls++;
    const w = this.world();
    const offsets = (xs: number[]) => new Map(xs.map((x, i) => [`${target.topics[0]}:${i}`, BigInt(x)]));
    const sample: ScalingSample = w.down
      ? { at: this.clock(), endOffsets: undefined, committed: undefined, groupState: undefined, members: undefined }
      : { at: this.clock(), endOffsets: offsets(w.end), committed: offsets(w.committed), groupState: w.group, members: w.members };
    const rates = deriveRates(this.prev, sample);
    const previousRates = this.prevRates;
    if (!w.down) {
      this.prev = sample;
      this.prevRates = rates;
    }
    return {
      sample,
      startOffsets: new Map(),
      errors: w.down ? [`describing group ${target.group}: connection refused`] : [],
      rates,
      ...(previousRates ? { previousRates } : {}),
    };
  }

  forget(): void {
    this.prev = undefined;
    this.prevRates = undefined;
  }

  async close(): Promise<void> {}
}

interface Recorded {
  statefulSets: V1StatefulSet[];
  statuses: StreamPipelineStatus[];
  events: { reason: string; message: string; dedupeKey?: string }[];
  kinds: string[];
}

function fakeCluster(world: () => World, clock: { ms: number }, autoscaler?: Autoscaler) {
  const reader = new ScriptedReader(world, () => clock.ms);
  const recorded: Recorded = { statefulSets: [], statuses: [], events: [], kinds: [] };
  const metrics = operatorMetrics();
  const ctx: Context = {
    config: defaultOperatorConfig,
    log: jsonLogger({}, () => undefined),
    now: () => new Date(clock.ms),
    kafka: {
      partitionCounts: async (_conn, topics) => new Map(topics.map((t) => [t, world().end.length])),
      ensureTopics: () => Promise.reject(new Error("not in this test")),
      topicIds: () => Promise.reject(new Error("not in this test")),
      deleteTopics: () => Promise.reject(new Error("not in this test")),
      growTopic: () => Promise.reject(new Error("not in this test")),
      deleteGroup: () => Promise.reject(new Error("not in this test")),
      close: async () => {},
    },
    connectionFor: async (p) => ({ bootstrapServers: p.spec.kafka.bootstrapServers }),
    secretsVersion: async () => "",
    pipelines: () => [],
    apply: async <T extends KubernetesObject>(obj: T) => {
      recorded.kinds.push(obj.kind ?? "");
      if (obj.kind !== "StatefulSet") return obj;
      const sts = obj as V1StatefulSet;
      const n = sts.spec?.replicas ?? 0;
      recorded.statefulSets.push(sts);
      const stored: V1StatefulSet = {
        ...sts,
        metadata: { ...sts.metadata, generation: 1 },
        status: { replicas: n, readyReplicas: n, updatedReplicas: n, observedGeneration: 1 },
      };
      return stored as unknown as T;
    },
    applyStatus: async (_p, status) => {
      recorded.statuses.push(structuredClone(status));
    },
    setFinalizers: () => Promise.reject(new Error("not in this test")),
    deleteStatefulSet: () => Promise.reject(new Error("not in this test")),
    countPods: async () => 0,
    listStateVolumes: async () => [],
    markStateVolume: () => Promise.reject(new Error("not in this test")),
    deleteStateVolume: () => Promise.reject(new Error("not in this test")),
    resizeStateVolume: () => Promise.reject(new Error("not in this test")),
    readStatefulSet: async () => undefined,
    orphanStatefulSet: () => Promise.reject(new Error("not in this test")),
    event: async (_p, _type, reason, message, dedupeKey) => {
      recorded.events.push({ reason, message, dedupeKey });
    },
    autoscaler: autoscaler ?? new Autoscaler(reader),
    metrics,
  };
  return { ctx, reader, recorded, metrics };
}

function lagPipeline(scaling: ScalingSpec, over: Partial<StreamPipeline["spec"]> = {}): StreamPipeline {
  return {
    metadata: { name: "burst", namespace: "ns", uid: "u-1", generation: 1, finalizers: [CLEANUP_FINALIZER] },
    spec: {
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["src"] },
      steps: [
        { name: "keep", filter: "true" },
        { name: "shape", map: "value" },
      ],
      sink: { topic: "out" },
      scaling,
      ...over,
    },
    status: { replicas: 1 },
  };
}

const lastOf = <T>(xs: T[]): T => xs.at(-1) as T;
const metricValue = async (m: OperatorMetrics, name: keyof OperatorMetrics & `scaling${string}`) =>
  (await (m[name] as { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }).get()).values;

describe("lag mode", () => {
  const scaling: ScalingSpec = { mode: "lag", minReplicas: 1, maxReplicas: 4, targetCatchUp: "20s", scaleDownStabilization: "20s" };
  const T = Date.parse("2026-01-01T00:00:00.000Z");

  test("a burst scales the StatefulSet in one step, records why, and says so once; the spec is never written", async () => {
    const clock = { ms: T };
    let world: World = { end: [0, 0, 0, 0], committed: [0, 0, 0, 0], group: "Stable", members: 1 };
    const { ctx, reader, recorded, metrics } = fakeCluster(() => world, clock);
    let p = lagPipeline(scaling);
    const spec = structuredClone(p.spec);
    const step = async (seconds: number, next?: World, pipeline = p) => {
      clock.ms = T + seconds * 1000;
      if (next) world = next;
      const action = await reconcile(pipeline, ctx);
      p = { ...p, status: lastOf(recorded.statuses) };
      return action;
    };

    assert.deepEqual(await step(0), { requeueAfterMs: POLL_INTERVAL_MS });
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 1);
    assert.equal(p.status?.scaling?.reason, "Steady");
    assert.equal(p.status?.scaling?.lag, 0);

    await step(3, { ...world, end: [37_500, 37_500, 37_500, 37_500] });
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 4, "straight to the target");
    const s = p.status?.scaling;
    assert.equal(s?.desired, 4);
    assert.equal(s?.current, 1);
    assert.equal(s?.reason, "ScaleUp");
    assert.equal(s?.cappedBy, "maxReplicas");
    assert.equal(s?.lag, 150_000);
    assert.equal(p.status?.lag, 150_000);
    assert.equal(s?.lastScaleTime, new Date(T + 3000).toISOString());
    assert.equal(s?.sampleTime, new Date(T + 3000).toISOString());
    assert.deepEqual(
      recorded.events.map((e) => e.reason),
      ["ScaledUp"],
    );
    assert.match(recorded.events[0]?.message ?? "", /^Scaled up from 1 to 4 workers \(ScaleUp\): lag 150,000 records/);
    assert.deepEqual(p.spec, spec, "the StreamPipeline's spec is untouched");
    assert.ok(!recorded.kinds.includes("StreamPipeline"), "nothing but children is applied");
    assert.deepEqual(
      (await metricValue(metrics, "scalingDesired")).map((v) => v.value),
      [4],
    );
    assert.deepEqual(
      (await metricValue(metrics, "scalingLag")).map((v) => v.value),
      [150_000],
    );

    // The status write and the StatefulSet's pods bring reconciles within the interval: they read nothing
    // and change nothing, even from an informer cache that has not yet seen the write.
    const before = lastOf(recorded.statuses);
    const stale = { ...p, status: { replicas: 1 } };
    assert.deepEqual(await step(3.5, undefined, stale), { requeueAfterMs: POLL_INTERVAL_MS - 500 });
    assert.equal(reader.polls, 2);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 4);
    assert.deepEqual(lastOf(recorded.statuses).scaling, before.scaling);
    assert.equal(recorded.events.length, 1);

    // The new workers join: hold through the rebalance, then drain at 2,000/s each.
    await step(6, { ...world, group: "PreparingRebalance" });
    assert.equal(p.status?.scaling?.reason, "HoldRebalance");
    await step(8.5, { ...world, group: "Stable", members: 4, committed: [2000, 2000, 2000, 2000] });
    await step(11, { ...world, committed: [7000, 7000, 7000, 7000] });
    assert.equal(p.status?.scaling?.perReplicaRate, 2000, "learned from an interval in which all four were busy");
    for (let i = 0; i < 4; i++) await step(13.5 + 2.5 * i, { ...world, committed: world.committed.map((c) => Math.min(37_500, c + 5000)) });
    for (let t = 23.5; t < 60 && lastOf(recorded.statefulSets).spec?.replicas === 4; t += 2.5)
      await step(t, { ...world, committed: [37_500, 37_500, 37_500, 37_500] });
    const down = p.status?.scaling;
    assert.equal(down?.reason, "ScaleDown");
    assert.ok(Date.parse(down?.sampleTime ?? "") - (T + 3000) >= 20_000, "not before the stabilization window is over");
    assert.ok((down?.state.recommendations.length ?? 0) <= 5, "the window's recommendations, compacted");
    assert.deepEqual(
      recorded.events.map((e) => e.reason),
      ["ScaledUp", "ScaledDown"],
    );
    assert.equal(new Set(recorded.events.map((e) => e.dedupeKey)).size, 2, "each decision is its own event");
    assert.deepEqual(p.spec, spec);
  });

  test("unknown lag never scales in, and is absent from the status and the metrics rather than 0", async () => {
    const clock = { ms: T };
    // A backlog that needs all four workers by lag / lagPerReplica, then an outage while it would read idle.
    let world: World = { end: [1000, 1000, 1000, 1000], committed: [0, 0, 0, 0], group: "Stable", members: 4 };
    const { ctx, recorded, metrics } = fakeCluster(() => world, clock);
    let p = lagPipeline(scaling, {});
    p = { ...p, status: { replicas: 4 } };
    for (let t = 0; t <= 60; t += 2.5) {
      clock.ms = T + t * 1000;
      if (t === 30) world = { ...world, committed: world.end, down: true };
      if (t < 30) assert.equal(p.status?.scaling?.reason ?? "Steady", "Steady");
      await reconcile(p, ctx);
      p = { ...p, status: lastOf(recorded.statuses) };
      if (t >= 30) {
        assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 4, `no scale-in at ${t}s on an unknown read`);
        assert.equal(p.status?.scaling?.reason, "UnknownGroup");
        assert.equal(p.status?.scaling?.lag, undefined);
        assert.equal(p.status?.lag, undefined);
        assert.deepEqual(p.status?.scaling?.errors, ["describing group ns.burst: connection refused"]);
        assert.deepEqual(await metricValue(metrics, "scalingLag"), []);
      }
    }
    assert.deepEqual(recorded.events, []);
  });

  test("a restarted operator goes on from the state in status: the learned rate and the window's recommendations", async () => {
    const clock = { ms: T + 100_000 };
    const world: World = { end: [15_000, 15_000, 15_000, 15_000], committed: [0, 0, 0, 0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    const recorded1 = scalingStatusOf(
      {
        desired: 1,
        current: 1,
        reason: "Steady",
        perReplicaRate: 2000,
        lastScaleTime: T,
        state: { since: T, perReplicaRate: 2000, history: [], lastScaleTime: T },
      },
      { sampleAt: T + 90_000, errors: [] },
    );
    await reconcile({ ...lagPipeline(scaling), status: { replicas: 1, scaling: recorded1 } }, ctx);
    // 60,000 behind at 2,000/s per worker within 20 s: 2, where lag / lagPerReplica would say 60 (capped at 4).
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 2);

    const clock2 = { ms: T + 200_000 };
    const idle: World = { end: [0, 0, 0, 0], committed: [0, 0, 0, 0], group: "Stable", members: 4 };
    const second = fakeCluster(() => idle, clock2);
    const recorded2 = scalingStatusOf(
      {
        desired: 4,
        current: 4,
        reason: "Stabilizing",
        lastScaleTime: T,
        state: { since: T, history: [{ at: T + 195_000, desired: 3 }], lastScaleTime: T },
      },
      { sampleAt: T + 197_500, errors: [] },
    );
    await reconcile({ ...lagPipeline(scaling), status: { replicas: 4, scaling: recorded2 } }, second.ctx);
    // Idle, the target is 1; without the window restored from status it would go there at once.
    assert.equal(lastOf(second.recorded.statefulSets).spec?.replicas, 4, "held: the restored window still holds a recommendation of 3");
    assert.equal(lastOf(second.recorded.statuses).scaling?.reason, "Stabilizing");
  });

  test("while suspended, nothing is read or decided: the workers stop and come back to the replicas last decided", async () => {
    const clock = { ms: T };
    const world: World = { end: [9, 9, 9, 9], committed: [0, 0, 0, 0], group: "Empty", members: 0 };
    const { ctx, reader, recorded } = fakeCluster(() => world, clock);
    const last = scalingStatusOf({ desired: 3, current: 3, reason: "Steady", state: { since: T - 60_000, history: [] } }, { sampleAt: T - 60_000, errors: [] });
    const p = { ...lagPipeline(scaling, { suspend: true }), status: { replicas: 3, scaling: last } };
    assert.deepEqual(await reconcile(p, ctx), { done: true });
    assert.equal(reader.polls, 0);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 0);
    assert.deepEqual(lastOf(recorded.statuses).scaling, last);
    assert.deepEqual(recorded.events, []);

    await reconcile({ ...p, spec: { ...p.spec, suspend: false } }, ctx);
    assert.equal(reader.polls, 1);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 3, "held while the group has no members yet");
    assert.equal(lastOf(recorded.statuses).scaling?.reason, "HoldRebalance");
  });

  for (const mode of ["fixed", "external"] as const) {
    test(`${mode} mode runs spec.replicas, as the scale subresource writes it, and reads no lag`, async () => {
      const clock = { ms: T };
      const world: World = { end: [9_000_000], committed: [0], group: "Stable", members: 1 };
      const { ctx, reader, recorded } = fakeCluster(() => world, clock);
      const p = lagPipeline({ ...scaling, mode }, { replicas: 3 });
      assert.deepEqual(await reconcile(p, ctx), { done: true });
      assert.equal(reader.polls, 0);
      assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 3);
      assert.equal(lastOf(recorded.statuses).scaling, undefined);
      assert.equal(lastOf(recorded.statuses).lag, undefined);
      assert.deepEqual(recorded.events, []);
      assert.deepEqual(lastOf(recorded.statuses).sources, [{ topic: "src", partitions: 1, initialPartitions: 1 }], "the first count on record");
    });
  }

  test("out of lag mode, a stateless pipeline whose source count fails runs its workers, says Degraded, and is retried with backoff", async () => {
    const clock = { ms: T };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    ctx.kafka.partitionCounts = () => Promise.reject(new Error("SASL authentication failed"));
    const p = lagPipeline({ mode: "fixed" }, { replicas: 1 });
    await assert.rejects(reconcile(p, ctx), (err: Error) => err.name === "KafkaCallError" && /SASL authentication failed/.test(err.message));
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 1);
    const status = lastOf(recorded.statuses);
    assert.equal(status.sources, undefined);
    const degraded = status.conditions?.find((c) => c.type === "Degraded");
    assert.deepEqual([degraded?.status, degraded?.reason], ["True", "KafkaUnavailable"]);
    assert.match(degraded?.message ?? "", /reading source partitions: SASL authentication failed/);
    assert.deepEqual(
      recorded.events.map((e) => e.reason),
      ["KafkaUnavailable"],
    );
  });

  test("leaving lag mode drops the record, the memory and the metrics; spec.replicas holds again", async () => {
    const clock = { ms: T };
    const world: World = { end: [20_000, 20_000, 20_000, 20_000], committed: [0, 0, 0, 0], group: "Stable", members: 1 };
    const { ctx, recorded, metrics } = fakeCluster(() => world, clock);
    const p = lagPipeline(scaling, { replicas: 2 });
    await reconcile(p, ctx);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 4);
    assert.equal((await metricValue(metrics, "scalingDecisions")).length, 1);
    clock.ms += 500;
    await reconcile({ ...p, spec: { ...p.spec, scaling: { ...scaling, mode: "fixed" } }, status: lastOf(recorded.statuses) }, ctx);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 2);
    assert.equal(lastOf(recorded.statuses).scaling, undefined);
    assert.equal(ctx.autoscaler.last("ns/burst", "u-1"), undefined);
    for (const name of ["scalingDesired", "scalingCurrent", "scalingLag", "scalingDecisions"] as const) assert.deepEqual(await metricValue(metrics, name), []);
  });

  test("autoGrow: source partitions that cap the target are grown first, and the workers follow in the same step", async () => {
    const clock = { ms: T };
    let world: World = { end: [5000, 5000], committed: [0, 0], group: "Stable", members: 2 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    const grown: [string, number][] = [];
    ctx.kafka.growTopic = async (_conn, topic, count) => {
      grown.push([topic, count]);
      world = {
        ...world,
        end: [...world.end, ...Array<number>(count - world.end.length).fill(0)],
        committed: [...world.committed, ...Array<number>(count - world.committed.length).fill(0)],
      };
    };
    const configs: string[] = [];
    const apply = ctx.apply;
    ctx.apply = async (obj) => {
      if (obj.kind === "ConfigMap") configs.push(Object.values((obj as { data?: Record<string, string> }).data ?? {})[0] ?? "");
      return apply(obj);
    };
    let p = lagPipeline({ mode: "lag", minReplicas: 1, maxReplicas: 8, targetCatchUp: "60s", partitions: { autoGrow: true, max: 6 } });
    p = { ...p, status: { replicas: 2 } };
    const step = async (seconds: number, next: World) => {
      clock.ms = T + seconds * 1000;
      world = next;
      await reconcile(p, ctx);
      p = { ...p, status: lastOf(recorded.statuses) };
    };
    const limited = () => p.status?.conditions?.find((c) => c.type === "ScalingLimited");

    // The first reading: a backlog the two partitions cap, and no rate measured yet. The first count is recorded.
    await step(0, world);
    assert.deepEqual([p.status?.scaling?.desired, p.status?.scaling?.cappedBy], [2, "partitions"]);
    assert.deepEqual(grown, []);
    assert.equal(limited()?.reason, "PartitionGrowthHeld");
    assert.match(limited()?.message ?? "", /src: its first partition count is not yet on record/);
    assert.deepEqual(p.status?.sources, [{ topic: "src", partitions: 2, initialPartitions: 2 }]);
    assert.deepEqual(JSON.parse(lastOf(configs)).initialPartitions, { src: 2 });

    // 1,250/s into each partition, 500/s read from each: the rate is learned, but input seen once is not a rate.
    await step(2.5, { ...world, end: [8125, 8125], committed: [1250, 1250] });
    assert.deepEqual(grown, []);
    assert.match(limited()?.message ?? "", /src: its input has not held for two readings/);
    // Again: (2,500 + 15,000 / 60) / 500 needs 6.
    await step(5, { ...world, end: [11_250, 11_250], committed: [2500, 2500] });
    assert.deepEqual(grown, [["src", 6]]);
    assert.equal(lastOf(recorded.statefulSets).spec?.replicas, 6, "straight to the grown count");
    assert.deepEqual([p.status?.scaling?.reason, p.status?.scaling?.cappedBy], ["ScaleUp", undefined]);
    assert.deepEqual(p.status?.sources, [{ topic: "src", partitions: 6, initialPartitions: 2 }]);
    assert.deepEqual(JSON.parse(lastOf(configs)).initialPartitions, { src: 2 }, "the workers read partitions 2..5 from their start");
    assert.equal(limited()?.status, "False");
    assert.deepEqual(
      recorded.events.map((e) => e.reason),
      ["PartitionsGrown", "ScaledUp"],
    );
    assert.match(recorded.events[0]?.message ?? "", /^grew src from 2 to 6 partitions/);

    // Grown for good: the next readings see six partitions and grow nothing more.
    await step(7.5, { ...world, group: "PreparingRebalance" });
    await step(10, { ...world, group: "Stable", members: 6 });
    assert.deepEqual(grown, [["src", 6]]);
    assert.deepEqual(p.status?.sources, [{ topic: "src", partitions: 6, initialPartitions: 2 }]);
  });

  test("autoGrow off: the partitions cap, and ScalingLimited says how to lift it", async () => {
    const clock = { ms: T };
    let world: World = { end: [5000, 5000], committed: [0, 0], group: "Stable", members: 2 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    let p: StreamPipeline = { ...lagPipeline({ mode: "lag", maxReplicas: 8 }), status: { replicas: 2 } };
    const limited = () => lastOf(recorded.statuses).conditions?.find((x) => x.type === "ScalingLimited");
    await reconcile(p, ctx);
    assert.deepEqual([limited()?.status, limited()?.reason], ["True", "PartitionsCapParallelism"]);
    // A rebalance computes no target: the condition stays as it was rather than flipping for the hold.
    p = { ...p, status: lastOf(recorded.statuses) };
    clock.ms += POLL_INTERVAL_MS;
    world = { ...world, group: "PreparingRebalance" };
    await reconcile(p, ctx);
    assert.equal(lastOf(recorded.statuses).scaling?.reason, "HoldRebalance");
    assert.deepEqual([limited()?.status, limited()?.reason], ["True", "PartitionsCapParallelism"]);
    // Out of lag mode there is no such limit to speak of.
    p = { ...p, status: lastOf(recorded.statuses), spec: { ...p.spec, scaling: { mode: "fixed" }, replicas: 2 } };
    await reconcile(p, ctx);
    assert.equal(limited(), undefined);
  });
});

describe("internal topic names and ownership", () => {
  const windowed = (name: string, status?: StreamPipelineStatus): StreamPipeline => ({
    apiVersion: "conveyor.dev/v1alpha1",
    kind: "StreamPipeline",
    metadata: { name, namespace: "ns", uid: `uid-${name}`, generation: 1, finalizers: [CLEANUP_FINALIZER], deletionTimestamp: new Date(t1) },
    spec: {
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in"], eventTime: "value.ts" },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "agg", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
      ],
      sink: { topic: "out" },
    },
    ...(status ? { status } : {}),
  });

  test("a new pipeline gets the collision-free names; one an earlier operator ran keeps its names, as does one that recorded them", () => {
    assert.deepEqual(pipelineMeta(windowed("orders")), { namespace: "ns", name: "orders" });
    assert.deepEqual(pipelineMeta(windowed("orders", { observedGeneration: 1 })), { namespace: "ns", name: "orders", legacyNames: true });
    assert.deepEqual(pipelineMeta(windowed("orders", { observedGeneration: 1, internalTopics: [] })), { namespace: "ns", name: "orders" });
    const recorded = { observedGeneration: 1, internalTopics: [{ name: "ns.orders-by-user-repartition", topicId: "id-1" }] };
    assert.equal(pipelineMeta(windowed("orders", recorded)).legacyNames, true);
  });

  test("the finalizer deletes only the topics the pipeline recorded, with their ids, and not one another pipeline records too", async () => {
    const clock = { ms: Date.parse(t1) };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    const asked: { name: string; topicId: string }[][] = [];
    ctx.kafka.deleteGroup = async () => {};
    ctx.kafka.deleteTopics = async (_conn, topics) => {
      asked.push(topics);
      return { deleted: topics.map((t) => t.name), otherId: [] };
    };
    ctx.deleteStatefulSet = async () => {};
    ctx.setFinalizers = async () => {};
    // Under the earlier names, orders/by-user and orders-by/user shared one topic; both recorded it.
    const shared = { name: "ns.orders-by-user-repartition", topicId: "shared-id" };
    const p = windowed("orders", { internalTopics: [shared, { name: "ns.orders-agg-changelog", topicId: "cl-id" }] });
    const other = windowed("orders-by", { internalTopics: [shared] });
    ctx.pipelines = () => [p, other];
    assert.deepEqual(await reconcile(p, ctx), { done: true });
    assert.deepEqual(asked, [[{ name: "ns.orders-agg-changelog", topicId: "cl-id" }]], "the shared topic is left to the other pipeline");
    const cleaned = recorded.events.find((e) => e.reason === "CleanedUp");
    assert.match(cleaned?.message ?? "", /kept ns\.orders-by-user-repartition/);
  });

  test("a pipeline an earlier operator ran adopts its topics under their earlier names, with their ids, and says so", async () => {
    const clock = { ms: Date.parse(t1) };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    const legacy = ["ns.orders-by-user-repartition", "ns.orders-agg-changelog"];
    ctx.kafka.topicIds = async (_conn, names) => new Map(names.filter((n) => legacy.includes(n)).map((n) => [n, `id-of-${n}`]));
    const ensured: string[][] = [];
    ctx.kafka.ensureTopics = async (_conn, topics) => {
      ensured.push(topics.map((t) => t.name));
      return { created: [], reconfigured: [] };
    };
    const p = windowed("orders", { observedGeneration: 1 });
    const running = { ...p, metadata: { ...p.metadata, deletionTimestamp: undefined } };
    await reconcile(running, ctx);
    assert.deepEqual(ensured, [legacy], "the topics it runs on keep their names");
    assert.deepEqual(
      recorded.statuses[0]?.internalTopics,
      legacy.map((name) => ({ name, topicId: `id-of-${name}` })),
    );
    assert.deepEqual(lastOf(recorded.statuses).internalTopics, recorded.statuses[0]?.internalTopics, "the record stays in every status after");
    assert.ok(recorded.events.some((e) => e.reason === "LegacyTopicNames"));
  });

  test("a new pipeline records each topic it creates, with its id, before it goes on", async () => {
    const clock = { ms: Date.parse(t1) };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    ctx.kafka.ensureTopics = async (_conn, topics) => ({ created: topics.map((t) => ({ name: t.name, topicId: `new-${t.name}` })), reconfigured: [] });
    const p = windowed("orders");
    await reconcile({ ...p, metadata: { ...p.metadata, deletionTimestamp: undefined } }, ctx);
    const names = ["ns_orders_by-user-repartition", "ns_orders_agg-changelog"];
    assert.deepEqual(
      recorded.statuses[0]?.internalTopics,
      names.map((name) => ({ name, topicId: `new-${name}` })),
    );
    assert.deepEqual(lastOf(recorded.statuses).internalTopics, recorded.statuses[0]?.internalTopics);
  });

  test("a deleted pipeline whose credentials are gone, or whose cleanup Kafka refuses past the deadline, is let go with a Warning", async () => {
    const clock = { ms: Date.parse(t1) };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    const released: string[][] = [];
    ctx.deleteStatefulSet = async () => {};
    ctx.setFinalizers = async (_p, f) => {
      released.push(f);
    };
    const p = windowed("orders", { internalTopics: [{ name: "ns_orders_agg-changelog", topicId: "cl" }] });
    ctx.connectionFor = () => Promise.reject(new CredentialsError("secret ns/orders-kafka does not exist"));
    assert.deepEqual(await reconcile(p, ctx), { done: true });
    assert.deepEqual(released, [[]]);
    const skipped = recorded.events.find((e) => e.reason === "KafkaCleanupSkipped");
    assert.match(
      skipped?.message ?? "",
      /secret ns\/orders-kafka does not exist; left on the cluster: consumer group ns\.orders, topic ns_orders_agg-changelog/,
    );

    ctx.connectionFor = async (x) => ({ bootstrapServers: x.spec.kafka.bootstrapServers });
    ctx.kafka.topicIds = async () => new Map();
    ctx.kafka.deleteGroup = () => Promise.reject(new Error("SASL authentication failed"));
    await assert.rejects(reconcile(p, ctx), /SASL authentication failed/, "within the deadline: retried with backoff");
    clock.ms += FINALIZE_KAFKA_DEADLINE_MS + 1_000;
    assert.deepEqual(await reconcile(p, ctx), { done: true });
    assert.equal(released.length, 2);
    assert.match(recorded.events.at(-1)?.message ?? "", /Kafka refused the cleanup for 10 minutes: .*SASL authentication failed/);
  });

  test("a deleted pipeline whose workers do not stop waits with the queue's backoff, and its status says for what", async () => {
    const clock = { ms: Date.parse(t1) };
    const world: World = { end: [0], committed: [0], group: "Stable", members: 1 };
    const { ctx, recorded } = fakeCluster(() => world, clock);
    let pods = 2;
    let released = 0;
    ctx.deleteStatefulSet = async () => {};
    ctx.countPods = async () => pods;
    ctx.setFinalizers = async () => {
      released++;
    };
    const p = windowed("orders", { internalTopics: [] });
    const first = await reconcile(p, ctx);
    assert.deepEqual(first, { waitingFor: "deleting: waiting for 2 workers to stop" });
    assert.deepEqual(await reconcile(p, ctx), first, "the same wait while nothing moves: the queue doubles its delay");
    const ready = lastOf(recorded.statuses).conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.status, "False");
    assert.equal(ready?.reason, "Deleting");
    assert.equal(ready?.message, "deleting: waiting for 2 workers to stop");
    pods = 1;
    assert.deepEqual(await reconcile(p, ctx), { waitingFor: "deleting: waiting for 1 workers to stop" }, "one worker fewer is progress");
    assert.equal(released, 0, "the pipeline is held while a worker runs");
    pods = 0;
    ctx.kafka.deleteGroup = async () => {};
    ctx.kafka.deleteTopics = async () => ({ deleted: [], otherId: [] });
    assert.deepEqual(await reconcile(p, ctx), { done: true });
    assert.equal(released, 1);
  });
});
