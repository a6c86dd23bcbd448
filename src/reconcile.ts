// reconcile(pipeline, ctx): level-triggered; looks at the whole desired and observed state, never at the event.
import type { KubernetesObject, V1StatefulSet } from "@kubernetes/client-node";
import { consumerGroupOf, type PipelineCondition, type ScalingStatus, type StreamPipeline, type StreamPipelineStatus } from "./api.ts";
import { SPEC_DEFAULTS } from "./api-types.gen.ts";
import { configMapFor, type OperatorConfig, podDisruptionBudgetFor, selectorString, serviceFor, specReplicas, statefulSetFor } from "./children.ts";
import type { KafkaAdmin, KafkaConnection, TopicRef, TopicRequest } from "./kafka-admin.ts";
import { CredentialsError } from "./kafka-client.ts";
import { statusCode } from "./kube-errors.ts";
import { errorMessage, type Logger } from "./log.ts";
import { forgetScaling, type OperatorMetrics, observeScaling, type PipelineLabels } from "./metrics.ts";
import type { Autoscaler } from "./scaling/autoscaler.ts";
import { lagTargetFor, maxParallelismOf, newestScaling, POLL_INTERVAL_MS, policyStateOf, scaleEventOf, scalingStatusOf } from "./scaling/decision-record.ts";
import { type GrowthPlan, type LimitCondition, partitionCountsOf, planGrowth, projectGrowth, scalingLimited } from "./scaling/growth.ts";
import { type Decision, decide, targetCatchUpMs } from "./scaling/policy.ts";
import { acceptedSchemas, incompatibleSteps, resetRequested, type StateSchemaChange } from "./state-schema.ts";
import { planVolumes, resizeCondition, type StateVolume, type VolumePlan } from "./state-volumes.ts";
import {
  type CompiledTopology,
  changelogRetentionMs,
  compile,
  formatCompileError,
  globalInputs,
  internalPrefix,
  internalTopicNames,
  type PipelineMeta,
  sourceTopicsOf,
} from "./topology/compile.ts";
import { parseDuration } from "./topology/duration.ts";
import { parseBytes } from "./topology/quantity.ts";
import { validatePipeline } from "./validate.ts";

export const CLEANUP_FINALIZER = "conveyor.dev/cleanup";
/** How often a pipeline whose workers read Secrets looks at their resourceVersions again: a rotation rolls them. */
export const SECRETS_RESYNC_MS = 60_000;

export interface Context {
  config: OperatorConfig;
  log: Logger;
  now(): Date;
  kafka: KafkaAdmin;
  /** the pipeline's Kafka connection, with credentials read from the Secrets it names */
  connectionFor(p: StreamPipeline): Promise<KafkaConnection>;
  /**
   * a digest of the resourceVersions of the Secrets the workers read (empty when none); throws a CredentialsError
   * naming the Secret and key when one is missing
   */
  secretsVersion(p: StreamPipeline): Promise<string>;
  /** every StreamPipeline the operator watches, as last seen (its informers' cache) */
  pipelines(): StreamPipeline[];
  /** server-side apply under the operator's field manager; returns the object as stored */
  apply<T extends KubernetesObject>(obj: T): Promise<T>;
  /** server-side apply of the pipeline's status subresource */
  applyStatus(p: StreamPipeline, status: StreamPipelineStatus): Promise<void>;
  /** replaces metadata.finalizers, guarded by the resourceVersion */
  setFinalizers(p: StreamPipeline, finalizers: string[]): Promise<void>;
  deleteStatefulSet(namespace: string, name: string): Promise<void>;
  countPods(namespace: string, selector: string): Promise<number>;
  /**
   * the pipeline's state PVCs, by the pods' selector labels (the volume claim template carries them): as the
   * informer last saw them, or as the apiserver has them now with `fresh`, before a write that depends on them
   */
  listStateVolumes(namespace: string, selector: string, fresh?: boolean): Promise<StateVolume[]>;
  /** sets the orphaned-at annotation of a PVC, or removes it (null) */
  markStateVolume(namespace: string, name: string, orphanedAt: string | null): Promise<void>;
  /** deletes a PVC; one that is gone already is not an error */
  deleteStateVolume(namespace: string, name: string): Promise<void>;
  /** raises a PVC's storage request; the apiserver refuses it where the StorageClass does not allow expansion */
  resizeStateVolume(namespace: string, name: string, size: string): Promise<void>;
  /** the StatefulSet as stored, if it exists */
  readStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined>;
  /** deletes the StatefulSet and leaves its pods (and volumes) running: to replace what cannot be updated */
  orphanStatefulSet(namespace: string, name: string): Promise<void>;
  /**
   * records a Kubernetes Event about the pipeline, once per reason and dedupe key: by default the generation,
   * so that a retried reconcile does not repeat itself; never throws
   */
  event(p: StreamPipeline, type: "Normal" | "Warning", reason: string, message: string, dedupeKey?: string): Promise<void>;
  /** lag mode: the lag reader and the last decisions, one per operator process */
  autoscaler: Autoscaler;
  metrics: OperatorMetrics;
}

export type Action = { requeueAfterMs: number } | { waitingFor: string } | { done: true };
export const done: Action = { done: true };
export const requeueAfter = (ms: number): Action => ({ requeueAfterMs: ms });
/**
 * Look again with the queue's capped backoff (1 s doubling to 30 s) while `what` stays the same: a pod stuck
 * terminating costs a few requests a minute, not one a second. A new `what` (one worker fewer) is progress and
 * starts over at 1 s. Name what is awaited, with the numbers that change as it moves on.
 */
export const waitFor = (what: string): Action => ({ waitingFor: what });

