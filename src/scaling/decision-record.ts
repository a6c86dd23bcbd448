// What the lag autoscaler reads for a pipeline, and how each decision is recorded: status.scaling (which also
// carries the policy's state from one reconcile to the next, so that a restarted or failed-over operator goes
// on where it was) and, when the replicas change, one Event worded like Flink's ScalingReport. Pure functions
// of the pipeline, the reading and the decision, so that what the user sees is tested without a cluster.
import { consumerGroupOf, type ScalingStatus, type StreamPipeline, type StreamPipelineSpec } from "../api.ts";
import { SPEC_DEFAULTS } from "../api-types.gen.ts";
import type { KafkaConnection } from "../kafka-admin.ts";
import { type CompiledTopology, sourceTopicsOf } from "../topology/compile.ts";
import { partitionCountsOf } from "./growth.ts";
import type { LagTarget } from "./lag-reader.ts";
import type { Decision, PolicyState, Recommendation } from "./policy.ts";

/**
 * How often a pipeline in lag mode is read and decided on. A backlog is answered within seconds, where KEDA's
 * Kafka scaler polls every 30 s and the HPA syncs every 15 s on top of it.
 */
export const POLL_INTERVAL_MS = 2_500;

// Enough to say what failed; the status is not a log.
const MAX_ERRORS = 5;
const MAX_ERROR_LENGTH = 512;

/**
 * What the workers' group reads: the source topics and the internal repartition topic. A backlog on the
 * repartition topic is work the same workers still have to do, so it counts as lag: left out, the autoscaler
 * would scale in while the windowed half of the pipeline is behind.
 */
export function lagTargetFor(p: StreamPipeline, topology: CompiledTopology, kafka: KafkaConnection): LagTarget {
  const repartition = topology.steps.flatMap((s) => (s.kind === "keyBy" ? [s.repartitionTopic] : []));
  const initial = (p.status?.sources ?? []).filter((s) => sourceTopicsOf(topology).includes(s.topic));
  return {
    kafka,
    group: consumerGroupOf(p),
    topics: [...sourceTopicsOf(topology), ...repartition],
    startFrom: topology.source.startFrom,
    ...(initial.length > 0 ? { initialPartitions: new Map(initial.map((s) => [s.topic, s.initialPartitions])) } : {}),
    ...(repartition.length > 0 ? { internalTopics: repartition } : {}),
  };
}

/**
 * The most workers that can hold a partition each: the partition count of the widest topic the group reads.
 * Unknown when the offsets could not be read; the policy then has no target to cap.
 */
export function maxParallelismOf(endOffsets: ReadonlyMap<string, bigint> | undefined): number {
  if (!endOffsets) return Number.POSITIVE_INFINITY;
  return Math.max(0, ...partitionCountsOf(endOffsets.keys()).values());
}

/**
 * The recommendations a scale-down can still be bounded by. One that a later one equals or exceeds never is
 * again: the later one stays in the window longer. What is left falls strictly, so it holds at most
 * maxReplicas + 1 entries, however long the window.
 */
export function compactRecommendations(history: readonly Recommendation[]): Recommendation[] {
  const out: Recommendation[] = [];
  for (const r of history) {
    while (out.length > 0 && (out.at(-1) as Recommendation).desired <= r.desired) out.pop();
    out.push(r);
  }
  return out;
}

const iso = (ms: number) => new Date(ms).toISOString();
// Six significant digits: readable, never rounded to zero, and what the policy reads back after a restart.
const rate = (x: number) => Number(x.toPrecision(6));

/** status.scaling for a decision made on a reading taken at `sampleAt`, with the reads that failed. */
export function scalingStatusOf(d: Decision, reading: { sampleAt: number; errors: readonly string[] }): ScalingStatus {
  const errors = reading.errors.slice(0, MAX_ERRORS).map((e) => {
    const line = e.toWellFormed();
    return line.length <= MAX_ERROR_LENGTH ? line : `${line.slice(0, MAX_ERROR_LENGTH - 1)}…`;
  });
  return {
    desired: d.desired ?? d.current,
    current: d.current,
    reason: d.reason,
    ...(d.cappedBy ? { cappedBy: d.cappedBy } : {}),
    ...(d.lag !== undefined ? { lag: d.lag } : {}),
    ...(d.inRate !== undefined ? { inputRate: rate(d.inRate) } : {}),
    ...(d.consumeRate !== undefined ? { consumeRate: rate(d.consumeRate) } : {}),
    ...(d.perReplicaRate !== undefined ? { perReplicaRate: rate(d.perReplicaRate) } : {}),
    ...(d.lastScaleTime !== undefined ? { lastScaleTime: iso(d.lastScaleTime) } : {}),
    sampleTime: iso(reading.sampleAt),
    ...(errors.length > 0 ? { errors } : {}),
    state: {
      since: iso(d.state.since),
      ...(d.state.idleSince !== undefined ? { idleSince: iso(d.state.idleSince) } : {}),
      recommendations: compactRecommendations(d.state.history).map((r) => ({ at: iso(r.at), desired: r.desired })),
    },
  };
}

