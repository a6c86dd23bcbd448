// reconcile(pipeline, ctx): level-triggered; looks at the whole desired and observed state, never at the event.
import type { KubernetesObject, V1StatefulSet } from "@kubernetes/client-node";
import { consumerGroupOf, type PipelineCondition, type StreamPipeline, type StreamPipelineStatus } from "./api.ts";
import { configMapFor, type OperatorConfig, selectorString, statefulSetFor } from "./children.ts";
import type { Logger } from "./log.ts";

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
  Suspended: "ScaledToZero",
} as const;

/** Keeps lastTransitionTime when the status of a condition did not change. */
export function setCondition(existing: PipelineCondition[] | undefined, next: PipelineCondition): PipelineCondition[] {
  const prev = existing?.find((c) => c.type === next.type);
  const merged = prev && prev.status === next.status ? { ...next, lastTransitionTime: prev.lastTransitionTime } : next;
  return [...(existing ?? []).filter((c) => c.type !== next.type), merged];
}

export function statusFor(p: StreamPipeline, sts: V1StatefulSet, now: Date): StreamPipelineStatus {
  const desired = p.spec.replicas ?? 1;
  const ready = sts.status?.readyReplicas ?? 0;
  const current = sts.status?.replicas ?? 0;
  const generation = p.metadata?.generation;
  const allReady = ready >= desired && current === desired && (sts.status?.observedGeneration ?? 0) >= (sts.metadata?.generation ?? 0);
  const readyCondition: PipelineCondition = {
    type: "Ready",
    status: allReady ? "True" : "False",
    reason: desired === 0 ? Reasons.Suspended : allReady ? Reasons.WorkersReady : Reasons.WorkersStarting,
    message: `${ready} of ${desired} workers ready`,
    observedGeneration: generation,
    lastTransitionTime: now.toISOString(),
  };
  return {
    observedGeneration: generation,
    consumerGroup: consumerGroupOf(p),
    replicas: current,
    readyReplicas: ready,
    selector: selectorString(p),
    conditions: setCondition(p.status?.conditions, readyCondition),
  };
}

export async function reconcile(p: StreamPipeline, ctx: Context): Promise<Action> {
  if (p.metadata?.deletionTimestamp) return done;
  await ctx.apply(configMapFor(p));
  const sts = await ctx.apply(statefulSetFor(p, ctx.config));
  const status = statusFor(p, sts, ctx.now());
  await ctx.applyStatus(p, status);
  const ready = status.conditions?.find((c) => c.type === "Ready")?.status === "True";
  // Owned StatefulSet events wake us when pods change; the requeue is a safety net while workers start.
  return ready ? done : requeueAfter(5_000);
}
