import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import type { StreamPipeline } from "./api.ts";
import { defaultOperatorConfig } from "./children.ts";
import { fencedKafka, makeContext } from "./controller.ts";
import type { KafkaAdmin } from "./kafka-admin.ts";
import { abortableKubeConfig } from "./kube-abort.ts";
import { LeadershipLostError } from "./leader-election.ts";
import { jsonLogger } from "./log.ts";

/** Polls `cond` every few ms; fails the test when it is not true within `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("a leadership term's writes", () => {
  // An apiserver on loopback that takes every request and answers none: a reconcile's write is in flight.
  let received = 0;
  let dropped = 0;
  const server = createServer((req) => {
    received++;
    req.socket.on("close", () => dropped++);
  });
  let kc: KubeConfig;
  before(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "loopback", server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: "nobody" }],
      contexts: [{ name: "loopback", cluster: "loopback", user: "nobody" }],
      currentContext: "loopback",
    });
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const p: StreamPipeline = {
    metadata: { name: "p", namespace: "ns", uid: "u", resourceVersion: "1", finalizers: [] },
    spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["in"] }, sink: { topic: "out" } },
  };
  const unused = () => Promise.reject(new Error("not in this test"));

  test("when leadership is lost, the write in flight is dropped and no later one reaches the apiserver", { timeout: 10_000 }, async () => {
    const term = new AbortController();
    const log = jsonLogger({}, () => {});
    const kafka: KafkaAdmin = {
      partitionCounts: unused,
      ensureTopics: unused,
      topicIds: unused,
      deleteTopics: unused,
      growTopic: unused,
      deleteGroup: unused,
      close: async () => {},
    };
    const ctx = makeContext(abortableKubeConfig(kc, term.signal), defaultOperatorConfig, log, kafka);
    const inFlight = ctx.applyStatus(p, { observedGeneration: 1 });
    inFlight.catch(() => {});
    await until(() => received === 1, 2_000, "the status write to reach the apiserver");
    term.abort(new LeadershipLostError());
    await assert.rejects(inFlight, LeadershipLostError);
    await until(() => dropped === 1, 2_000, "the connection of the write in flight to be dropped");

    await assert.rejects(ctx.setFinalizers(p, []), LeadershipLostError);
    await assert.rejects(ctx.apply({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "p-config", namespace: "ns" } }), LeadershipLostError);
    await assert.rejects(ctx.deleteStatefulSet("ns", "p"), LeadershipLostError);
    assert.equal(received, 1, "nothing is sent after the loss");
  });

  test("a term's Kafka writes fail once it has ended, and are not made; reads go on", { timeout: 10_000 }, async () => {
    const made: string[] = [];
    const kafka: KafkaAdmin = {
      partitionCounts: async () => new Map([["in", 3]]),
      topicIds: async () => new Map(),
      ensureTopics: async () => {
        made.push("ensureTopics");
        return { created: [], reconfigured: [] };
      },
      deleteTopics: async () => {
        made.push("deleteTopics");
        return { deleted: [], otherId: [] };
      },
      growTopic: async () => {
        made.push("growTopic");
      },
      deleteGroup: async () => {
        made.push("deleteGroup");
      },
      close: async () => {
        made.push("close");
      },
    };
    const term = new AbortController();
    const fenced = fencedKafka(kafka, term.signal);
    const conn = { bootstrapServers: ["k:9092"] };
    await fenced.deleteGroup(conn, "g");
    assert.deepEqual(made, ["deleteGroup"], "while leading, writes are made");
    term.abort(new LeadershipLostError());
    await assert.rejects(fenced.ensureTopics(conn, []), LeadershipLostError);
    await assert.rejects(fenced.deleteTopics(conn, []), LeadershipLostError);
    await assert.rejects(fenced.growTopic(conn, "in", 4), LeadershipLostError);
    await assert.rejects(fenced.deleteGroup(conn, "g"), LeadershipLostError);
    assert.deepEqual(await fenced.partitionCounts(conn, ["in"]), new Map([["in", 3]]));
    await fenced.close();
    assert.deepEqual(made, ["deleteGroup"], "no write after the loss, and the process's admin stays open");
  });
});