export const Reasons = {
  WorkersReady: "WorkersReady",
  WorkersStarting: "WorkersStarting",
  ScaledToZero: "ScaledToZero",
  Suspended: "Suspended",
  RollingOut: "RollingOut",
  UpToDate: "UpToDate",
  InvalidTopology: "InvalidTopology",
  SourceTopicMissing: "SourceTopicMissing",
  KafkaUnavailable: "KafkaUnavailable",
  KafkaCredentialsMissing: "KafkaCredentialsMissing",
  IncompatibleStateChange: "IncompatibleStateChange",
  ResettingState: "ResettingState",
  StateReset: "StateReset",
  Deleting: "Deleting",
  Healthy: "Healthy",
} as const;

/** An error worth its own metric label: a Kafka call failed (and was reported in status). */
export class KafkaCallError extends Error {
  override name = "KafkaCallError";
}

/** Keeps lastTransitionTime when the status of a condition did not change. */
export function setCondition(existing: PipelineCondition[] | undefined, next: PipelineCondition): PipelineCondition[] {
  const prev = existing?.find((c) => c.type === next.type);
  const merged = prev && prev.status === next.status ? { ...next, lastTransitionTime: prev.lastTransitionTime } : next;
  return [...(existing ?? []).filter((c) => c.type !== next.type), merged];
}

type ConditionInput = Omit<PipelineCondition, "lastTransitionTime" | "observedGeneration">;

export const MAX_CONDITION_MESSAGE = 4096;

/**
 * A message the apiserver will take: well-formed Unicode (an error quoting half of an emoji carries a lone
 * surrogate, which the apply patch's YAML decoder refuses) and of bounded length.
 */
export function conditionMessage(message: string): string {
  const wellFormed = message.toWellFormed();
  return wellFormed.length <= MAX_CONDITION_MESSAGE ? wellFormed : `${wellFormed.slice(0, MAX_CONDITION_MESSAGE - 1)}…`;
}

function conditions(p: StreamPipeline, now: Date, list: ConditionInput[]): PipelineCondition[] {
  let out = p.status?.conditions;
  for (const c of list)
    out = setCondition(out, { ...c, message: conditionMessage(c.message), observedGeneration: p.metadata?.generation, lastTransitionTime: now.toISOString() });
  return out ?? [];
}

/** `scaling` is the lag autoscaler's record (lag mode only); its lag is the pipeline's. */
export function statusFor(p: StreamPipeline, sts: V1StatefulSet, now: Date, scaling?: ScalingStatus, more: ConditionInput[] = []): StreamPipelineStatus {
  const desired = sts.spec?.replicas ?? 0;
  const ready = sts.status?.readyReplicas ?? 0;
  const current = sts.status?.replicas ?? 0;
  const updated = sts.status?.updatedReplicas ?? current;
  const observed = (sts.status?.observedGeneration ?? 0) >= (sts.metadata?.generation ?? 0);
  const rolledOut = observed && current === desired && updated === desired;
  const allReady = rolledOut && ready >= desired;
  const readyReason = p.spec.suspend ? Reasons.Suspended : desired === 0 ? Reasons.ScaledToZero : allReady ? Reasons.WorkersReady : Reasons.WorkersStarting;
  return {
    observedGeneration: p.metadata?.generation,
    consumerGroup: consumerGroupOf(p),
    replicas: current,
    readyReplicas: ready,
    selector: selectorString(p),
    ...(scaling?.lag !== undefined ? { lag: scaling.lag } : {}),
    ...(scaling ? { scaling } : {}),
    conditions: conditions(p, now, [
      { type: "Ready", status: allReady ? "True" : "False", reason: readyReason, message: `${ready} of ${desired} workers ready` },
      {
        type: "Progressing",
        status: rolledOut ? "False" : "True",
        reason: rolledOut ? Reasons.UpToDate : Reasons.RollingOut,
        message: rolledOut ? "all workers run the current configuration" : `${updated} of ${desired} workers updated`,
      },
      { type: "Degraded", status: "False", reason: Reasons.Healthy, message: "the topology compiles and Kafka answers" },
      ...more,
    ]),
  };
}

/** The status as it was, with new conditions: for a pipeline whose workers this reconcile does not touch. */
function statusWith(p: StreamPipeline, now: Date, list: ConditionInput[]): StreamPipelineStatus {
  return {
    ...p.status,
    observedGeneration: p.metadata?.generation,
    consumerGroup: consumerGroupOf(p),
    selector: selectorString(p),
    conditions: conditions(p, now, list),
  };
}

/** The status of a pipeline that cannot run as specified: say why, and leave the running workers alone. */
export function blockedStatus(p: StreamPipeline, reason: string, message: string, now: Date): StreamPipelineStatus {
  return statusWith(p, now, [
    { type: "Ready", status: "False", reason, message },
    { type: "Degraded", status: "True", reason, message },
  ]);
}

/** The status of a pipeline that stopped its workers on purpose for a while: not ready, progressing, not degraded. */
export function pausedStatus(p: StreamPipeline, reason: string, message: string, now: Date): StreamPipelineStatus {
  return statusWith(p, now, [
    { type: "Ready", status: "False", reason, message },
    { type: "Progressing", status: "True", reason, message },
    { type: "Degraded", status: "False", reason, message },
  ]);
}

