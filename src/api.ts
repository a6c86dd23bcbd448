// The StreamPipeline resource as the operator and the runtime see it.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { StreamPipelineSpec, StreamPipelineStatus } from "./api-types.gen.ts";

export type * from "./api-types.gen.ts";

export const GROUP = "conveyor.dev";
export const VERSION = "v1alpha1";
export const PLURAL = "streampipelines";
export const KIND = "StreamPipeline";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** The lag autoscaler's record in status: its last decision, what it saw, and the policy's state. */
export type ScalingStatus = NonNullable<StreamPipelineStatus["scaling"]>;

export interface StreamPipeline extends KubernetesObject {
  spec: StreamPipelineSpec;
  status?: StreamPipelineStatus;
}

/** The consumer group of a pipeline's workers: `<namespace>.<name>`. */
export function consumerGroupOf(p: StreamPipeline): string {
  return `${p.metadata?.namespace}.${p.metadata?.name}`;
}
