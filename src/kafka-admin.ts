// The operator's Kafka admin calls: internal topics and consumer groups. One admin client per cluster and
// credentials, shared by the pipelines on it.
import { Admin, ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from "@platformatic/kafka";
import { onlyCodes } from "./kafka-errors.ts";

export interface KafkaConnection {
  bootstrapServers: string[];
  sasl?: { mechanism: "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"; username: string; password: string };
  tls?: { ca?: string; cert?: string; key?: string };
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
  ensureTopics(conn: KafkaConnection, topics: TopicRequest[]): Promise<{ created: string[]; reconfigured: string[] }>;
  deleteTopics(conn: KafkaConnection, topics: string[]): Promise<void>;
  /** gives a topic `count` partitions; one that has as many already is left as it is */
  growTopic(conn: KafkaConnection, topic: string, count: number): Promise<void>;
  /** deletes a consumer group; a group that does not exist is not an error */
  deleteGroup(conn: KafkaConnection, group: string): Promise<void>;
  close(): Promise<void>;
}

/** Kafka error codes that mean "already so" for the calls above. */
const TOPIC_ALREADY_EXISTS = 36;
const UNKNOWN_TOPIC_OR_PARTITION = 3;
const GROUP_ID_NOT_FOUND = 69;
const INVALID_PARTITIONS = 37;

export function platformaticKafkaAdmin(clientId = "conveyor-operator"): KafkaAdmin {
  const clients = new Map<string, Admin>();
  const client = (conn: KafkaConnection): Admin => {
    const key = JSON.stringify([conn.bootstrapServers, conn.sasl, conn.tls]);
    let a = clients.get(key);
    if (!a) {
      a = new Admin({
        clientId,
        bootstrapBrokers: conn.bootstrapServers,
        retries: 2,
        timeout: 10_000,
        ...(conn.sasl ? { sasl: { mechanism: conn.sasl.mechanism, username: conn.sasl.username, password: conn.sasl.password } } : {}),
        ...(conn.tls ? { tls: { ...conn.tls } } : {}),
      });
      clients.set(key, a);
    }
    return a;
  };
  return {
    async partitionCounts(conn, topics) {
      const out = new Map<string, number>();
      const a = client(conn);
      const existing = new Set(await a.listTopics());
      const wanted = topics.filter((t) => existing.has(t));
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
      const created: string[] = [];
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
          await a.createTopics({
            topics: [t.name],
            partitions: t.partitions,
            replicas: -1,
            configs: Object.entries(t.configs).map(([name, value]) => ({ name, value })),
          });
          created.push(t.name);
        } catch (err) {
          if (!onlyCodes(err, [TOPIC_ALREADY_EXISTS])) throw err;
        }
      }
      return { created, reconfigured };
    },
    async deleteTopics(conn, topics) {
      if (topics.length === 0) return;
      const a = client(conn);
      const existing = new Set(await a.listTopics());
      const present = topics.filter((t) => existing.has(t));
      if (present.length === 0) return;
      try {
        await a.deleteTopics({ topics: present });
      } catch (err) {
        if (!onlyCodes(err, [UNKNOWN_TOPIC_OR_PARTITION])) throw err;
      }
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
      await Promise.all([...clients.values()].map((a) => a.close()));
      clients.clear();
    },
  };
}