function meta(p: StreamPipeline): { namespace: string; name: string } {
  return { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" };
}

/**
 * Where the pipeline lives and how its internal topics are named. A pipeline that an earlier operator ran (it has
 * a status without internalTopics), or whose recorded topics have the earlier names, keeps those names: its state
 * is in them. Every other pipeline gets the collision-free names (topology/compile.ts: internalPrefix).
 */
export function pipelineMeta(p: StreamPipeline): PipelineMeta {
  const m = meta(p);
  const ranBefore = p.status?.observedGeneration !== undefined && p.status.internalTopics === undefined;
  const legacy = internalPrefix({ ...m, legacyNames: true });
  const recordedLegacy = (p.status?.internalTopics ?? []).some((t) => t.name.startsWith(legacy));
  return ranBefore || recordedLegacy ? { ...m, legacyNames: true } : m;
}

/** The work-queue key of a pipeline, which the autoscaler keys its memory by too. */
export function pipelineKey(p: StreamPipeline): string {
  return `${p.metadata?.namespace}/${p.metadata?.name}`;
}

function pipelineLabels(p: StreamPipeline): PipelineLabels {
  const { namespace, name } = meta(p);
  return { namespace, pipeline: name };
}

function wantsCleanup(p: StreamPipeline): boolean {
  return (p.spec.state?.retention?.whenDeleted ?? SPEC_DEFAULTS["state.retention.whenDeleted"]) === "Delete";
}

/** The internal topics with their partition counts: the key-group count is partitions.max, or the widest source. */
export function internalTopicRequests(t: CompiledTopology, sourcePartitions: number, partitionsMax?: number): TopicRequest[] {
  const keyGroups = Math.max(partitionsMax ?? 0, sourcePartitions, 1);
  const out: TopicRequest[] = [];
  for (const s of t.steps) {
    // Kept until every reader has committed past them, then purged by the workers (DeleteRecords). The broker
    // frees a segment once it lies wholly below the log start: Kafka Streams' repartition segment size and roll
    // time keep that from waiting for a 1 GB segment to fill.
    if (s.kind === "keyBy")
      out.push({
        name: s.repartitionTopic,
        partitions: keyGroups,
        configs: { "cleanup.policy": "delete", "retention.ms": "-1", "segment.bytes": "52428800", "segment.ms": "600000" },
      });
    // A window store's changelog gets no tombstone for a closed window (its segment is dropped whole): the
    // broker deletes it after the retention, and compacts the rest. A table's and a join's are compacted and kept.
    if (s.kind === "window" || s.kind === "join") {
      const retentionMs = changelogRetentionMs(s);
      out.push({
        name: s.changelogTopic,
        partitions: keyGroups,
        configs:
          retentionMs === undefined
            ? { "cleanup.policy": "compact", "retention.ms": "-1" }
            : { "cleanup.policy": "compact,delete", "retention.ms": String(retentionMs) },
      });
    }
  }
  return out;
}

/**
 * status.sources: each source topic's partition count now, and the count it had when first seen, which is
 * kept. A topic that could not be counted keeps its last entry; one the pipeline no longer reads goes.
 */
export function sourcesStatus(
  previous: StreamPipelineStatus["sources"],
  topics: readonly string[],
  counts: ReadonlyMap<string, number>,
): NonNullable<StreamPipelineStatus["sources"]> {
  const out = new Map((previous ?? []).filter((s) => topics.includes(s.topic)).map((s) => [s.topic, s]));
  for (const [topic, partitions] of counts)
    if (topics.includes(topic)) out.set(topic, { topic, partitions, initialPartitions: out.get(topic)?.initialPartitions ?? partitions });
  return [...out.values()];
}

/** Runs a Kafka call; a failure is written to status and rethrown, so that the queue retries with backoff. */
async function kafkaCall<T>(p: StreamPipeline, ctx: Context, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const message = `${what}: ${errorMessage(err)}`;
    await ctx.event(p, "Warning", Reasons.KafkaUnavailable, message);
    await ctx.applyStatus(p, blockedStatus(p, Reasons.KafkaUnavailable, message, ctx.now()));
    throw new KafkaCallError(message, { cause: err });
  }
}

/**
 * The digest of the Secrets the workers read. A missing Secret or key shows in status and as an event, naming
 * them (never a value), and is retried with the queue's backoff: creating the Secret is enough.
 */
async function workerSecrets(p: StreamPipeline, ctx: Context): Promise<string> {
  try {
    return await ctx.secretsVersion(p);
  } catch (err) {
    if (!(err instanceof CredentialsError)) throw err;
    const message = `${err.message}: the workers cannot connect to Kafka without it`;
    await ctx.event(p, "Warning", Reasons.KafkaCredentialsMissing, message);
    await ctx.applyStatus(p, blockedStatus(p, Reasons.KafkaCredentialsMissing, message, ctx.now()));
    throw new KafkaCallError(message, { cause: err });
  }
}

/** What the lag autoscaler says for this reconcile; empty outside lag mode, where spec.replicas holds. */
interface Scaling {
  /** the replicas for the StatefulSet */
  replicas?: number;
  /** status.scaling */
  status?: ScalingStatus;
  /** a decision this reconcile made, to be announced once the StatefulSet carries it */
  decision?: Decision;
  /** when to read the lag again */
  requeueAfterMs?: number;
  /** partition counts of the topics the lag reader read, with grown ones at their new counts */
  partitions?: Map<string, number>;
  /** the condition ScalingLimited */
  limit?: LimitCondition;
}

function scalingMode(p: StreamPipeline): "fixed" | "external" | "lag" {
  return p.spec.scaling?.mode ?? SPEC_DEFAULTS["scaling.mode"];
}

/** The replicas that run before the autoscaler's first decision: the StatefulSet's, or the spec's within bounds. */
function replicasBeforeScaling(p: StreamPipeline): number {
  if (p.status?.replicas !== undefined) return p.status.replicas;
  const min = p.spec.scaling?.minReplicas ?? SPEC_DEFAULTS["scaling.minReplicas"];
  const max = p.spec.scaling?.maxReplicas ?? SPEC_DEFAULTS["scaling.maxReplicas"];
  return Math.min(Math.max(specReplicas(p), min), max);
}

/**
 * Lag mode: reads the group's lag and decides the replicas, at most once per poll interval. Fixed and external
 * modes leave the replicas to spec.replicas, which a user, an HPA or KEDA writes through the scale subresource:
 * the operator never fights them, and never writes the spec (a GitOps tool would see it drift).
 */
