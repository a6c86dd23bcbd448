// Kafka helpers for suites: topics, keyed produce, read-to-end, offsets and lag through the admin API.
import { Admin, Consumer, type Message } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { readCommittedOnly } from "../../runtime/kafka/read-committed.ts";
import { internalTopicRequests } from "../../src/reconcile.ts";
import type { CompiledTopology } from "../../src/topology/compile.ts";
import { waitFor } from "../env/proc.ts";

/** A bootstrap string as Kafka tools write it ("host:port,host:port") as the client's list. */
export function brokers(bootstrap: string): string[] {
  return bootstrap.split(",").map((b) => b.trim());
}

export function admin(bootstrap: string): Admin {
  return new Admin({ clientId: "test-admin", bootstrapBrokers: brokers(bootstrap) });
}

export async function createTopic(a: Admin, topic: string, partitions: number, configs: Record<string, string> = {}): Promise<void> {
  await a.createTopics({
    topics: [topic],
    partitions,
    replicas: 1,
    configs: Object.entries(configs).map(([name, value]) => ({ name, value })),
  });
  await waitFor(async () => (await a.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)?.partitionsCount === partitions, {
    what: `topic ${topic} to have ${partitions} partitions`,
    timeoutMs: 15_000,
  });
}

/** A topology's internal topics, each with `partitions` partitions and the configs the operator gives it. */
export async function createInternalTopics(a: Admin, topology: CompiledTopology, partitions: number): Promise<void> {
  for (const t of internalTopicRequests(topology, partitions)) await createTopic(a, t.name, t.partitions, t.configs);
}

export interface KeyedRecord {
  key: string;
  value: string;
}

/** Produces records in batches with acks=all. */
export async function produce(bootstrap: string, topic: string, records: KeyedRecord[], batch = 1000): Promise<void> {
  const producer = new Producer({ clientId: "test-producer", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true });
  try {
    for (let i = 0; i < records.length; i += batch) {
      await producer.send({
        messages: records.slice(i, i + batch).map((r) => ({ topic, key: Buffer.from(r.key), value: Buffer.from(r.value) })),
      });
    }
  } finally {
    await producer.close();
  }
}

export function keyedRecords(n: number, prefix = "r"): KeyedRecord[] {
  return Array.from({ length: n }, (_, i) => ({ key: `key-${i % 97}`, value: `${prefix}-${i}` }));
}

/** Latest offsets per partition (read_committed by default, so that transaction markers do not count). */
export async function endOffsets(a: Admin, topic: string, readCommitted = true): Promise<bigint[]> {
  const md = await a.metadata({ topics: [topic], forceUpdate: true });
  const count = md.topics.get(topic)?.partitionsCount ?? 0;
  const res = await a.listOffsets({
    topics: [{ name: topic, partitions: Array.from({ length: count }, (_, p) => ({ partitionIndex: p, timestamp: -1n })) }],
    isolationLevel: readCommitted ? 1 : 0,
  });
  const out = new Array<bigint>(count).fill(0n);
  for (const p of res.find((t) => t.name === topic)?.partitions ?? []) out[p.partitionIndex] = p.offset;
  return out;
}

/** Committed offsets of a group per partition; -1 where the group has none. */
export async function committedOffsets(a: Admin, group: string, topic: string, partitions: number): Promise<bigint[]> {
  const res = await a.listConsumerGroupOffsets({ groups: [{ groupId: group, topics: [{ name: topic, partitionIndexes: [...Array(partitions).keys()] }] }] });
  const out = new Array<bigint>(partitions).fill(-1n);
  for (const t of res[0]?.topics ?? []) if (t.name === topic) for (const p of t.partitions) out[p.partitionIndex] = p.committedOffset;
  return out;
}

/** Total lag of a group on a topic; a partition without a committed offset counts from 0. */
export async function groupLag(a: Admin, group: string, topic: string): Promise<bigint> {
  const end = await endOffsets(a, topic);
  const committed = await committedOffsets(a, group, topic, end.length);
  return end.reduce((sum, e, i) => sum + (e - ((committed[i] ?? -1n) < 0n ? 0n : (committed[i] as bigint))), 0n);
}

/**
 * Reads a topic from the start up to its current end offsets, with a throwaway group. The stop rule is the
 * fetch position, not the last record seen: under read_committed, aborted records and transaction markers at
 * the end of a partition are never delivered.
 */
export async function readToEnd(bootstrap: string, topic: string, opts: { readCommitted?: boolean; timeoutMs?: number } = {}): Promise<Message[]> {
  const out: Message[] = [];
  await forEachToEnd(bootstrap, topic, (m) => out.push(m), opts);
  return out;
}

