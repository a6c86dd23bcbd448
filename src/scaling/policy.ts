// The lag autoscaler's policy, as pure functions of the spec, the lag reader's samples, the state kept between
// decisions and an injected clock: desired = ceil((inRate + lag / targetCatchUp) / perReplicaRate). It is kept
// apart from the reader and from reconcile so that every trap the KEDA Kafka scaler is known to fall into can be
// pinned down by a table of samples, without a broker or a cluster.
import { type ScalingSpec, SPEC_DEFAULTS, type StreamPipelineSpec } from "../api-types.gen.ts";
import { parseDuration } from "../topology/duration.ts";

/** One reading of the source partitions (keyed `topic:partition`) and of the consumer group. */
export interface ScalingSample {
  /** When it was read, in ms. */
  at: number;
  /** Read-committed end offsets; undefined when the read failed. */
  endOffsets: ReadonlyMap<string, bigint> | undefined;
  /** The group's committed offsets (undefined for a partition it has never committed); undefined when the read failed. */
  committed: ReadonlyMap<string, bigint | undefined> | undefined;
  /** The group's state as the coordinator reports it ("Stable", "PreparingRebalance", "Empty", ...); undefined when unread. */
  groupState: string | undefined;
  members: number | undefined;
  /** Members holding at least one partition, when the assignment could be read. */
  membersWithAssignment?: number;
}

/** What two successive samples say. Every undefined means "could not be read", never zero. */
export interface Rates {
  at: number;
  /** Records behind, per partition. */
  partitionLag: ReadonlyMap<string, number> | undefined;
  /** Records appended per second, per partition. */
  partitionInRate: ReadonlyMap<string, number> | undefined;
  lag: number | undefined;
  inRate: number | undefined;
  /** Records committed per second by the whole group. */
  consumeRate: number | undefined;
  /** Whether the interval measured what the members can do at most, so consumeRate / members is a per-replica rate. */
  saturated: boolean;
  groupState: string | undefined;
  members: number | undefined;
}

export interface ScalingInputs {
  rates: Rates;
  /** Replicas the workers run now. */
  current: number;
  /** How many tasks can run in parallel: the partition count that caps the replicas worth running. */
  maxParallelism: number;
  /**
   * The internal topics the group reads (a keyBy's repartition topic): the workers' own output. Their
   * watermark markers keep coming while the workers run, so they never count as input that keeps a pipeline
   * from idling (see quiet).
   */
  internalTopics?: ReadonlySet<string>;
}

export interface Recommendation {
  at: number;
  desired: number;
}

/** Kept between decisions; plain numbers, so it can live in the status. */
export interface PolicyState {
  /** When the policy began watching: like a scale step, it starts a full window before any scale-down. */
  since: number;
  /** Records per second one replica consumes when it has a backlog, smoothed over saturated intervals. */
  perReplicaRate?: number;
  /** Recommendations within the scale-down stabilization window, oldest first. */
  history: readonly Recommendation[];
  lastScaleTime?: number;
  /** Since when there has been no input and no lag. */
  idleSince?: number;
}

export type Reason =
  | "Fixed"
  | "External"
  | "Steady"
  | "ScaleUp"
  | "WakeUp"
  | "ScaleDown"
  | "ScaleToZero"
  | "Stabilizing"
  | "HoldRebalance"
  | "UnknownGroup"
  | "UnknownLag"
  | "UnknownRate";

export type CappedBy = "maxReplicas" | "partitions" | "minReplicas" | "partitionSkew";

export interface Decision {
  /** Replicas to run; undefined means leave the scale subresource to whoever drives it. */
  desired: number | undefined;
  current: number;
  reason: Reason;
  cappedBy?: CappedBy;
  lag?: number;
  inRate?: number;
  consumeRate?: number;
  perReplicaRate?: number;
  lastScaleTime?: number;
  /** What the next decision starts from. */
  state: PolicyState;
}