async function autoscale(p: StreamPipeline, ctx: Context, topology: CompiledTopology): Promise<Scaling> {
  const key = pipelineKey(p);
  const remembered = ctx.autoscaler.last(key, p.metadata?.uid ?? "");
  if (scalingMode(p) !== "lag") {
    if (remembered || p.status?.scaling) {
      ctx.autoscaler.forget(key);
      await forgetScaling(ctx.metrics, pipelineLabels(p));
    }
    return {};
  }
  const last = newestScaling(p.status?.scaling, remembered);
  // Suspended workers are not scaled; they come back to the replicas last decided.
  if (p.spec.suspend) return last ? { status: last } : {};
  const now = ctx.now().getTime();
  // Every change of the workers brings a reconcile too: the lag is read at most once per interval, so that
  // each rate spans one and the queue does not spin on the status this very step writes.
  const age = last ? now - Date.parse(last.sampleTime) : Number.NaN;
  if (last && age >= 0 && age < POLL_INTERVAL_MS) return { replicas: last.desired, status: last, requeueAfterMs: POLL_INTERVAL_MS - age };
  const conn = await ctx.connectionFor(p);
  const reading = await ctx.autoscaler.poll(key, lagTargetFor(p, topology, conn));
  const current = last?.desired ?? replicasBeforeScaling(p);
  const internalTopics = new Set(topology.internalTopics);
  const inputs = { rates: reading.rates, current, maxParallelism: maxParallelismOf(reading.sample.endOffsets), internalTopics };
  const state = policyStateOf(last);
  let decision = decide(p.spec, inputs, state, now);
  const partitions = p.spec.scaling?.partitions;
  const autoGrow = (partitions?.autoGrow ?? SPEC_DEFAULTS["scaling.partitions.autoGrow"]) && partitions?.max !== undefined;
  let plan: GrowthPlan | undefined;
  let counts = reading.sample.endOffsets ? partitionCountsOf(reading.sample.endOffsets.keys()) : new Map<string, number>();
  if (autoGrow && (decision.cappedBy === "partitions" || decision.cappedBy === "partitionSkew")) {
    // Only topics whose first count is on record: a worker must know their added partitions from the old ones.
    const recorded = new Set((p.status?.sources ?? []).map((s) => s.topic));
    const sources = new Map([...counts].filter(([t]) => !internalTopics.has(t)));
    plan = planGrowth(
      reading.rates,
      decision.perReplicaRate,
      {
        sources,
        unrecorded: new Set([...sources.keys()].filter((t) => !recorded.has(t))),
        max: partitions?.max as number,
        maxReplicas: p.spec.scaling?.maxReplicas ?? SPEC_DEFAULTS["scaling.maxReplicas"],
        targetCatchUpMs: targetCatchUpMs(p.spec),
      },
      reading.previousRates,
    );
    if (plan.grow.size > 0) {
      await grow(p, ctx, conn, plan.grow, counts);
      const projected = projectGrowth(reading.rates, plan.grow);
      counts = partitionCountsOf(projected.partitionLag?.keys() ?? []);
      decision = decide(p.spec, { ...inputs, rates: projected, maxParallelism: Math.max(0, ...counts.values()) }, state, now);
    }
  }
  const status = scalingStatusOf(decision, { sampleAt: reading.sample.at, errors: reading.errors });
  if (reading.errors.length > 0) ctx.log.warn("lag reads failed; their part counts as unknown", { pipeline: key, errors: reading.errors });
  // A hold computes no target, so it says nothing about limits: the condition stays as the last target left it.
  const held = decision.reason === "HoldRebalance" || decision.reason.startsWith("Unknown");
  const limit = held ? undefined : scalingLimited({ decision, partitions: counts, internalTopics, autoGrow, max: partitions?.max, plan });
  return {
    replicas: status.desired,
    status,
    decision,
    requeueAfterMs: POLL_INTERVAL_MS,
    ...(limit ? { limit } : {}),
    partitions: counts,
  };
}

/** Adds partitions to source topics, one Event each; a failure shows in status and is retried with backoff. */
async function grow(
  p: StreamPipeline,
  ctx: Context,
  conn: KafkaConnection,
  plan: ReadonlyMap<string, number>,
  before: ReadonlyMap<string, number>,
): Promise<void> {
  for (const [topic, count] of plan) {
    await kafkaCall(p, ctx, `adding partitions to ${topic}`, () => ctx.kafka.growTopic(conn, topic, count));
    const from = before.get(topic);
    ctx.log.info("grew a source topic", { pipeline: pipelineKey(p), topic, from, to: count });
    await ctx.event(
      p,
      "Normal",
      "PartitionsGrown",
      `grew ${topic} from ${from} to ${count} partitions: they capped the workers the lag asks for. Records in the new partitions are read from their start`,
      `${topic}:${count}`,
    );
  }
}

/**
 * With whenScaled Retain: marks the state volumes of workers a scale-down removed, deletes them once
 * orphanTTL is up, and clears the mark of one whose worker came back. Suspended workers keep their volumes
 * unmarked: a suspension is not a scale-down. Returns the orphans that stay and when to look again.
 */
async function tendStateVolumes(
  p: StreamPipeline,
  ctx: Context,
  replicas: number,
  volumes: StateVolume[],
): Promise<{ orphaned: VolumePlan["orphaned"]; requeueAfterMs?: number }> {
  const retention = p.spec.state?.retention;
  if ((retention?.whenScaled ?? SPEC_DEFAULTS["state.retention.whenScaled"]) !== "Retain" || p.spec.suspend) return { orphaned: [] };
  const { namespace, name } = meta(p);
  const ttlMs = retention?.orphanTTL === undefined ? undefined : (parseDuration(retention.orphanTTL) ?? undefined);
  let plan = planVolumes(volumes, name, replicas, ttlMs, ctx.now().getTime());
  // A cached view may be a moment behind a mark this operator made: before any write, the volumes as they are now.
  if (plan.mark.length + plan.unmark.length + plan.remove.length > 0)
    plan = planVolumes(await ctx.listStateVolumes(namespace, selectorString(p), true), name, replicas, ttlMs, ctx.now().getTime());
  const at = ctx.now().toISOString();
  for (const v of plan.mark) {
    await ctx.markStateVolume(namespace, v, at);
    await ctx.event(
      p,
      "Normal",
      "StateVolumeOrphaned",
      `${v}: its worker was scaled away; kept for ${retention?.orphanTTL} in case it comes back`,
      `${v}@${at}`,
    );
  }
  for (const v of plan.unmark) {
    await ctx.markStateVolume(namespace, v, null);
    await ctx.event(p, "Normal", "StateVolumeReused", `${v}: its worker is back before the orphanTTL, and restores from the state it kept`, `${v}@${at}`);
  }
  for (const v of plan.remove) {
    await ctx.deleteStateVolume(namespace, v);
    ctx.log.info("deleted an orphaned state volume", { pipeline: pipelineKey(p), volume: v, orphanTTL: retention?.orphanTTL });
    await ctx.event(p, "Normal", "StateVolumeDeleted", `${v}: orphaned for longer than the orphanTTL (${retention?.orphanTTL})`, `${v}@${at}`);
  }
  return { orphaned: plan.orphaned, ...(plan.nextExpiryMs !== undefined ? { requeueAfterMs: plan.nextExpiryMs } : {}) };
}