/** Visits every record of a topic up to its end as it is now, without keeping them; returns how many. */
export async function forEachToEnd(
  bootstrap: string,
  topic: string,
  visit: (m: Message) => void,
  opts: { readCommitted?: boolean; timeoutMs?: number } = {},
): Promise<number> {
  const a = admin(bootstrap);
  const end = await endOffsets(a, topic, opts.readCommitted ?? true).finally(() => a.close());
  let seen = 0;
  if (end.every((e) => e === 0n)) return seen;
  // The library keeps aborted records under read_committed; the runtime's filter drops them (runtime/kafka/read-committed.ts).
  const consumer = readCommittedOnly(
    new Consumer({ clientId: "test-reader", groupId: `test-reader-${Date.now()}-${Math.random()}`, bootstrapBrokers: brokers(bootstrap) }),
  );
  try {
    const stream = await consumer.consume({
      topics: [topic],
      mode: "earliest",
      autocommit: false,
      isolationLevel: opts.readCommitted === false ? 0 : 1,
      maxWaitTime: 200,
    });
    const reachedEnd = () => end.every((e, p) => e === 0n || (stream.offsetsToFetch.get(`${topic}:${p}`) ?? 0n) >= e);
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`reading ${topic} to its end timed out after ${seen} records`)), opts.timeoutMs ?? 60_000);
      const finish = () => {
        if (!reachedEnd()) return;
        clearTimeout(deadline);
        resolve();
      };
      stream.on("data", (m: Message) => {
        if (m.offset < (end[m.partition] ?? 0n)) {
          seen++;
          visit(m);
        }
        finish();
      });
      stream.on("fetch", finish);
      stream.on("error", (err: Error) => {
        clearTimeout(deadline);
        reject(err);
      });
    }).finally(() => stream.close());
  } finally {
    await consumer.close(true);
  }
  return seen;
}

/**
 * Writes records in one Kafka transaction: read_committed readers (workers, the lag reader) see all of them at
 * the moment it commits, as one burst. The transaction timeout is a minute, so a large one is not aborted.
 */
export async function produceInOneTransaction(
  bootstrap: string,
  transactionalId: string,
  records: { topic: string; key?: Buffer; value: Buffer }[],
): Promise<void> {
  const producer = new Producer({ clientId: "burst", bootstrapBrokers: brokers(bootstrap), transactionalId, idempotent: true, acks: -1, timeout: 60_000 });
  try {
    const tx = await producer.beginTransaction({ producerId: -1n, producerEpoch: -1 });
    for (let i = 0; i < records.length; i += 5_000) await tx.send({ messages: records.slice(i, i + 5_000) });
    await tx.commit();
  } finally {
    await producer.close();
  }
}

export interface SteadyLoad {
  /** records written to each partition */
  perPartition: number[];
  /** when the partition count was first seen above what it was at the start */
  grownAt?: number;
}

/**
 * Writes `rate` records a second for `durationMs`, in batches every 100 ms, round robin over the partitions
 * the topic has, counted again every second: partitions added meanwhile take records as soon as they exist.
 * `value(id)` makes the id-th record, ids from 0.
 */
export async function produceSteadily(
  bootstrap: string,
  topic: string,
  opts: { rate: number; durationMs: number; value: (id: number) => Buffer },
): Promise<SteadyLoad> {
  const a = admin(bootstrap);
  const producer = new Producer({ clientId: "steady", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true, retries: 10, retryDelay: 250 });
  const count = async () => (await a.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)?.partitionsCount ?? 0;
  try {
    const out: SteadyLoad = { perPartition: [] };
    const first = await count();
    let partitions = first;
    let counted = Date.now();
    let id = 0;
    const start = Date.now();
    for (let tick = 0; Date.now() < start + opts.durationMs; tick++) {
      // Each batch at its time: a deadline-bound wait on the clock.
      await waitFor(() => Date.now() >= start + tick * 100, { what: `batch ${tick} of the steady load`, timeoutMs: 10_000, intervalMs: 10 });
      if (Date.now() - counted >= 1_000) {
        partitions = await count();
        counted = Date.now();
        if (partitions > first && out.grownAt === undefined) out.grownAt = counted;
      }
      const messages = Array.from({ length: Math.round(opts.rate / 10) }, () => {
        const partition = id % partitions;
        out.perPartition[partition] = (out.perPartition[partition] ?? 0) + 1;
        return { topic, partition, value: opts.value(id++) };
      });
      await producer.send({ messages });
    }
    return out;
  } finally {
    await producer.close();
    await a.close();
  }
}

/** A header's value as text, or undefined when the record has none of that name. */
export function header(h: Map<Buffer, Buffer>, name: string): string | undefined {
  return [...h].find(([k]) => k.toString() === name)?.[1].toString();
}
