// The StreamPipeline resource as the operator and the runtime see it.
import type { KubernetesObject, V1Condition } from "@kubernetes/client-node";

export const GROUP = "conveyor.dev";
export const VERSION = "v1alpha1";
export const PLURAL = "streampipelines";
export const KIND = "StreamPipeline";
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface StreamPipelineSpec {
  kafka: { bootstrapServers: string[] };
  source: { topics: string[] };
  sink: { topic: string };
  replicas?: number;
}

export interface StreamPipelineStatus {
  observedGeneration?: number;
  consumerGroup?: string;
  replicas?: number;
  readyReplicas?: number;
  selector?: string;
  conditions?: V1Condition[];
}

export interface StreamPipeline extends KubernetesObject {
  spec: StreamPipelineSpec;
  status?: StreamPipelineStatus;
}

/** The consumer group of a pipeline's workers: `<namespace>.<name>`. */
export function consumerGroupOf(p: StreamPipeline): string {
  return `${p.metadata?.namespace}.${p.metadata?.name}`;
}
