// The operator's Kafka admin calls: internal topics and consumer groups. One admin client per cluster and
// user, shared by the pipelines on it; replaced when that user's credentials change.
import { Admin, ConfigResourceTypes, IncrementalAlterConfigOperationTypes, UserError } from "@platformatic/kafka";
import { ClientCache, clientOptions, closeErrorLogger, type KafkaConnection } from "./kafka-client.ts";
import { kafkaCodes, onlyCodes } from "./kafka-errors.ts";

export type { KafkaConnection };

/** A topic and the id Kafka gave it when it was created. */
export interface TopicRef {
  name: string;
  topicId: string;
}

export interface TopicRequest {
  name: string;
  partitions: number;
  configs: Record<string, string>;
}

export interface KafkaAdmin {
  /** partition counts of existing topics; a topic that does not exist is absent from the map */
  partitionCounts(conn: KafkaConnection, topics: string[]): Promise<Map<string, number>>;
  /**
   * Creates the topics that do not exist yet, and sets the configs asked for on those that do where they
   * differ (an operator upgrade that changes an internal topic's policy reaches the topics made before it).
   */
  ensureTopics(conn: KafkaConnection, topics: TopicRequest[]): Promise<{ created: TopicRef[]; reconfigured: string[] }>;
  /** the ids of the named topics that exist */
  topicIds(conn: KafkaConnection, topics: string[]): Promise<Map<string, string>>;
  /**
   * Deletes each topic whose id is still the one given: a topic deleted and created again under the same name
   * (by someone else) is left alone. Returns the names deleted and the names left for another id.
   */
  deleteTopics(conn: KafkaConnection, topics: TopicRef[]): Promise<{ deleted: string[]; otherId: string[] }>;
  /** gives a topic `count` partitions; one that has as many already is left as it is */
  growTopic(conn: KafkaConnection, topic: string, count: number): Promise<void>;
  /** deletes a consumer group; a group that does not exist is not an error */
  deleteGroup(conn: KafkaConnection, group: string): Promise<void>;
  close(): Promise<void>;
}

/** Kafka error codes that mean "already so" for the calls above. */
const TOPIC_ALREADY_EXISTS = 36;
const UNKNOWN_TOPIC_OR_PARTITION = 3;
const TOPIC_AUTHORIZATION_FAILED = 29;
const GROUP_ID_NOT_FOUND = 69;
const INVALID_PARTITIONS = 37;

/**
 * Throws, naming them, when the broker refuses to describe any of `topics` to this user (an ACL is missing);
 * returns when they simply do not exist.
 */
async function refusedTopics(a: Admin, topics: string[]): Promise<void> {
  try {
    await a.metadata({ topics, forceUpdate: true, autocreateTopics: false });
  } catch (err) {
    if (kafkaCodes(err).includes(TOPIC_AUTHORIZATION_FAILED)) {
      throw new Error(`not authorized to describe topics ${topics.join(", ")} (TOPIC_AUTHORIZATION_FAILED): the pipeline's user lacks an ACL`, { cause: err });
    }
    // The library answers UNKNOWN_TOPIC_OR_PARTITION with an error of its own that drops the code.
    if (onlyCodes(err, [UNKNOWN_TOPIC_OR_PARTITION]) || (err instanceof UserError && err.message.startsWith("Unknown topic "))) return;
    throw err;
  }
}

/** The ids of those of `topics` that exist. */
async function topicIdsOf(a: Admin, topics: string[]): Promise<Map<string, string>> {
  const existing = new Set(await a.listTopics());
  const present = topics.filter((t) => existing.has(t));
  const out = new Map<string, string>();
  if (present.length === 0) return out;
  const md = await a.metadata({ topics: present, forceUpdate: true });
  for (const t of present) {
    const id = md.topics.get(t)?.id;
    if (id) out.set(t, id);
  }
  return out;
}

