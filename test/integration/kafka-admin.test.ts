// The operator's Kafka admin on the bed's broker: it creates a windowed pipeline's internal topics with the
// configs the runtime relies on (the changelog compacted and deleted after its retention, since closed windows
// get no tombstone), and brings a topic made before with other configs (an older operator's compact-only
// changelog) in line, once.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Admin, ConfigResourceTypes } from "@platformatic/kafka";
import { type KafkaAdmin, platformaticKafkaAdmin } from "../../src/kafka-admin.ts";
import { internalTopicRequests } from "../../src/reconcile.ts";
import { waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { compiled } from "../support/runtime.ts";

describe("the operator's Kafka admin: internal topics and their configs", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  let a: Admin;
  let kafka: KafkaAdmin;
  const conn = { bootstrapServers: [env.bootstrap] };

  before(() => {
    a = admin(env.bootstrap);
    kafka = platformaticKafkaAdmin(`admin-it-${suffix}`);
  });
  after(async () => {
    await kafka?.close();
    await a?.close();
  });

  const configsOf = async (topic: string, keys: string[]) => {
    const [d] = await a.describeConfigs({ resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic, configurationKeys: keys }] });
    return Object.fromEntries((d?.configs ?? []).map((c) => [c.name, c.value]));
  };

  const topology = (name: string) =>
    compiled(
      {
        kafka: conn,
        source: { topics: [`admin-src-${suffix}`], eventTime: "value.ts" },
        steps: [
          { name: "by-user", keyBy: "value.user" },
          { name: "per-minute", window: { tumbling: "1m", grace: "30s" }, aggregate: { n: { count: {} } } },
        ],
        sink: { topic: `admin-out-${suffix}` },
      },
      { namespace: "it", name: `${name}-${suffix}` },
    );

  test("a windowed pipeline's changelog: compact,delete, kept for the window's span and grace plus a day", async () => {
    const requests = internalTopicRequests(topology("fresh"), 2);
    const changelog = requests.find((r) => r.name.endsWith("-changelog"));
    assert.ok(changelog);
    assert.deepEqual(changelog.configs, { "cleanup.policy": "compact,delete", "retention.ms": String(60_000 + 30_000 + 86_400_000) });
    const first = await kafka.ensureTopics(conn, requests);
    assert.deepEqual(
      first.created.map((t) => t.name),
      requests.map((r) => r.name),
    );
    assert.deepEqual(first.reconfigured, []);
    const ids = await kafka.topicIds(
      conn,
      requests.map((r) => r.name),
    );
    assert.deepEqual(
      first.created,
      requests.map((r) => ({ name: r.name, topicId: ids.get(r.name) })),
      "each created topic with the id the broker gave it",
    );
    assert.deepEqual(await configsOf(changelog.name, Object.keys(changelog.configs)), changelog.configs);
    assert.deepEqual(await kafka.ensureTopics(conn, requests), { created: [], reconfigured: [] }, "a second pass changes nothing");
  });

  test("a changelog made compact-only before is given the configs, once", async () => {
    const requests = internalTopicRequests(topology("older"), 2);
    const changelog = requests.find((r) => r.name.endsWith("-changelog"));
    assert.ok(changelog);
    await createTopic(a, changelog.name, 2, { "cleanup.policy": "compact" });
    const { created, reconfigured } = await kafka.ensureTopics(conn, requests);
    assert.deepEqual(reconfigured, [changelog.name]);
    assert.ok(!created.some((t) => t.name === changelog.name), "a topic it found is not one it created");
    assert.deepEqual(await configsOf(changelog.name, Object.keys(changelog.configs)), changelog.configs);
    assert.deepEqual((await kafka.ensureTopics(conn, requests)).reconfigured, [], "in line now: nothing to set");
  });

  test("a delete by name and id leaves a topic created again under the same name", async () => {
    const name = `admin-ids-${suffix}`;
    const { created } = await kafka.ensureTopics(conn, [{ name, partitions: 1, configs: {} }]);
    const first = created[0];
    assert.ok(first);
    assert.deepEqual(await kafka.deleteTopics(conn, [first]), { deleted: [name], otherId: [] });
    await waitFor(async () => !(await kafka.topicIds(conn, [name])).has(name), { what: `${name} to be gone`, timeoutMs: 30_000 });
    await createTopic(a, name, 1);
    const again = (await kafka.topicIds(conn, [name])).get(name);
    assert.ok(again && again !== first.topicId, "the new topic has another id");
    assert.deepEqual(await kafka.deleteTopics(conn, [first]), { deleted: [], otherId: [name] }, "the recorded id is not the topic's now: left alone");
    assert.equal((await kafka.topicIds(conn, [name])).get(name), again);
  });
});
