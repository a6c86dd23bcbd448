// Partition growth, as pure functions of the lag reader's rates and the pipeline's limits: when a source
// topic's partition count is what keeps the workers from their target, how many partitions it should have, and
// what the policy may count on once it has them. A partition added is there for good (Kafka cannot remove one),
// so growth is planned only on a measured per-replica rate and only where it buys workers: records already
// written stay in the partitions they were written to, and only new input spreads over the new ones.
import { type CappedBy, type Decision, type Rates, topicOf } from "./policy.ts";

export interface GrowthLimits {
  /** The source topics and their partition counts now. */
  sources: ReadonlyMap<string, number>;
  /** spec.scaling.partitions.max: the most partitions a source may have. */
  max: number;
  maxReplicas: number;
  targetCatchUpMs: number;
  /** Topics that may not grow yet: their first partition count is not on record for the workers. */
  unrecorded?: ReadonlySet<string>;
}

export interface GrowthPlan {
  /** The source topics to grow, with their new partition counts. */
  grow: Map<string, number>;
  /** Why a topic that caps the workers is not grown now; absent when nothing is held back. */
  held?: string;
}

// Float error must not buy a partition.
const EPSILON = 1e-9;
const ceil = (x: number) => Math.ceil(x - EPSILON);

/**
 * The partitions each source topic needs so that its partition count no longer caps the workers the policy
 * wants, within `max` and maxReplicas. A topic grows to ceil(demand / perReplicaRate), where its demand is
 * inRate + lag / targetCatchUp, and only when, with the input spread over the grown count and each backlog left
 * where it is, more workers could take part than it has partitions now. inRate is what held over `previous`
 * and these rates, the lower of the two per partition.
 */
export function planGrowth(rates: Rates, perReplicaRate: number | undefined, limits: GrowthLimits, previous?: Rates): GrowthPlan {
  const grow = new Map<string, number>();
  const held: string[] = [];
  const catchUpSeconds = limits.targetCatchUpMs / 1000;
  for (const [topic, partitions] of limits.sources) {
    const ceiling = Math.min(limits.max, limits.maxReplicas);
    if (partitions >= ceiling) continue;
    if (limits.unrecorded?.has(topic)) {
      held.push(`${topic}: its first partition count is not yet on record in status.sources`);
      continue;
    }
    if (!rates.partitionLag || !rates.partitionInRate) {
      held.push(`${topic}: its lag or input rate is unknown`);
      continue;
    }
    const lags: number[] = [];
    // Input that held over the last two readings: a burst committed in one transaction shows as a rate for
    // the one interval it landed in, and then sits in its partitions as a backlog.
    let inRate = 0;
    let seen = 0;
    for (let p = 0; p < partitions; p++) {
      const key = `${topic}:${p}`;
      lags.push(rates.partitionLag.get(key) ?? 0);
      const now = rates.partitionInRate.get(key) ?? 0;
      seen += now;
      inRate += Math.min(now, previous?.partitionInRate?.get(key) ?? 0);
    }
    const lag = lags.reduce((a, b) => a + b, 0);
    if (perReplicaRate === undefined || perReplicaRate <= 0) {
      // Before a rate is known the policy cannot tell the partitions from the workers as the limit.
      if (lag > 0 || inRate > 0) held.push(`${topic}: partitions are added only once a worker's rate has been measured, since they cannot be removed`);
      continue;
    }
    const target = Math.min(ceiling, ceil((inRate + lag / catchUpSeconds) / perReplicaRate));
    if (target <= partitions) {
      if (ceil((seen + lag / catchUpSeconds) / perReplicaRate) > partitions)
        held.push(`${topic}: its input has not held for two readings, and its backlog stays in the partitions it has`);
      continue;
    }
    // The workers that could take part once grown: each partition at most one worker's rate, the old ones with
    // their backlog and a share of the input, the new ones with their share of the input alone.
    const share = inRate / target;
    let usable = (target - partitions) * Math.min(share, perReplicaRate);
    for (const l of lags) usable += Math.min(l / catchUpSeconds + share, perReplicaRate);
    if (ceil(usable / perReplicaRate) <= partitions) {
      held.push(
        seen > inRate
          ? `${topic}: its input has not held for two readings, and its backlog stays in the partitions it has`
          : `${topic}: its backlog is in the partitions it has, and new partitions would take only new input, too little for another worker`,
      );
      continue;
    }
    grow.set(topic, target);
  }
  return held.length > 0 ? { grow, held: held.join("; ") } : { grow };
}

