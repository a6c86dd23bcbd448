// reconcile(pipeline, ctx): level-triggered; looks at the whole desired and observed state, never at the event.
import type { KubernetesObject, V1StatefulSet } from "@kubernetes/client-node";
import { consumerGroupOf, type PipelineCondition, type StreamPipeline, type StreamPipelineStatus } from "./api.ts";
import { configMapFor, type OperatorConfig, selectorString, statefulSetFor } from "./children.ts";
import type { Logger } from "./log.ts";
import { compile, formatCompileError } from "./topology/compile.ts";

export interface Context {
  config: OperatorConfig;
  log: Logger;
  now(): Date;
  /** server-side apply under the operator's field manager; returns the object as stored */
  apply<T extends KubernetesObject>(obj: T): Promise<T>;
  /** server-side apply of the pipeline's status subresource */
  applyStatus(p: StreamPipeline, status: StreamPipelineStatus): Promise<void>;
}

export type Action = { requeueAfterMs: number } | { done: true };
export const done: Action = { done: true };
export const requeueAfter = (ms: number): Action => ({ requeueAfterMs: ms });

export const Reasons = {
  WorkersReady: "WorkersReady",
  WorkersStarting: "WorkersStarting",
  ScaledToZero: "ScaledToZero",
  Suspended: "Suspended",
  RollingOut: "RollingOut",
  UpToDate: "UpToDate",
  InvalidTopology: "InvalidTopology",
  Healthy: "Healthy",
} as const;

/** Keeps lastTransitionTime when the status of a condition did not change. */
export function setCondition(existing: PipelineCondition[] | undefined, next: PipelineCondition): PipelineCondition[] {
  const prev = existing?.find((c) => c.type === next.type);
  const merged = prev && prev.status === next.status ? { ...next, lastTransitionTime: prev.lastTransitionTime } : next;
  return [...(existing ?? []).filter((c) => c.type !== next.type), merged];
}

function conditions(p: StreamPipeline, now: Date, list: Omit<PipelineCondition, "lastTransitionTime" | "observedGeneration">[]): PipelineCondition[] {
  let out = p.status?.conditions;
  for (const c of list) out = setCondition(out, { ...c, observedGeneration: p.metadata?.generation, lastTransitionTime: now.toISOString() });
  return out ?? [];
}

export function statusFor(p: StreamPipeline, sts: V1StatefulSet, now: Date): StreamPipelineStatus {
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
    ...(p.status?.lag !== undefined ? { lag: p.status.lag } : {}),
    conditions: conditions(p, now, [
      { type: "Ready", status: allReady ? "True" : "False", reason: readyReason, message: `${ready} of ${desired} workers ready` },
      {
        type: "Progressing",
        status: rolledOut ? "False" : "True",
        reason: rolledOut ? Reasons.UpToDate : Reasons.RollingOut,
        message: rolledOut ? "all workers run the current configuration" : `${updated} of ${desired} workers updated`,
      },
      { type: "Degraded", status: "False", reason: Reasons.Healthy, message: "the topology compiles" },
    ]),
  };
}

/** The status of a pipeline whose topology does not compile: say why, and leave the running workers alone. */
export function invalidStatus(p: StreamPipeline, errors: string[], now: Date): StreamPipelineStatus {
  const message = errors.join("; ");
  return {
    ...p.status,
    observedGeneration: p.metadata?.generation,
    consumerGroup: consumerGroupOf(p),
    selector: selectorString(p),
    conditions: conditions(p, now, [
      { type: "Ready", status: "False", reason: Reasons.InvalidTopology, message },
      { type: "Degraded", status: "True", reason: Reasons.InvalidTopology, message },
    ]),
  };
}

export async function reconcile(p: StreamPipeline, ctx: Context): Promise<Action> {
  if (p.metadata?.deletionTimestamp) return done;
  const compiled = compile(p.spec, { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" });
  if (!compiled.ok) {
    const errors = compiled.errors.map(formatCompileError);
    ctx.log.warn("topology does not compile", { pipeline: `${p.metadata?.namespace}/${p.metadata?.name}`, errors });
    await ctx.applyStatus(p, invalidStatus(p, errors, ctx.now()));
    // A spec that cannot compile is not retried: the next edit brings a new generation and a new reconcile.
    return done;
  }
  await ctx.apply(configMapFor(p, compiled.topology));
  const sts = await ctx.apply(statefulSetFor(p, compiled.topology, ctx.config));
  const status = statusFor(p, sts, ctx.now());
  await ctx.applyStatus(p, status);
  const ready = status.conditions?.find((c) => c.type === "Ready")?.status === "True";
  // Owned StatefulSet events wake us when pods change; the requeue is a safety net while workers start.
  return ready ? done : requeueAfter(5_000);
}
