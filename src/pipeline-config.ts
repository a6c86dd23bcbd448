// The configuration that the operator hands to the runtime through the pipeline's ConfigMap.
import type { StreamPipeline } from "./api.ts";
import type { CompiledTopology } from "./topology/compile.ts";

export const CONFIG_FILE = "pipeline.json";

export interface PipelineConfig {
  pipeline: { namespace: string; name: string };
  consumerGroup: string;
  kafka: { bootstrapServers: string[] };
  topology: CompiledTopology;
}

export function pipelineConfigFor(p: StreamPipeline, topology: CompiledTopology): PipelineConfig {
  return {
    pipeline: { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" },
    consumerGroup: topology.applicationId,
    kafka: { bootstrapServers: [...p.spec.kafka.bootstrapServers] },
    topology,
  };
}

export function parsePipelineConfig(text: string): PipelineConfig {
  const c = JSON.parse(text) as Partial<PipelineConfig>;
  const missing = ["pipeline", "consumerGroup", "kafka", "topology"].filter((k) => !(k in c));
  if (missing.length > 0) throw new Error(`pipeline config lacks ${missing.join(", ")}`);
  return c as PipelineConfig;
}