// Transaction markers take an offset each, so an exactly-once group can sit one record behind for good. A
// partition that gets no input and is at most this far behind is drained: it never keeps a worker up or adds one.
const RESIDUAL_LAG = 1;
// Records an internal partition may hold unread when nothing but watermark markers flows: each source
// partition's worker writes one into it at most every 200 ms, read and committed within a commit interval or
// two. Ten per source partition is about 2 s of them.
const MARKER_SLACK_PER_SOURCE = 10;
// Weight of the newest saturated interval in perReplicaRate. One interval is noisy (offsets are committed in
// steps, and a member may pause on a slow batch); a plain mean would never forget records that got cheaper or
// dearer when the steps changed. An EWMA of 0.3 is mostly made of the last half dozen saturated intervals.
const RATE_WEIGHT = 0.3;
// Float error in (inRate + lag / catchUp) / rate must not buy a replica.
const EPSILON = 1e-9;

/**
 * Rates and lag from the previous sample and this one. Pass as `prev` the last sample whose reads succeeded, so
 * records that arrived during a failed read are still counted. `startOffsets` says where the group begins each
 * partition it has never committed (the log start under startFrom earliest and for partitions added later, the
 * end offset under latest); a partition missing from it would be read from offset 0.
 */
export function deriveRates(
  prev: ScalingSample | undefined,
  cur: ScalingSample,
  startOffsets: ReadonlyMap<string, bigint> = new Map(),
  internalTopics: ReadonlySet<string> = new Set(),
): Rates {
  const partitionLag = lagOf(cur, startOffsets);
  const backlogged = (lag: ReadonlyMap<string, number> | undefined) => backloggedPartitions(lag, internalTopics);
  const seconds = prev ? (cur.at - prev.at) / 1000 : 0;
  const known = prev !== undefined && seconds > 0;
  // A partition missing from the previous sample was created in between, so its log began at offset 0.
  const partitionInRate = known && prev.endOffsets && cur.endOffsets ? perSecond(prev.endOffsets, cur.endOffsets, () => 0n, seconds) : undefined;
  // A first commit counts from where the group began reading; with no such offset the interval says nothing.
  const committedPerSecond =
    known && prev.committed && cur.committed ? perSecond(prev.committed, cur.committed, (p) => startOffsets.get(p), seconds) : undefined;
  const consumeRate = committedPerSecond && sum(committedPerSecond.values());
  const members = cur.members ?? 0;
  const stable = (s: ScalingSample) => s.groupState === "Stable" && s.members === cur.members;
  // Every member busy throughout: stable at both ends with the same members, each holding a partition, and at
  // least as many partitions behind as there are members at both ends. Then no member waited for records.
  const saturated =
    known &&
    consumeRate !== undefined &&
    members > 0 &&
    stable(prev) &&
    stable(cur) &&
    (cur.membersWithAssignment === undefined || cur.membersWithAssignment === members) &&
    backlogged(lagOf(prev, startOffsets)) >= members &&
    backlogged(partitionLag) >= members;
  return {
    at: cur.at,
    partitionLag,
    partitionInRate,
    lag: partitionLag && sum(partitionLag.values()),
    inRate: partitionInRate && sum(partitionInRate.values()),
    consumeRate,
    saturated,
    groupState: cur.groupState,
    members: cur.members,
  };
}

function lagOf(s: ScalingSample, startOffsets: ReadonlyMap<string, bigint>): Map<string, number> | undefined {
  if (!s.endOffsets || !s.committed) return undefined;
  const out = new Map<string, number>();
  for (const [p, end] of s.endOffsets) {
    const from = s.committed.get(p) ?? startOffsets.get(p) ?? 0n;
    out.set(p, end > from ? Number(end - from) : 0);
  }
  return out;
}

// Offsets go back when a topic is re-created or a group's offsets are reset; that is not negative throughput.
function perSecond(
  before: ReadonlyMap<string, bigint | undefined>,
  after: ReadonlyMap<string, bigint | undefined>,
  baseOf: (partition: string) => bigint | undefined,
  seconds: number,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [p, now] of after) {
    const base = before.get(p) ?? baseOf(p);
    out.set(p, now !== undefined && base !== undefined && now > base ? Number(now - base) / seconds : 0);
  }
  return out;
}

