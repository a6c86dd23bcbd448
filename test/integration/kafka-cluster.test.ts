// The bed's three-broker mode (for the exactly-once and broker-restart tests): a topic replicated three
// times stays writable and readable while one broker is down.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type KafkaCluster, startBroker, startKafka, stopKafka, waitForBroker } from "../env/kafka.ts";
import { stopProcess } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, keyedRecords, produce, readToEnd } from "../support/kafka.ts";

describe("a three-broker Kafka cluster", () => {
  let cluster: KafkaCluster;
  const dir = join(bedEnv().state.dir, `kafka3-${uniqueSuffix()}`);

  before(async () => {
    cluster = await startKafka({ dir, brokers: 3 });
  });
  after(async () => {
    if (cluster) await stopKafka(cluster);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a topic with replication factor 3 survives one broker down", async () => {
    assert.equal(cluster.brokers.length, 3);
    const topic = `replicated-${uniqueSuffix()}`;
    const a = admin(cluster.bootstrap);
    try {
      await a.createTopics({ topics: [topic], partitions: 3, replicas: 3, configs: [{ name: "min.insync.replicas", value: "2" }] });
      const md = await a.metadata({ topics: [topic], forceUpdate: true });
      assert.equal(md.brokers.size, 3);
      assert.ok(md.topics.get(topic)?.partitions.every((p) => p.replicas.length === 3));
      await produce(cluster.bootstrap, topic, keyedRecords(1_000, "before"));

      const third = cluster.brokers[2];
      assert.ok(third);
      await stopProcess(cluster.pids.get(third.nodeId) ?? 0, 15_000);
      cluster.pids.delete(third.nodeId);
      await produce(cluster.brokers[0] ? `${cluster.brokers[0].host}:${cluster.brokers[0].port}` : cluster.bootstrap, topic, keyedRecords(1_000, "during"));

      cluster.pids.set(third.nodeId, startBroker(third).pid);
      await waitForBroker(cluster, third);
      const all = await readToEnd(cluster.bootstrap, topic);
      assert.equal(all.length, 2_000);
    } finally {
      await a.close();
    }
  });
});