const claimSize = (sts: V1StatefulSet | undefined) => sts?.spec?.volumeClaimTemplates?.[0]?.spec?.resources?.requests?.storage;

/**
 * A new state.storage.size. A StatefulSet's volumeClaimTemplates cannot change, so: each PVC's request is
 * raised in place (refused where the StorageClass does not allow expansion, which the condition then says), and
 * the StatefulSet is deleted with its pods orphaned, to be created again with the new template by a later
 * reconcile; it adopts the running pods, which are not restarted. A smaller size is refused: volumes do not
 * shrink: `desired` keeps the old size. Called when the apiserver refused the StatefulSet as an update it
 * cannot make; "replacing" while the old StatefulSet is still going, "kept" when `desired` now carries the
 * old size, "unrelated" when the refusal was about something else.
 */
async function resizeStateVolumes(p: StreamPipeline, ctx: Context, desired: V1StatefulSet): Promise<"replacing" | "kept" | "unrelated"> {
  const { namespace, name } = meta(p);
  const existing = await ctx.readStatefulSet(namespace, name);
  if (!existing) return "unrelated";
  if (existing.metadata?.deletionTimestamp) return "replacing";
  const from = claimSize(existing);
  const to = claimSize(desired);
  const fromBytes = from === undefined ? undefined : parseBytes(from);
  const toBytes = to === undefined ? undefined : parseBytes(to);
  if (from === undefined || to === undefined || fromBytes === undefined || toBytes === undefined || toBytes === fromBytes) return "unrelated";
  const template = desired.spec?.volumeClaimTemplates?.[0]?.spec?.resources?.requests;
  if (toBytes < fromBytes) {
    await ctx.event(
      p,
      "Warning",
      "StateVolumeShrinkRefused",
      `state.storage.size ${to} is below the volumes' ${from}: volumes do not shrink, so they keep ${from}`,
    );
    if (template) template.storage = from;
    return "kept";
  }
  const raised: string[] = [];
  for (const v of await ctx.listStateVolumes(namespace, selectorString(p), true)) {
    const requested = v.requested === undefined ? undefined : parseBytes(v.requested);
    if (v.deleting || (requested !== undefined && requested >= toBytes)) continue;
    try {
      await ctx.resizeStateVolume(namespace, v.name, to);
      raised.push(v.name);
    } catch (err) {
      // Refused where the StorageClass does not allow expansion: the condition says so from the PVC itself.
      const code = statusCode(err);
      if (code !== 403 && code !== 422) throw err;
      ctx.log.warn("a state volume's request could not be raised", { pipeline: pipelineKey(p), volume: v.name, error: errorMessage(err) });
    }
  }
  await ctx.orphanStatefulSet(namespace, name);
  ctx.log.info("replacing the StatefulSet for a new volume size", { pipeline: pipelineKey(p), from, to, raised });
  await ctx.event(
    p,
    "Normal",
    "StateVolumesResized",
    `state.storage.size ${from} -> ${to}: raised ${raised.length > 0 ? raised.join(", ") : "no volume"} in place, and replaced the StatefulSet (its volume claim template cannot change) without restarting its pods`,
  );
  return "replacing";
}

/** Applies the StatefulSet; one refused for a new volume size is resized and replaced (undefined meanwhile). */
async function applyStatefulSet(p: StreamPipeline, ctx: Context, desired: V1StatefulSet): Promise<V1StatefulSet | undefined> {
  try {
    return await ctx.apply(desired);
  } catch (err) {
    if (statusCode(err) !== 422) throw err;
    const outcome = await resizeStateVolumes(p, ctx, desired);
    if (outcome === "unrelated") throw err;
    return outcome === "kept" ? await ctx.apply(desired) : undefined;
  }
}

/** Records a decision the StatefulSet now carries: in memory, in metrics and, when the replicas changed, as an Event. */
async function announce(p: StreamPipeline, ctx: Context, decision: Decision, status: ScalingStatus): Promise<void> {
  ctx.autoscaler.remember(pipelineKey(p), p.metadata?.uid ?? "", status);
  observeScaling(ctx.metrics, pipelineLabels(p), status);
  const event = scaleEventOf(decision, p.spec);
  if (!event) return;
  ctx.log.info("scaled the workers", { pipeline: pipelineKey(p), from: status.current, to: status.desired, reason: status.reason, lag: status.lag });
  // Each decision is its own Event: the generation does not change when the operator scales.
  await ctx.event(p, "Normal", event.reason, event.message, `${status.current}->${status.desired}@${status.sampleTime}`);
}

/**
 * A pipeline that ran under an earlier operator has no record of the topics it created: it adopts those of its
 * (earlier) names that exist now, with their ids, and says so. Where two such pipelines shared a topic, both
 * record it, and the finalizer of either leaves it to the other.
 */