/**
 * Partitions with work waiting: more than the residual behind, and on an internal topic more than its
 * watermark markers leave (a worker's own markers would otherwise make an idle group look busy).
 */
function backloggedPartitions(lag: ReadonlyMap<string, number> | undefined, internalTopics: ReadonlySet<string>): number {
  if (!lag) return 0;
  const slack = markerSlack(lag.keys(), internalTopics);
  let n = 0;
  for (const [key, l] of lag) if (l > (internalTopics.has(topicOf(key)) ? slack : RESIDUAL_LAG)) n++;
  return n;
}

/** The topic of a partition key, `topic:partition`. */
export const topicOf = (key: string) => key.slice(0, key.lastIndexOf(":"));

/** Records an internal partition may hold unread when nothing but watermark markers flows into it. */
function markerSlack(keys: Iterable<string>, internalTopics: ReadonlySet<string>): number {
  let sources = 0;
  for (const k of keys) if (!internalTopics.has(topicOf(k))) sources++;
  return MARKER_SLACK_PER_SOURCE * Math.max(1, sources);
}

function sum(xs: Iterable<number>): number {
  let total = 0;
  for (const x of xs) total += x;
  return total;
}

interface Policy {
  minReplicas: number;
  maxReplicas: number;
  targetCatchUpMs: number;
  lagPerReplica: number;
  stabilizationMs: number;
  scaleToZeroAfterMs: number;
}

// A duration the validator would refuse still gets its default here: the policy must decide something.
function durationOr(text: string | undefined, fallback: string): number {
  return parseDuration(text ?? fallback) ?? (parseDuration(fallback) as number);
}

/** spec.scaling.targetCatchUp in ms, with its default. */
export function targetCatchUpMs(spec: Pick<StreamPipelineSpec, "scaling">): number {
  return durationOr(spec.scaling?.targetCatchUp, SPEC_DEFAULTS["scaling.targetCatchUp"]);
}

function policyOf(s: ScalingSpec): Policy {
  const stabilizationMs = durationOr(s.scaleDownStabilization, SPEC_DEFAULTS["scaling.scaleDownStabilization"]);
  return {
    minReplicas: s.minReplicas ?? SPEC_DEFAULTS["scaling.minReplicas"],
    maxReplicas: s.maxReplicas ?? SPEC_DEFAULTS["scaling.maxReplicas"],
    targetCatchUpMs: targetCatchUpMs({ scaling: s }),
    lagPerReplica: s.lagPerReplica ?? SPEC_DEFAULTS["scaling.lagPerReplica"],
    stabilizationMs,
    // The CRD has no default; idling as long as a scale-down must wait is the same caution.
    scaleToZeroAfterMs: s.scaleToZeroAfter === undefined ? stabilizationMs : (parseDuration(s.scaleToZeroAfter) ?? stabilizationMs),
  };
}

/** The replicas a pipeline should run now, why, and the state the next decision starts from. */
export function decide(spec: Pick<StreamPipelineSpec, "scaling" | "replicas">, inputs: ScalingInputs, state: PolicyState | undefined, now: number): Decision {
  const mode = spec.scaling?.mode ?? SPEC_DEFAULTS["scaling.mode"];
  // Outside lag mode nothing is watched, so a later switch to lag starts a fresh window.
  const fresh: PolicyState = { since: now, history: [] };
  if (mode === "fixed") return { desired: spec.replicas ?? SPEC_DEFAULTS.replicas, current: inputs.current, reason: "Fixed", state: fresh };
  if (mode === "external") return { desired: undefined, current: inputs.current, reason: "External", state: fresh };
  return onLag(policyOf(spec.scaling ?? {}), inputs, state ?? fresh, now);
}

