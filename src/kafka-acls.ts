// The Kafka ACLs a pipeline's user needs on a cluster with an authorizer: exactly what the workers' calls and
// the operator's calls on the pipeline's behalf (it connects with the pipeline's credentials) are checked for.
// The README lists them from here; the secured end-to-end test grants these and nothing more.
import { type CompiledTopology, globalInputs, sinkTopics, sourceTopicsOf, statefulSteps } from "./topology/compile.ts";

export interface AclRule {
  resource: "topic" | "group" | "transactionalId" | "cluster";
  /** a literal name, or a prefix when `prefix` is set; the cluster's is "kafka-cluster" */
  name: string;
  prefix?: boolean;
  operation: "READ" | "WRITE" | "CREATE" | "DELETE" | "ALTER" | "DESCRIBE" | "DESCRIBE_CONFIGS" | "ALTER_CONFIGS" | "IDEMPOTENT_WRITE";
  /** which calls need it */
  why: string;
}

/**
 * What starts every internal topic, restore group and transactional id of the pipeline (see internalPrefix in
 * topology/compile.ts). A topology from an operator before it carried one had `<applicationId>-`.
 */
export function pipelinePrefix(t: Pick<CompiledTopology, "applicationId"> & { internalPrefix?: string }): string {
  return t.internalPrefix ?? `${t.applicationId}-`;
}

/** The group ids of the workers' restore readers (the client library's consumer always joins a group). */
export function restoreGroupPrefix(t: Pick<CompiledTopology, "applicationId"> & { internalPrefix?: string }): string {
  return `${pipelinePrefix(t)}restore-`;
}

/** The transactional id of an exactly-once worker: one per pod, which its successor fences. */
export function transactionalId(t: Pick<CompiledTopology, "applicationId"> & { internalPrefix?: string }, pod: string): string {
  return `${pipelinePrefix(t)}${pod}`;
}

/** What the workers do: read the sources as the group, write the sink, DLQ and late topics, and their internal topics. */
export function workerAcls(t: CompiledTopology): AclRule[] {
  const rules: AclRule[] = [];
  for (const topic of sourceTopicsOf(t)) rules.push({ resource: "topic", name: topic, operation: "READ", why: "fetch the source (READ implies DESCRIBE)" });
  for (const topic of globalInputs(t).flatMap((i) => i.topics))
    rules.push({ resource: "topic", name: topic, operation: "READ", why: "read a global input whole, outside the group (READ implies DESCRIBE)" });
  rules.push({ resource: "group", name: t.applicationId, operation: "READ", why: "join the consumer group and commit offsets" });
  if (statefulSteps(t).length > 0 || globalInputs(t).length > 0) {
    rules.push({ resource: "group", name: restoreGroupPrefix(t), prefix: true, operation: "READ", why: "the restore and global-table readers' groups" });
  }
  const outputs = [...sinkTopics(t), ...(t.deadLetter ? [t.deadLetter.topic] : [])];
  for (const s of statefulSteps(t)) if ("topic" in s.late) outputs.push(s.late.topic);
  for (const topic of [...new Set(outputs)]) {
    rules.push({ resource: "topic", name: topic, operation: "WRITE", why: "produce results, dead letters or late records" });
    rules.push({ resource: "topic", name: topic, operation: "DESCRIBE_CONFIGS", why: "read what the topic takes (record size, timestamps) before writing" });
  }
  if (t.internalTopics.length > 0) {
    const prefix = pipelinePrefix(t);
    rules.push(
      { resource: "topic", name: prefix, prefix: true, operation: "READ", why: "read repartition topics and restore changelogs" },
      { resource: "topic", name: prefix, prefix: true, operation: "WRITE", why: "write repartition records, watermark markers and changelogs" },
    );
    for (const s of t.steps)
      if (s.kind === "keyBy")
        rules.push({
          resource: "topic",
          name: s.repartitionTopic,
          operation: "DELETE",
          why: "purge repartition records every reader has committed (DeleteRecords)",
        });
  }
  rules.push({ resource: "cluster", name: "kafka-cluster", operation: "IDEMPOTENT_WRITE", why: "the idempotent producer's InitProducerId" });
  if (t.processing.guarantee === "exactlyOnce") {
    rules.push({ resource: "transactionalId", name: pipelinePrefix(t), prefix: true, operation: "WRITE", why: "one transactional id per worker" });
  }
  return rules;
}

/** What the operator does with the same credentials: internal topics, partition counts and growth, lag, cleanup. */
export function operatorAcls(t: CompiledTopology, opts: { autoGrow: boolean }): AclRule[] {
  const rules: AclRule[] = [];
  for (const topic of sourceTopicsOf(t)) {
    rules.push({ resource: "topic", name: topic, operation: "DESCRIBE", why: "partition counts and end offsets (lag)" });
    if (opts.autoGrow) rules.push({ resource: "topic", name: topic, operation: "ALTER", why: "grow the source's partitions (scaling.partitions.autoGrow)" });
  }
  for (const topic of globalInputs(t).flatMap((i) => i.topics))
    rules.push({ resource: "topic", name: topic, operation: "DESCRIBE", why: "check that a global input's topic exists" });
  rules.push({ resource: "group", name: t.applicationId, operation: "DESCRIBE", why: "committed offsets (lag)" });
  rules.push({ resource: "group", name: t.applicationId, operation: "DELETE", why: "delete the group with the pipeline" });
  if (t.internalTopics.length > 0) {
    const prefix = pipelinePrefix(t);
    for (const [operation, why] of [
      ["CREATE", "create internal topics"],
      ["DESCRIBE_CONFIGS", "read their configs"],
      ["ALTER_CONFIGS", "set their retention and cleanup policy"],
      ["ALTER", "grow repartition topics with the source"],
      ["DELETE", "delete them with the pipeline or on a state reset"],
    ] as const) {
      rules.push({ resource: "topic", name: prefix, prefix: true, operation, why });
    }
  }
  return rules;
}
