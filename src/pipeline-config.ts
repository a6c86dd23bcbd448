// The configuration that the operator hands to the runtime through the pipeline's ConfigMap.
import type { StreamPipeline } from "./api.ts";
import type { CompiledTopology } from "./topology/compile.ts";

export const CONFIG_FILE = "pipeline.json";

export interface PipelineConfig {
  pipeline: { namespace: string; name: string };
  consumerGroup: string;
  kafka: { bootstrapServers: string[] };
  topology: CompiledTopology;
  /**
   * Each source topic's partition count when the pipeline first read it (status.sources). A partition numbered
   * from it on was added later, and is read from its start whatever startFrom says: under latest its first
   * records would otherwise be skipped. Absent for a topic not yet counted.
   */
  initialPartitions?: Record<string, number>;
}

export function pipelineConfigFor(p: StreamPipeline, topology: CompiledTopology): PipelineConfig {
  const initial = Object.fromEntries(
    (p.status?.sources ?? []).filter((s) => topology.source.topics.includes(s.topic)).map((s) => [s.topic, s.initialPartitions]),
  );
  return {
    pipeline: { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" },
    consumerGroup: topology.applicationId,
    kafka: { bootstrapServers: [...p.spec.kafka.bootstrapServers] },
    topology,
    ...(Object.keys(initial).length > 0 ? { initialPartitions: initial } : {}),
  };
}

export function parsePipelineConfig(text: string): PipelineConfig {
  const c = JSON.parse(text) as Partial<PipelineConfig>;
  const missing = ["pipeline", "consumerGroup", "kafka", "topology"].filter((k) => !(k in c));
  if (missing.length > 0) throw new Error(`pipeline config lacks ${missing.join(", ")}`);
  return c as PipelineConfig;
}