async function adoptLegacyTopics(p: StreamPipeline, ctx: Context, topology: CompiledTopology): Promise<StreamPipeline> {
  const conn = await ctx.connectionFor(p);
  const ids = await kafkaCall(p, ctx, "reading the ids of internal topics", () => ctx.kafka.topicIds(conn, topology.internalTopics));
  const internalTopics = [...ids].map(([name, topicId]) => ({ name, topicId }));
  const status = { ...p.status, internalTopics };
  await ctx.applyStatus(p, status);
  if (internalTopics.length > 0) {
    await ctx.event(
      p,
      "Normal",
      "LegacyTopicNames",
      `keeps the internal topic names it ran with (${internalTopics.map((t) => t.name).join(", ")}); a new pipeline gets names no other pipeline can share`,
    );
  }
  return { ...p, status };
}

/**
 * The internal topics the finalizer may delete: those this pipeline recorded, less any that another pipeline
 * records too (two pipelines under the earlier names could share one). A pipeline with no record (deleted before
 * this operator reconciled it) has its names' topics, less those another pipeline records or would name alike.
 */
async function topicsToDelete(p: StreamPipeline, ctx: Context, conn: KafkaConnection): Promise<{ delete: TopicRef[]; claimed: string[] }> {
  const others = ctx.pipelines().filter((o) => o.metadata?.uid !== p.metadata?.uid);
  const claimedIds = new Set(others.flatMap((o) => (o.status?.internalTopics ?? []).map((t) => t.topicId)));
  const claimedNames = new Set(
    others.flatMap((o) => {
      const names = internalTopicNames(o.spec, pipelineMeta(o));
      return [...(o.status?.internalTopics ?? []).map((t) => t.name), ...names.repartition, ...names.changelog];
    }),
  );
  let recorded = p.status?.internalTopics;
  if (recorded === undefined) {
    const names = internalTopicNames(p.spec, pipelineMeta(p));
    const ids = await ctx.kafka.topicIds(
      conn,
      [...names.repartition, ...names.changelog].filter((n) => !claimedNames.has(n)),
    );
    recorded = [...ids].map(([name, topicId]) => ({ name, topicId }));
  }
  return {
    delete: recorded.filter((t) => !claimedIds.has(t.topicId)),
    claimed: recorded.filter((t) => claimedIds.has(t.topicId)).map((t) => t.name),
  };
}