export function platformaticKafkaAdmin(clientId = "conveyor-operator"): KafkaAdmin {
  const clients = new ClientCache<Admin>(
    (conn) => new Admin({ clientId, ...clientOptions(conn), retries: 2, timeout: 10_000 }),
    closeErrorLogger("the operator's Kafka admin"),
  );
  const client = (conn: KafkaConnection): Admin => clients.get(conn);
  return {
    async partitionCounts(conn, topics) {
      const out = new Map<string, number>();
      const a = client(conn);
      const existing = new Set(await a.listTopics());
      const wanted = topics.filter((t) => existing.has(t));
      // A listing leaves out what the user may not describe: asked by name, the broker says which it is.
      const unlisted = topics.filter((t) => !existing.has(t));
      if (unlisted.length > 0) await refusedTopics(a, unlisted);
      if (wanted.length === 0) return out;
      const md = await a.metadata({ topics: wanted, forceUpdate: true });
      for (const t of wanted) {
        const n = md.topics.get(t)?.partitionsCount;
        if (n !== undefined) out.set(t, n);
      }
      return out;
    },
    async ensureTopics(conn, topics) {
      const a = client(conn);
      const existing = new Set(await a.listTopics());
      const created: TopicRef[] = [];
      const reconfigured: string[] = [];
      const present = topics.filter((t) => existing.has(t.name) && Object.keys(t.configs).length > 0);
      if (present.length > 0) {
        const described = await a.describeConfigs({
          resources: present.map((t) => ({ resourceType: ConfigResourceTypes.TOPIC, resourceName: t.name, configurationKeys: Object.keys(t.configs) })),
        });
        for (const t of present) {
          const now = new Map((described.find((d) => d.resourceName === t.name)?.configs ?? []).map((c) => [c.name, c.value]));
          const differ = Object.entries(t.configs).filter(([name, value]) => now.get(name) !== value);
          if (differ.length === 0) continue;
          await a.incrementalAlterConfigs({
            resources: [
              {
                resourceType: ConfigResourceTypes.TOPIC,
                resourceName: t.name,
                configs: differ.map(([name, value]) => ({ name, configOperation: IncrementalAlterConfigOperationTypes.SET, value })),
              },
            ],
          });
          reconfigured.push(t.name);
        }
      }
      for (const t of topics) {
        if (existing.has(t.name)) continue;
        try {
          const [made] = await a.createTopics({
            topics: [t.name],
            partitions: t.partitions,
            replicas: -1,
            configs: Object.entries(t.configs).map(([name, value]) => ({ name, value })),
          });
          if (!made?.id) throw new Error(`creating topic ${t.name}: the broker gave no topic id`);
          created.push({ name: t.name, topicId: made.id });
        } catch (err) {
          if (!onlyCodes(err, [TOPIC_ALREADY_EXISTS])) throw err;
        }
      }
      return { created, reconfigured };
    },
    async topicIds(conn, topics) {
      return topicIdsOf(client(conn), topics);
    },
    async deleteTopics(conn, topics) {
      if (topics.length === 0) return { deleted: [], otherId: [] };
      const a = client(conn);
      const now = await topicIdsOf(
        a,
        topics.map((t) => t.name),
      );
      const ours = topics.filter((t) => now.get(t.name) === t.topicId).map((t) => t.name);
      const otherId = topics.filter((t) => now.has(t.name) && now.get(t.name) !== t.topicId).map((t) => t.name);
      if (ours.length > 0) {
        try {
          await a.deleteTopics({ topics: ours });
        } catch (err) {
          if (!onlyCodes(err, [UNKNOWN_TOPIC_OR_PARTITION])) throw err;
        }
      }
      return { deleted: ours, otherId };
    },
    async growTopic(conn, topic, count) {
      const a = client(conn);
      try {
        await a.createPartitions({ topics: [{ name: topic, count }] });
      } catch (err) {
        // Refused when the topic has that many already: a retry after a lost answer, or another operator.
        if (!onlyCodes(err, [INVALID_PARTITIONS])) throw err;
        const md = await a.metadata({ topics: [topic], forceUpdate: true });
        const now = md.topics.get(topic)?.partitionsCount ?? 0;
        if (now < count) throw err;
      }
    },
    async deleteGroup(conn, group) {
      try {
        await client(conn).deleteGroups({ groups: [group] });
      } catch (err) {
        if (!onlyCodes(err, [GROUP_ID_NOT_FOUND])) throw err;
      }
    },
    async close() {
      await clients.close();
    },
  };
}
