// The configuration that the operator hands to the runtime through the pipeline's ConfigMap.
import type { StreamPipeline } from "./api.ts";
import { type KafkaSpec, SPEC_DEFAULTS } from "./api-types.gen.ts";
import { type CompiledTopology, sourceTopicsOf } from "./topology/compile.ts";

export const CONFIG_FILE = "pipeline.json";

/** Where a worker finds its Kafka credentials: the pod takes them from the spec's Secrets, never the ConfigMap. */
export const KAFKA_USERNAME_ENV = "CONVEYOR_KAFKA_SASL_USERNAME";
export const KAFKA_PASSWORD_ENV = "CONVEYOR_KAFKA_SASL_PASSWORD";
// beside the ConfigMap's mount, not inside it: a mount point inside a read-only volume cannot be made
export const KAFKA_TLS_MOUNT = "/etc/conveyor-kafka";
export const KAFKA_CA_FILE = `${KAFKA_TLS_MOUNT}/ca/ca.crt`;
export const KAFKA_CLIENT_CERT_FILE = `${KAFKA_TLS_MOUNT}/client/tls.crt`;
export const KAFKA_CLIENT_KEY_FILE = `${KAFKA_TLS_MOUNT}/client/tls.key`;

export const SASL_MECHANISMS = { plain: "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512" } as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[keyof typeof SASL_MECHANISMS];

/** How a worker connects: the brokers, and where its credentials are (names of files and variables, no secret). */
export interface KafkaClientConfig {
  bootstrapServers: string[];
  /** SASL; the username and password are in the environment variables KAFKA_USERNAME_ENV and KAFKA_PASSWORD_ENV */
  sasl?: { mechanism: SaslMechanism };
  /** TLS to the brokers; absent files mean the system's CAs and no client certificate */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

export interface PipelineConfig {
  pipeline: { namespace: string; name: string };
  consumerGroup: string;
  kafka: KafkaClientConfig;
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
    (p.status?.sources ?? []).filter((s) => sourceTopicsOf(topology).includes(s.topic)).map((s) => [s.topic, s.initialPartitions]),
  );
  return {
    pipeline: { namespace: p.metadata?.namespace ?? "", name: p.metadata?.name ?? "" },
    consumerGroup: topology.applicationId,
    kafka: kafkaClientConfigFor(p),
    topology,
    ...(Object.keys(initial).length > 0 ? { initialPartitions: initial } : {}),
  };
}

/** The spec's TLS settings when TLS is on (a `tls` block without `enabled: false`), else undefined. */
export function enabledTls(k: KafkaSpec): KafkaSpec["tls"] {
  return k.tls && (k.tls.enabled ?? SPEC_DEFAULTS["kafka.tls.enabled"]) ? k.tls : undefined;
}

export function kafkaClientConfigFor(p: StreamPipeline): KafkaClientConfig {
  const k = p.spec.kafka;
  const tls = enabledTls(k);
  return {
    bootstrapServers: [...k.bootstrapServers],
    ...(k.sasl ? { sasl: { mechanism: SASL_MECHANISMS[k.sasl.mechanism] } } : {}),
    ...(tls
      ? {
          tls: {
            ...(tls.caSecretRef ? { caFile: KAFKA_CA_FILE } : {}),
            ...(tls.clientSecretRef ? { certFile: KAFKA_CLIENT_CERT_FILE, keyFile: KAFKA_CLIENT_KEY_FILE } : {}),
          },
        }
      : {}),
  };
}

export function parsePipelineConfig(text: string): PipelineConfig {
  const c = JSON.parse(text) as Partial<PipelineConfig>;
  const missing = ["pipeline", "consumerGroup", "kafka", "topology"].filter((k) => !(k in c));
  if (missing.length > 0) throw new Error(`pipeline config lacks ${missing.join(", ")}`);
  return c as PipelineConfig;
}