async function finalize(p: StreamPipeline, ctx: Context): Promise<Action> {
  const { namespace, name } = meta(p);
  // Workers first: a consumer group with members cannot be deleted.
  await ctx.deleteStatefulSet(namespace, name);
  const pods = await ctx.countPods(namespace, selectorString(p));
  if (pods > 0) {
    const waiting = `deleting: waiting for ${pods} workers to stop`;
    await ctx.applyStatus(p, pausedStatus(p, Reasons.Deleting, waiting, ctx.now()));
    return waitFor(waiting);
  }
  const release = () =>
    ctx.setFinalizers(
      p,
      (p.metadata?.finalizers ?? []).filter((f) => f !== CLEANUP_FINALIZER),
    );
  // What the cleanup could not do is said, and the pipeline goes anyway: without its credentials (a Secret gone
  // first, as in a namespace's deletion) it never could, and after FINALIZE_KAFKA_DEADLINE_MS of refusals it
  // would hold the pipeline (and its namespace) for ever.
  const skip = async (why: string) => {
    const left = [`consumer group ${consumerGroupOf(p)}`, ...(p.status?.internalTopics ?? []).map((t) => `topic ${t.name}`)];
    ctx.log.warn("left Kafka as it was for a deleted pipeline", { pipeline: `${namespace}/${name}`, why, left });
    await ctx.event(p, "Warning", "KafkaCleanupSkipped", `${why}; left on the cluster: ${left.join(", ")}`);
    await release();
    return done;
  };
  let conn: KafkaConnection;
  try {
    conn = await ctx.connectionFor(p);
  } catch (err) {
    if (err instanceof CredentialsError) return skip(`no credentials to reach Kafka: ${err.message}`);
    throw err;
  }
  let cleaned: { deleted: string[]; kept: string[] };
  try {
    const mine = await topicsToDelete(p, ctx, conn);
    await ctx.kafka.deleteGroup(conn, consumerGroupOf(p));
    const { deleted, otherId } = await ctx.kafka.deleteTopics(conn, mine.delete);
    cleaned = { deleted, kept: [...mine.claimed, ...otherId] };
  } catch (err) {
    const since = Date.parse(String(p.metadata?.deletionTimestamp ?? ""));
    if (Number.isFinite(since) && ctx.now().getTime() - since > FINALIZE_KAFKA_DEADLINE_MS) {
      return skip(`Kafka refused the cleanup for ${FINALIZE_KAFKA_DEADLINE_MS / 60_000} minutes: ${errorMessage(err)}`);
    }
    throw err;
  }
  const { deleted, kept } = cleaned;
  ctx.log.info("cleaned up after a deleted pipeline", { pipeline: `${namespace}/${name}`, group: consumerGroupOf(p), deleted, kept });
  await ctx.event(
    p,
    "Normal",
    "CleanedUp",
    `deleted consumer group ${consumerGroupOf(p)} and internal topics ${deleted.join(", ") || "(none)"}${
      kept.length > 0 ? `; kept ${kept.join(", ")}: another pipeline's, or created again since` : ""
    }`,
  );
  await release();
  return done;
}

/** How long the finalizer retries a Kafka that refuses its cleanup before it lets the pipeline go. */
export const FINALIZE_KAFKA_DEADLINE_MS = 10 * 60_000;

/**
 * Discards the state of steps whose schema changed: the workers stop first (a consumer may not write to a
 * changelog that is being deleted), then the changelog topics go, and the normal path creates them empty. The
 * new stores start empty too: their directories are named by the new hash. Returns an action while it waits.
 */
async function resetState(p: StreamPipeline, ctx: Context, topology: CompiledTopology, changes: StateSchemaChange[]): Promise<Action | undefined> {
  const { namespace, name } = meta(p);
  const progress = (message: string) => ctx.applyStatus(p, pausedStatus(p, Reasons.ResettingState, message, ctx.now()));
  await ctx.apply(statefulSetFor({ ...p, spec: { ...p.spec, suspend: true } }, topology, ctx.config));
  const pods = await ctx.countPods(namespace, selectorString(p));
  if (pods > 0) {
    const waiting = `resetting state: waiting for ${pods} workers to stop`;
    await progress(waiting);
    return waitFor(waiting);
  }
  const conn = await ctx.connectionFor(p);
  const changelogs = new Set(changes.map((c) => c.changelogTopic));
  // Only changelogs this pipeline created; one it did not create is not its state to discard.
  const ours = (p.status?.internalTopics ?? []).filter((t) => changelogs.has(t.name));
  await kafkaCall(p, ctx, "deleting changelog topics for a state reset", () => ctx.kafka.deleteTopics(conn, ours));
  const now = await kafkaCall(p, ctx, "reading changelog topics", () =>
    ctx.kafka.topicIds(
      conn,
      ours.map((t) => t.name),
    ),
  );
  const left = ours.filter((t) => now.get(t.name) === t.topicId);
  if (left.length > 0) {
    const waiting = `resetting state: waiting for the broker to delete ${left.map((t) => t.name).join(", ")}`;
    await progress(waiting);
    return waitFor(waiting);
  }
  const internalTopics = (p.status?.internalTopics ?? []).filter((t) => !changelogs.has(t.name));
  await ctx.applyStatus(p, { ...p.status, internalTopics });
  ctx.log.info("state reset", { pipeline: `${namespace}/${name}`, steps: changes.map((c) => c.step) });
  return undefined;
}

export async function reconcile(pipeline: StreamPipeline, ctx: Context): Promise<Action> {
  let p = pipeline;
  const finalizers = p.metadata?.finalizers ?? [];
  const hasFinalizer = finalizers.includes(CLEANUP_FINALIZER);
  if (p.metadata?.deletionTimestamp) return hasFinalizer ? finalize(p, ctx) : done;
  // The finalizer goes on before anything outside Kubernetes exists, so that nothing can leak.
  if (wantsCleanup(p) !== hasFinalizer) {
    await ctx.setFinalizers(p, hasFinalizer ? finalizers.filter((f) => f !== CLEANUP_FINALIZER) : [...finalizers, CLEANUP_FINALIZER]);
    return done; // the update brings a new event, and a reconcile of the updated object
  }

  const naming = pipelineMeta(p);
  // From its first reconcile, a pipeline's status records the internal topics it created (none yet): every
  // status written from here on carries the record, and with it the naming.
  if (!naming.legacyNames && p.status?.internalTopics === undefined) p = { ...p, status: { ...p.status, internalTopics: [] } };
  const compiled = validatePipeline(p.spec, naming, ctx.config);
  if (!compiled.ok) {
    const errors = compiled.errors.map(formatCompileError);
    ctx.log.warn("topology does not compile", { pipeline: `${p.metadata?.namespace}/${p.metadata?.name}`, errors });
    await ctx.event(p, "Warning", Reasons.InvalidTopology, errors.join("; "));
    await ctx.applyStatus(p, blockedStatus(p, Reasons.InvalidTopology, errors.join("; "), ctx.now()));
    // A spec that cannot compile is not retried: the next edit brings a new generation and a new reconcile.
    return done;
  }
  const topology = compiled.topology;
  const secrets = await workerSecrets(p, ctx);
  if (p.status?.internalTopics === undefined) p = await adoptLegacyTopics(p, ctx, topology);
  const changes = incompatibleSteps(p.status?.stateSchemas, topology);
  if (changes.length > 0) {
    const token = p.spec.state?.resetToken;
    if (!resetRequested(token, p.status?.stateResetToken)) {
      const message = `${changes.map((c) => `step "${c.step}" changed its state schema (${c.from} -> ${c.to})`).join("; ")}: its window, aggregations, key or format no longer match the state it keeps. Revert the change, or set spec.state.resetToken to a new value to discard that state.`;
      await ctx.event(p, "Warning", Reasons.IncompatibleStateChange, message);
      // The running workers keep the topology they have: nothing below is applied.
      await ctx.applyStatus(p, blockedStatus(p, Reasons.IncompatibleStateChange, message, ctx.now()));
      return done;
    }
    const pending = await resetState(p, ctx, topology, changes);
    if (pending) return pending;
    const status: StreamPipelineStatus = { ...p.status, stateSchemas: acceptedSchemas(p.status?.stateSchemas, topology), stateResetToken: token };
    // Recorded before any worker starts again, so that a retry never deletes state the new workers wrote.
    await ctx.applyStatus(p, status);
    p = { ...p, status };
    await ctx.event(
      p,
      "Normal",
      Reasons.StateReset,
      `discarded the state of ${changes.map((c) => `step "${c.step}" (${c.changelogTopic})`).join(", ")} for resetToken ${token}`,
    );
  }
  // Each source topic's partition count, for status.sources: the lag reader's in lag mode, where it reads them
  // every few seconds with short timeouts; otherwise read here, once for a topic not yet on record.
  let counts = new Map<string, number>();
  const unrecorded = sourceTopicsOf(topology).some((t) => !p.status?.sources?.some((s) => s.topic === t));
  // Kafka answers with the pipeline's credentials, and its sources exist: checked at every reconcile of every
  // pipeline (in lag mode, the lag reader's poll checks in between). A stateful pipeline cannot run without its
  // internal topics and waits; a stateless one gets its workers anyway (they may reach what the operator cannot),
  // with Degraded saying why, and the reconcile is retried with the queue's backoff.
  let kafkaProblem: string | undefined;
  if (topology.internalTopics.length > 0 || scalingMode(p) !== "lag" || unrecorded) {
    const conn = await ctx.connectionFor(p);
    // the global inputs' topics too: they must exist, but they count in no partition count of the pipeline's
    const globalTopics = globalInputs(topology).flatMap((i) => i.topics);
    const read = () => ctx.kafka.partitionCounts(conn, [...sourceTopicsOf(topology), ...globalTopics]);
    let found: Map<string, number> = new Map();
    if (topology.internalTopics.length > 0) found = await kafkaCall(p, ctx, "reading source partitions", read);
    else {
      try {
        found = await read();
      } catch (err) {
        kafkaProblem = `reading source partitions: ${errorMessage(err)}`;
        await ctx.event(p, "Warning", Reasons.KafkaUnavailable, kafkaProblem);
      }
    }
    counts = new Map([...found].filter(([t]) => !globalTopics.includes(t)));
    const missing = kafkaProblem ? [] : [...sourceTopicsOf(topology), ...globalTopics].filter((t) => !found.has(t));
    if (missing.length > 0) {
      const message = `source topics do not exist: ${missing.join(", ")}`;
      await ctx.event(p, "Warning", Reasons.SourceTopicMissing, message);
      await ctx.applyStatus(p, blockedStatus(p, Reasons.SourceTopicMissing, message, ctx.now()));
      return requeueAfter(10_000);
    }
    if (topology.internalTopics.length > 0) {
      const requests = internalTopicRequests(topology, Math.max(...counts.values()), p.spec.scaling?.partitions?.max);
      const { created, reconfigured } = await kafkaCall(p, ctx, "creating or configuring internal topics", () => ctx.kafka.ensureTopics(conn, requests));
      if (created.length > 0) {
        // On record at once: a topic this pipeline created is one it may delete, and only such a topic.
        const names = new Set(created.map((t) => t.name));
        const status = { ...p.status, internalTopics: [...(p.status?.internalTopics ?? []).filter((t) => !names.has(t.name)), ...created] };
        await ctx.applyStatus(p, status);
        p = { ...p, status };
        ctx.log.info("created internal topics", { pipeline: pipelineKey(p), topics: created });
        await ctx.event(p, "Normal", "InternalTopicsCreated", `created ${created.map((t) => `${t.name} (id ${t.topicId})`).join(", ")}`);
      }
      if (reconfigured.length > 0) {
        ctx.log.info("set the configs of internal topics", { pipeline: pipelineKey(p), topics: reconfigured });
        await ctx.event(p, "Normal", "InternalTopicsReconfigured", `set the configs of ${reconfigured.join(", ")}`);
      }
    }
  }

  const scaling = await autoscale(p, ctx, topology);
  for (const [topic, n] of scaling.partitions ?? []) counts.set(topic, n);
  p = { ...p, status: { ...p.status, sources: sourcesStatus(p.status?.sources, sourceTopicsOf(topology), counts) } };
  await ctx.apply(configMapFor(p, topology));
  await ctx.apply(serviceFor(p));
  await ctx.apply(podDisruptionBudgetFor(p));
  const sts = await applyStatefulSet(p, ctx, statefulSetFor(p, topology, ctx.config, scaling.replicas, secrets));
  if (!sts) {
    const waiting = "replacing the StatefulSet for a new volume size; the workers run on";
    await ctx.applyStatus(p, pausedStatus(p, "ReplacingStatefulSet", waiting, ctx.now()));
    return waitFor(waiting);
  }
  if (scaling.decision && scaling.status) await announce(p, ctx, scaling.decision, scaling.status);
  const stateVolumes = await ctx.listStateVolumes(p.metadata?.namespace ?? "", selectorString(p));
  const volumes = await tendStateVolumes(p, ctx, sts.spec?.replicas ?? 0, stateVolumes);
  const hadResize = p.status?.conditions?.some((c) => c.type === "StateVolumesResizing") ?? false;
  const resizing = resizeCondition(stateVolumes, claimSize(sts) ?? "", hadResize);
  // Out of lag mode no partition limit is judged: the condition goes.
  if (scalingMode(p) !== "lag" && p.status?.conditions?.some((c) => c.type === "ScalingLimited"))
    p = { ...p, status: { ...p.status, conditions: p.status.conditions.filter((c) => c.type !== "ScalingLimited") } };
  const status: StreamPipelineStatus = {
    ...statusFor(p, sts, ctx.now(), scaling.status, [
      ...(scaling.limit ? [{ type: "ScalingLimited", ...scaling.limit }] : []),
      ...(resizing ? [{ type: "StateVolumesResizing", ...resizing }] : []),
      ...(kafkaProblem ? [{ type: "Degraded", status: "True" as const, reason: Reasons.KafkaUnavailable, message: kafkaProblem }] : []),
    ]),
    stateSchemas: acceptedSchemas(p.status?.stateSchemas, topology),
    ...(p.status?.sources?.length ? { sources: p.status.sources } : {}),
    ...(volumes.orphaned.length > 0 ? { orphanedVolumes: volumes.orphaned } : {}),
    ...(p.status?.internalTopics ? { internalTopics: p.status.internalTopics } : {}),
    ...(p.status?.stateResetToken !== undefined ? { stateResetToken: p.status.stateResetToken } : {}),
  };
  await ctx.applyStatus(p, status);
  // the workers are applied and the status says why: now the queue's backoff for another look at Kafka
  if (kafkaProblem) throw new KafkaCallError(kafkaProblem);
  const ready = status.conditions?.find((c) => c.type === "Ready")?.status === "True";
  // Owned StatefulSet events wake us when pods change; the requeue is a safety net while workers start, and
  // the lag autoscaler's poll.
  const wait = Math.min(
    ready ? Number.POSITIVE_INFINITY : 5_000,
    scaling.requeueAfterMs ?? Number.POSITIVE_INFINITY,
    volumes.requeueAfterMs ?? Number.POSITIVE_INFINITY,
    // Secrets are not watched (a cluster's Secrets are many and large): a rotation is seen at the next look.
    secrets ? SECRETS_RESYNC_MS : Number.POSITIVE_INFINITY,
  );
  return wait === Number.POSITIVE_INFINITY ? done : requeueAfter(wait);
}
