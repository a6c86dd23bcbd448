// `conveyor run`: one worker of a pipeline against a Kafka cluster, with no Kubernetes: the spec checked as the
// apiserver and the webhook would, its defaults applied, its internal topics made as the operator makes them,
// and the runtime's own Worker in this process, its state in a local directory. For development, and for a
// first look with nothing but a broker.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { isMap, parseAllDocuments } from "yaml";
import { startProbeServer } from "../../runtime/http.ts";
import { observeStateVolume, runtimeMetrics } from "../../runtime/metrics.ts";
import { Worker } from "../../runtime/worker.ts";
import type { StreamPipelineSpec } from "../api.ts";
import { crdChecker } from "../crd-check.ts";
import { platformaticKafkaAdmin } from "../kafka-admin.ts";
import type { Logger } from "../log.ts";
import type { PipelineConfig } from "../pipeline-config.ts";
import { internalTopicRequests } from "../reconcile.ts";
import { type CompiledTopology, compile, describeCompileError, sourceTopicsOf } from "../topology/compile.ts";

export interface RunOptions {
  file: string;
  /** which StreamPipeline of the file, when it holds several */
  name?: string;
  bootstrap: string;
  /** the namespace its names (group, internal topics) are made under: not a cluster's, unless you mean it */
  namespace: string;
  /** default: .conveyor/<namespace>/<name> under the working directory */
  stateDir?: string;
  /** the worker's id: its client id and transactional id */
  id?: string;
  /** serve /metrics, /healthz and /readyz here (127.0.0.1) */
  metricsPort?: number;
  log: Logger;
}

export interface LocalPipeline {
  config: PipelineConfig;
  spec: StreamPipelineSpec;
}

/** The pipeline of `text` as a worker would get it, or an Error listing everything that is wrong with it. */
export function localPipeline(text: string, file: string, o: Pick<RunOptions, "name" | "bootstrap" | "namespace">): LocalPipeline {
  const docs = parseAllDocuments(text).filter((d) => isMap(d.contents) && (d.toJS() as { kind?: unknown }).kind === "StreamPipeline");
  const objects = docs.map((d) => d.toJS() as { metadata?: { name?: string }; spec?: unknown });
  const chosen = o.name === undefined ? objects : objects.filter((x) => x.metadata?.name === o.name);
  if (chosen.length !== 1)
    throw new Error(
      chosen.length === 0
        ? `${file} has no StreamPipeline${o.name ? ` named ${o.name}` : ""}`
        : `${file} has ${chosen.length} StreamPipelines (${chosen.map((x) => x.metadata?.name).join(", ")}): pick one with --name`,
    );
  const object = chosen[0] as { metadata?: { name?: string }; spec?: unknown };
  const name = object.metadata?.name ?? "";
  const checked = crdChecker().check({ ...object, metadata: { ...object.metadata, namespace: o.namespace } });
  if (checked.errors.length > 0) throw new Error(`${file}: ${checked.errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  const spec = checked.object.spec as StreamPipelineSpec;
  if (spec.kafka.sasl || (spec.kafka.tls && spec.kafka.tls.enabled !== false))
    throw new Error(`${file}: run connects without credentials to ${o.bootstrap}; this spec asks for SASL or TLS (spec.kafka), which run does not take`);
  spec.kafka = { ...spec.kafka, bootstrapServers: [o.bootstrap] };
  const compiled = compile(spec, { namespace: o.namespace, name });
  if (!compiled.ok) throw new Error(`${file}: ${compiled.errors.map((e) => `${e.field}: ${describeCompileError(e)}`).join("; ")}`);
  const topology: CompiledTopology = compiled.topology;
  return {
    spec,
    config: { pipeline: { namespace: o.namespace, name }, consumerGroup: topology.applicationId, kafka: { bootstrapServers: [o.bootstrap] }, topology },
  };
}

export interface Running {
  worker: Worker;
  config: PipelineConfig;
  /** drains, commits and stops */
  stop(): Promise<void>;
}

export async function runLocal(o: RunOptions): Promise<Running> {
  const { spec, config } = localPipeline(readFileSync(o.file, "utf8"), o.file, o);
  const topology = config.topology;
  const conn = { bootstrapServers: [o.bootstrap] };
  const admin = platformaticKafkaAdmin("conveyor-run");
  try {
    const sources = sourceTopicsOf(topology);
    const counts = await admin.partitionCounts(conn, sources);
    const missing = sources.filter((t) => !counts.has(t));
    if (missing.length > 0) throw new Error(`source topics do not exist on ${o.bootstrap}: ${missing.join(", ")}`);
    const requests = internalTopicRequests(topology, Math.max(...counts.values()), spec.scaling?.partitions?.max);
    if (requests.length > 0) {
      const { created } = await admin.ensureTopics(conn, requests);
      if (created.length > 0) o.log.info("internal topics created", { topics: created.map((t) => t.name) });
    }
  } finally {
    await admin.close();
  }
  const metrics = runtimeMetrics();
  const stateDir = o.stateDir ?? join(".conveyor", config.pipeline.namespace, config.pipeline.name);
  observeStateVolume(metrics, stateDir);
  const id = o.id ?? `${config.pipeline.name}-${hostname()}`;
  let stopping = false;
  const worker = new Worker({
    config,
    clientId: id,
    log: o.log,
    metrics,
    stateDir,
    onFatal: (err) => {
      if (stopping) return;
      o.log.error("the worker loop cannot go on: exiting; a new run goes on from the last commit", { error: err.message });
      process.exit(1);
    },
  });
  const server =
    o.metricsPort === undefined
      ? undefined
      : await startProbeServer("127.0.0.1", o.metricsPort, { ready: () => worker.ready && !stopping, healthy: () => worker.healthy }, metrics.registry);
  await worker.start();
  return {
    worker,
    config,
    stop: async () => {
      stopping = true;
      await worker.stop();
      server?.close();
    },
  };
}
