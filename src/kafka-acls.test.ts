import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StreamPipelineSpec } from "./api.ts";
import { operatorAcls, pipelinePrefix, workerAcls } from "./kafka-acls.ts";
import { compile, internalTopicName } from "./topology/compile.ts";

function topologyOf(spec: StreamPipelineSpec, name = "orders") {
  const r = compile(spec, { namespace: "team-a", name });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.topology;
}

const rows = (rules: ReturnType<typeof workerAcls>) => rules.map((r) => `${r.resource}:${r.prefix ? `${r.name}*` : r.name}:${r.operation}`);

describe("the ACLs a pipeline's user needs", () => {
  test("a stateless at-least-once pipeline: read its sources as its group, write its sink and dead letters, idempotent writes", () => {
    const t = topologyOf({
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in-a", "in-b"] },
      steps: [{ name: "keep", filter: "true" }],
      sink: { topic: "out" },
      deadLetter: { topic: "dlq" },
    });
    assert.deepEqual(rows(workerAcls(t)), [
      "topic:in-a:READ",
      "topic:in-b:READ",
      "group:team-a.orders:READ",
      "topic:out:WRITE",
      "topic:out:DESCRIBE_CONFIGS",
      "topic:dlq:WRITE",
      "topic:dlq:DESCRIBE_CONFIGS",
      "cluster:kafka-cluster:IDEMPOTENT_WRITE",
    ]);
    assert.deepEqual(rows(operatorAcls(t, { autoGrow: false })), [
      "topic:in-a:DESCRIBE",
      "topic:in-b:DESCRIBE",
      "group:team-a.orders:DESCRIBE",
      "group:team-a.orders:DELETE",
    ]);
  });

  test("an exactly-once windowed pipeline: its internal topics, restore groups and transactional ids by its own prefix", () => {
    const t = topologyOf({
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in"], eventTime: "value.ts" },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "agg", window: { tumbling: "1m" }, aggregate: { n: { count: {} } }, late: { topic: "late" } },
      ],
      sink: { topic: "out" },
      processing: { guarantee: "exactlyOnce" },
    });
    const prefix = pipelinePrefix(t);
    assert.equal(prefix, "team-a_orders_");
    for (const topic of t.internalTopics) assert.ok(topic.startsWith(prefix), `${topic} starts with ${prefix}`);
    assert.deepEqual(rows(workerAcls(t)), [
      "topic:in:READ",
      "group:team-a.orders:READ",
      "group:team-a_orders_restore-*:READ",
      "topic:out:WRITE",
      "topic:out:DESCRIBE_CONFIGS",
      "topic:late:WRITE",
      "topic:late:DESCRIBE_CONFIGS",
      "topic:team-a_orders_*:READ",
      "topic:team-a_orders_*:WRITE",
      "topic:team-a_orders_by-user-repartition:DELETE",
      "cluster:kafka-cluster:IDEMPOTENT_WRITE",
      "transactionalId:team-a_orders_*:WRITE",
    ]);
    assert.ok(rows(operatorAcls(t, { autoGrow: true })).includes("topic:in:ALTER"));
  });

  test("no prefix of one pipeline starts another's names: orders and orders-by, or a name with a dot; the legacy ones did", () => {
    const names = ["orders", "orders-by", "orders.by", "orders.by.user"];
    const prefixes = names.map((n) =>
      pipelinePrefix(topologyOf({ kafka: { bootstrapServers: ["k"] }, source: { topics: ["in"] }, sink: { topic: "out" } }, n)),
    );
    for (const [i, a] of prefixes.entries())
      for (const [j, b] of prefixes.entries()) if (i !== j) assert.equal(b.startsWith(a), false, `${b} does not start with ${a}`);
    const legacy = (n: string) => internalTopicName({ namespace: "team-a", name: n, legacyNames: true }, n === "orders" ? "by-user" : "user", "repartition");
    assert.equal(legacy("orders"), legacy("orders-by"), "the names before: orders/by-user and orders-by/user shared a topic");
    assert.notEqual(
      internalTopicName({ namespace: "team-a", name: "orders" }, "by-user", "repartition"),
      internalTopicName({ namespace: "team-a", name: "orders-by" }, "user", "repartition"),
    );
  });
});
