// The configuration that the operator hands to the runtime through the pipeline's ConfigMap.
import { consumerGroupOf, type StreamPipeline } from "./api.ts";

export const CONFIG_FILE = "pipeline.json";

export interface PipelineConfig {
  pipeline: { namespace: string; name: string };
  consumerGroup: string;
  kafka: { bootstrapServers: string[] };
  source: { topics: string[] };
  sink: { topic: string };
}

export function pipelineConfigFor(p: StreamPipeline): PipelineConfig {
  return {
    pipeline: { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" },
    consumerGroup: consumerGroupOf(p),
    kafka: { bootstrapServers: [...p.spec.kafka.bootstrapServers] },
    source: { topics: [...p.spec.source.topics] },
    sink: { topic: p.spec.sink.topic },
  };
}

export function parsePipelineConfig(text: string): PipelineConfig {
  const c = JSON.parse(text) as Partial<PipelineConfig>;
  const missing = ["pipeline", "consumerGroup", "kafka", "source", "sink"].filter((k) => !(k in c));
  if (missing.length > 0) throw new Error(`pipeline config lacks ${missing.join(", ")}`);
  return c as PipelineConfig;
}