function onLag(p: Policy, { rates: r, current, maxParallelism, internalTopics }: ScalingInputs, state: PolicyState, now: number): Decision {
  const perReplicaRate = learn(state.perReplicaRate, r, current);
  const backlog = drainable(r);
  const idle = quiet(r, internalTopics ?? new Set());
  const idleSince = idle ? (state.idleSince ?? now) : undefined;
  const history = state.history.filter((h) => h.at > now - p.stabilizationMs);
  const base = { current, lag: r.lag, inRate: r.inRate, consumeRate: r.consumeRate, perReplicaRate };
  const step = (desired: number, reason: Reason, cappedBy: CappedBy | undefined, recorded: number | undefined): Decision => {
    const lastScaleTime = desired !== current ? now : state.lastScaleTime;
    const kept = recorded === undefined ? history : [...history, { at: now, desired: recorded }];
    return { ...base, desired, reason, cappedBy, lastScaleTime, state: { since: state.since, perReplicaRate, history: kept, lastScaleTime, idleSince } };
  };

  // At zero there is no group to wait for, and new records must wake a worker at once.
  if (current > 0) {
    // Unknown, like an unknown lag: a vote for what runs, so that a scale-in waits a full known window after it.
    if (r.groupState === undefined || r.members === undefined) return step(current, "UnknownGroup", undefined, current);
    // Each step rebalances the group, and lag read mid-rebalance says nothing about throughput.
    if (r.groupState !== "Stable" || r.members !== current) return step(current, "HoldRebalance", undefined, undefined);
  }

  // Nothing to do but the workers' own markers: no worker is needed for them.
  const need = idle ? { raw: 0, usable: 0, complete: true } : estimate(p, r, backlog, perReplicaRate);
  // An unknown read votes for keeping what runs, so a scale-in waits a full known window after it.
  if (need === undefined) return step(current, "UnknownLag", undefined, current);
  const bounded = bound(aligned(need.raw, maxParallelism), need.usable, p.maxReplicas, maxParallelism);
  let target = bounded.value;
  let cappedBy = bounded.cappedBy;
  const work = !idle && ((backlog?.total ?? 0) > 0 || (r.inRate ?? 0) > 0);
  const asleep = p.minReplicas === 0 && idleSince !== undefined && now - idleSince >= p.scaleToZeroAfterMs;
  const floor = p.minReplicas > 0 ? p.minReplicas : current === 0 ? (work ? 1 : 0) : asleep ? 0 : 1;
  if (target < floor) {
    target = floor;
    cappedBy = p.minReplicas > 0 ? "minReplicas" : undefined;
  }

  if (target > current) return step(target, current === 0 ? "WakeUp" : "ScaleUp", cappedBy, target);
  if (!need.complete) return step(current, r.lag === undefined ? "UnknownLag" : "UnknownRate", cappedBy, current);
  if (target === current) return step(current, "Steady", cappedBy, target);
  // Idling for scaleToZeroAfter is its own stabilization.
  if (target === 0) return step(0, "ScaleToZero", cappedBy, target);
  if (now - (state.lastScaleTime ?? state.since) < p.stabilizationMs) return step(current, "Stabilizing", cappedBy, target);
  // Down only once the target has held for the whole window, and then straight to it: a draining backlog
  // passes through falling targets, and following each would be a step (and a rebalance) per target.
  const highest = Math.max(target, ...history.map((h) => h.desired));
  return highest === target ? step(target, "ScaleDown", cappedBy, target) : step(current, "Stabilizing", cappedBy, target);
}

// Only an interval in which every member had a backlog, between two stable readings of today's replicas,
// measures what a replica can do; any other interval measures the input.
function learn(previous: number | undefined, r: Rates, current: number): number | undefined {
  if (!r.saturated || r.members !== current || r.consumeRate === undefined || r.consumeRate <= 0) return previous;
  const observed = r.consumeRate / current;
  return previous === undefined ? observed : previous + RATE_WEIGHT * (observed - previous);
}

interface Backlog {
  total: number;
  perPartition: ReadonlyMap<string, number>;
}

/**
 * No input and nothing left to do: the source partitions have no input and no lag beyond the residual, and the
 * internal ones no more lag than watermark markers leave. Their input, markers included, does not count: it is
 * the workers' own output, and it stops when they do. Unknown readings are never quiet.
 */