/** The policy's state as status.scaling recorded it; undefined when there is none to go on from. */
export function policyStateOf(s: ScalingStatus | undefined): PolicyState | undefined {
  const since = s ? Date.parse(s.state.since) : Number.NaN;
  if (!s || Number.isNaN(since)) return undefined;
  const time = (text: string | undefined) => (text === undefined ? undefined : Date.parse(text));
  const lastScaleTime = time(s.lastScaleTime);
  const idleSince = time(s.state.idleSince);
  return {
    since,
    history: s.state.recommendations.map((r) => ({ at: Date.parse(r.at), desired: r.desired })).filter((r) => !Number.isNaN(r.at)),
    ...(s.perReplicaRate !== undefined ? { perReplicaRate: s.perReplicaRate } : {}),
    ...(lastScaleTime !== undefined && !Number.isNaN(lastScaleTime) ? { lastScaleTime } : {}),
    ...(idleSince !== undefined && !Number.isNaN(idleSince) ? { idleSince } : {}),
  };
}

/** The later of two records of the same pipeline's scaling, by the time of their readings. */
export function newestScaling(a: ScalingStatus | undefined, b: ScalingStatus | undefined): ScalingStatus | undefined {
  if (!a || !b) return a ?? b;
  return Date.parse(b.sampleTime) > Date.parse(a.sampleTime) ? b : a;
}

export const ScaleReasons = {
  ScaledUp: "ScaledUp",
  ScaledDown: "ScaledDown",
  ScaledToZero: "ScaledToZero",
  WokeUp: "WokeUp",
} as const;

export interface ScaleEvent {
  reason: (typeof ScaleReasons)[keyof typeof ScaleReasons];
  message: string;
}

const count = (n: number | undefined, unit: string) => (n === undefined ? "unknown" : `${Math.round(n).toLocaleString("en-US")} ${unit}`);
const perSecond = (n: number | undefined) => (n === undefined ? "unknown" : `${n.toLocaleString("en-US", { maximumFractionDigits: 1 })}/s`);

/** The Event for a decision that changes the replicas, or none. */
export function scaleEventOf(d: Decision, spec: Pick<StreamPipelineSpec, "scaling">): ScaleEvent | undefined {
  if (d.desired === undefined || d.desired === d.current) return undefined;
  const s = spec.scaling ?? {};
  const reason =
    d.current === 0
      ? ScaleReasons.WokeUp
      : d.desired === 0
        ? ScaleReasons.ScaledToZero
        : d.desired > d.current
          ? ScaleReasons.ScaledUp
          : ScaleReasons.ScaledDown;
  const catchUp = s.targetCatchUp ?? SPEC_DEFAULTS["scaling.targetCatchUp"];
  const window = s.scaleDownStabilization ?? SPEC_DEFAULTS["scaling.scaleDownStabilization"];
  const why =
    reason === ScaleReasons.WokeUp
      ? "records arrived while no worker ran"
      : reason === ScaleReasons.ScaledToZero
        ? `no input and no lag for ${s.scaleToZeroAfter ?? window}`
        : reason === ScaleReasons.ScaledDown
          ? `every target within the ${window} stabilization window is at most ${d.desired}`
          : d.perReplicaRate === undefined
            ? `lag / lagPerReplica (${s.lagPerReplica ?? SPEC_DEFAULTS["scaling.lagPerReplica"]}) needs more workers; the per-worker rate is not measured yet`
            : `(input + lag / targetCatchUp ${catchUp}) / per-worker rate needs more workers`;
  // A scale-down goes to the highest target within the window; the bound names today's target, the last one
  // recommended, which may be lower.
  const target = d.state.history.at(-1)?.desired;
  const capped =
    reason === ScaleReasons.ScaledDown && target !== undefined && target !== d.desired
      ? `; the target now is ${target}${d.cappedBy ? ` (capped by ${d.cappedBy})` : ""}`
      : d.cappedBy
        ? `; capped by ${d.cappedBy}`
        : "";
  const verb = { ScaledUp: "Scaled up", ScaledDown: "Scaled down", ScaledToZero: "Scaled to zero", WokeUp: "Woke up" }[reason];
  return {
    reason,
    message:
      `${verb} from ${d.current} to ${d.desired} workers (${d.reason}): lag ${count(d.lag, "records")}, input ${perSecond(d.inRate)}, ` +
      `consumed ${perSecond(d.consumeRate)}, ${perSecond(d.perReplicaRate)} per worker; ${why}${capped}`,
  };
}