/**
 * The rates as they will be once the topics have grown: each grown topic's input spread evenly over all its
 * partitions (a producer's partitioner spreads keys over the count it sees), its backlog where it is, and no
 * lag in the new partitions. The policy decides on these, so that the workers follow the partitions in one step.
 */
export function projectGrowth(rates: Rates, grow: ReadonlyMap<string, number>): Rates {
  if (grow.size === 0 || !rates.partitionInRate) return rates;
  const inRate = new Map(rates.partitionInRate);
  const lag = rates.partitionLag && new Map(rates.partitionLag);
  for (const [topic, count] of grow) {
    let total = 0;
    for (const [key, r] of rates.partitionInRate) if (topicOf(key) === topic) total += r;
    for (let p = 0; p < count; p++) {
      inRate.set(`${topic}:${p}`, total / count);
      if (lag && !lag.has(`${topic}:${p}`)) lag.set(`${topic}:${p}`, 0);
    }
  }
  return { ...rates, partitionInRate: inRate, partitionLag: lag };
}

/** The partition count of each topic among partition keys (`topic:partition`). */
export function partitionCountsOf(keys: Iterable<string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const key of keys) {
    const topic = topicOf(key);
    out.set(topic, (out.get(topic) ?? 0) + 1);
  }
  return out;
}

export interface LimitCondition {
  status: "True" | "False";
  reason: string;
  message: string;
}

export interface LimitContext {
  /** The decision on the rates as they are (or as projected after growth). */
  decision: Pick<Decision, "desired" | "cappedBy">;
  /** Every topic the group reads, with its partition count after any growth. */
  partitions: ReadonlyMap<string, number>;
  /** The internal repartition topics among them: a window step's input, whose partitions are its key groups. */
  internalTopics: ReadonlySet<string>;
  autoGrow: boolean;
  max: number | undefined;
  plan: GrowthPlan | undefined;
}

/**
 * The condition ScalingLimited: True while a limit other than the user's own maxReplicas keeps the workers
 * below what the lag asks for, saying which and what would lift it.
 */
export function scalingLimited(c: LimitContext): LimitCondition {
  const cap: CappedBy | undefined = c.decision.cappedBy;
  const desired = c.decision.desired ?? 0;
  if (cap === "partitions") {
    const widest = Math.max(0, ...c.partitions.values());
    const keyed = [...c.partitions].find(([t, n]) => c.internalTopics.has(t) && n === widest);
    if (keyed) {
      const [topic, n] = keyed;
      return {
        status: "True",
        reason: "KeyGroupsCapParallelism",
        message: `the window step reads ${topic}, whose ${n} partitions are the pipeline's key groups: at most ${n} workers hold its state. It is never grown, because that would move keys between state stores; spec.scaling.partitions.max sets the count when a pipeline's internal topics are created`,
      };
    }
    const sources = [...c.partitions].filter(([t]) => !c.internalTopics.has(t)).map(([t, n]) => `${t} (${n})`);
    if (!c.autoGrow)
      return {
        status: "True",
        reason: "PartitionsCapParallelism",
        message: `the source partitions cap the workers at ${desired}: ${sources.join(", ")}. Set spec.scaling.partitions.autoGrow and max to let the operator add partitions`,
      };
    if (c.plan?.held)
      return {
        status: "True",
        reason: "PartitionGrowthHeld",
        message: `the source partitions cap the workers at ${desired}, and are not grown: ${c.plan.held}`,
      };
    const below = [...c.partitions].filter(([t, n]) => !c.internalTopics.has(t) && n < (c.max ?? 0));
    if (below.length > 0)
      return {
        status: "True",
        reason: "PartitionGrowthHeld",
        message: `the source partitions cap the workers at ${desired}: ${sources.join(", ")}. Growing them would not add a worker that has work now`,
      };
    return {
      status: "True",
      reason: "PartitionsAtMax",
      message: `the source partitions cap the workers at ${desired}: ${sources.join(", ")}, at spec.scaling.partitions.max (${c.max})`,
    };
  }
  if (cap === "partitionSkew") {
    const why = c.autoGrow && c.plan?.held ? `; partitions are not grown: ${c.plan.held}` : "";
    return {
      status: "True",
      reason: "PartitionSkew",
      message: `some partitions take more than one worker can read, and more workers would sit idle: the workers stay at ${desired}${why}`,
    };
  }
  return { status: "False", reason: "WithinLimits", message: "no partition limit holds the workers below their target" };
}