export function quiet(r: Rates, internalTopics: ReadonlySet<string>): boolean {
  if (!r.partitionLag || !r.partitionInRate) return false;
  const slack = markerSlack(r.partitionLag.keys(), internalTopics);
  for (const [key, lag] of r.partitionLag) {
    if (internalTopics.has(topicOf(key))) {
      if (lag > slack) return false;
      continue;
    }
    if (lag > RESIDUAL_LAG) return false;
  }
  for (const [key, input] of r.partitionInRate) if (!internalTopics.has(topicOf(key)) && input > 0) return false;
  return true;
}

/** The lag worth a worker: residual lag on a partition without input counts as drained. */
function drainable(r: Rates): Backlog | undefined {
  if (!r.partitionLag) return undefined;
  const perPartition = new Map<string, number>();
  for (const [p, lag] of r.partitionLag) perPartition.set(p, lag <= RESIDUAL_LAG && r.partitionInRate?.get(p) === 0 ? 0 : lag);
  return { total: sum(perPartition.values()), perPartition };
}

interface Need {
  /** The formula's replicas. */
  raw: number;
  /** The replicas that can take part: one partition is never read by two, so no partition uses more than one. */
  usable: number;
  /** False when part of the data was unknown and raw is only a lower bound: good for scaling up, not down. */
  complete: boolean;
}

function estimate(p: Policy, r: Rates, backlog: Backlog | undefined, perReplicaRate: number | undefined): Need | undefined {
  if (perReplicaRate === undefined) {
    if (backlog) return { raw: ceil(backlog.total / p.lagPerReplica), usable: Number.POSITIVE_INFINITY, complete: true };
    // Records are arriving, so at least one worker is needed, whatever the lag.
    if (r.inRate !== undefined) return { raw: r.inRate > 0 ? 1 : 0, usable: Number.POSITIVE_INFINITY, complete: false };
    return undefined;
  }
  if (!backlog && !r.partitionInRate) return undefined;
  const catchUpSeconds = p.targetCatchUpMs / 1000;
  let total = 0;
  let usable = 0;
  for (const partition of new Set([...(backlog?.perPartition.keys() ?? []), ...(r.partitionInRate?.keys() ?? [])])) {
    const demand = (r.partitionInRate?.get(partition) ?? 0) + (backlog?.perPartition.get(partition) ?? 0) / catchUpSeconds;
    total += demand;
    usable += Math.min(demand, perReplicaRate);
  }
  return { raw: ceil(total / perReplicaRate), usable: ceil(usable / perReplicaRate), complete: backlog !== undefined && r.partitionInRate !== undefined };
}

/**
 * Partitions are not split between workers: with P partitions and N workers, some worker reads ceil(P/N) of
 * them. The formula's N assumes an even share (P/N partitions' load each); the busiest worker carries ceil(P/N),
 * so the target is raised to the fewest workers whose busiest one reads no more partitions than an even share
 * allows. With 4 partitions and a need of 3, 3 workers would leave one reading 2 partitions, half the backlog,
 * at one worker's rate: 4 it is.
 */
export function aligned(raw: number, partitions: number): number {
  if (raw <= 1 || raw >= partitions) return raw;
  const perWorker = Math.max(1, Math.floor(partitions / raw));
  return Math.ceil(partitions / perWorker);
}

function ceil(x: number): number {
  return Math.ceil(x - EPSILON);
}

// The tightest ceiling names the cap; on a tie the one the user can act on soonest: maxReplicas is in the spec,
// partitions can be grown, while a skewed partition needs its producers to change keys.
function bound(raw: number, usable: number, maxReplicas: number, maxParallelism: number): { value: number; cappedBy?: CappedBy } {
  const ceilings: [number, CappedBy][] = [
    [maxReplicas, "maxReplicas"],
    [maxParallelism, "partitions"],
    [usable, "partitionSkew"],
  ];
  let value = raw;
  let cappedBy: CappedBy | undefined;
  for (const [limit, name] of ceilings) {
    if (limit < value) {
      value = limit;
      cappedBy = name;
    }
  }
  return cappedBy ? { value, cappedBy } : { value };
}
