// The runtime's reads outside its consumer group: partition counts, end offsets, and a bounded read of one
// changelog partition from an offset to its end (a restore).
import { Admin, ConfigResourceTypes, Consumer, type Message } from "@platformatic/kafka";
import type { ClientConnectionOptions } from "../../src/kafka-client.ts";
import { onlyCodes } from "../../src/kafka-errors.ts";
import { LIMIT_CONFIGS, limitsFrom, type TopicLimits } from "../topic-limits.ts";
import { readCommittedOnly } from "./read-committed.ts";

const UNSTABLE_OFFSET_COMMIT = 88;
/** How long a new owner waits for an earlier owner's transaction to end; past the transaction timeout. */
const STABLE_DEADLINE_MS = 120_000;

/** A restore (or any readPartition) fails when no record has come for this long: a stall, whatever the size. */
export const RESTORE_STALL_MS = 60_000;

export class KafkaIo {
  private readonly admin: Admin;
  private readonly connection: ClientConnectionOptions;
  private readonly clientId: string;
  private readonly restoreGroupPrefix: string;

  /**
   * `restoreGroupPrefix` starts the group id of each restore reader (the library's consumer always joins one):
   * under the pipeline's own prefix, so that one prefixed ACL covers them (src/kafka-acls.ts).
   */
  constructor(connection: ClientConnectionOptions, clientId: string, restoreGroupPrefix = `${clientId}-`) {
    this.connection = connection;
    this.clientId = clientId;
    this.restoreGroupPrefix = restoreGroupPrefix;
    this.admin = new Admin({ clientId: `${clientId}-admin`, ...connection });
  }

  /**
   * Each topic's partition count and id, from one metadata request: a topic deleted and created again under the
   * same name has a new id.
   */
  async describeTopics(topics: string[]): Promise<Map<string, { partitions: number; id: string }>> {
    const md = await this.admin.metadata({ topics, forceUpdate: true });
    const out = new Map<string, { partitions: number; id: string }>();
    for (const t of topics) {
      const d = md.topics.get(t);
      if (d?.partitionsCount === undefined || d.id === undefined) throw new Error(`topic ${t} does not exist`);
      out.set(t, { partitions: d.partitionsCount, id: d.id });
    }
    return out;
  }

  async partitionCounts(topics: string[]): Promise<Map<string, number>> {
    return new Map([...(await this.describeTopics(topics))].map(([t, d]) => [t, d.partitions]));
  }

  async topicId(topic: string): Promise<string> {
    return (await this.describeTopics([topic])).get(topic)?.id as string;
  }

  /** The next offset to be written in each partition; read_committed gives the last stable offset. */
  async endOffsets(topic: string, partitions: number, readCommitted: boolean): Promise<bigint[]> {
    const res = await this.admin.listOffsets({
      topics: [{ name: topic, partitions: Array.from({ length: partitions }, (_, p) => ({ partitionIndex: p, timestamp: -1n })) }],
      isolationLevel: readCommitted ? 1 : 0,
    });
    const out = new Array<bigint>(partitions).fill(0n);
    for (const p of res.find((t) => t.name === topic)?.partitions ?? []) out[p.partitionIndex] = p.offset;
    return out;
  }

  /** The first offset of each listed partition still in the log (startFrom: earliest), or its end (latest). */
  async offsetsAt(topic: string, partitions: number[], at: "earliest" | "latest", readCommitted: boolean): Promise<Map<number, bigint>> {
    const res = await this.admin.listOffsets({
      topics: [{ name: topic, partitions: partitions.map((p) => ({ partitionIndex: p, timestamp: at === "earliest" ? -2n : -1n })) }],
      isolationLevel: readCommitted ? 1 : 0,
    });
    const out = new Map<number, bigint>();
    for (const p of res.find((t) => t.name === topic)?.partitions ?? []) out.set(p.partitionIndex, p.offset);
    for (const p of partitions) if (!out.has(p)) throw new Error(`no ${at} offset for ${topic}/${p}`);
    return out;
  }

  /**
   * The group's committed offsets of these partitions, waiting while a transaction that commits offsets for one
   * of them is still open (KIP-447's require_stable). Without the wait, a new owner could read the offsets
   * before a zombie's transaction commits, restore its state, and then see the offsets jump past records whose
   * state it never restored. A partition with no committed offset is left out.
   */
  async stableCommittedOffsets(
    group: string,
    assigned: { topic: string; partitions: number[] }[],
    deadlineMs = STABLE_DEADLINE_MS,
  ): Promise<Map<string, bigint>> {
    const deadline = Date.now() + deadlineMs;
    for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
      try {
        const res = await this.admin.listConsumerGroupOffsets({
          groups: [{ groupId: group, topics: assigned.map((a) => ({ name: a.topic, partitionIndexes: a.partitions })) }],
          requireStable: true,
        });
        const out = new Map<string, bigint>();
        for (const g of res)
          for (const t of g.topics) for (const p of t.partitions) if (p.committedOffset >= 0n) out.set(`${t.name}:${p.partitionIndex}`, p.committedOffset);
        return out;
      } catch (err) {
        if (!onlyCodes(err, [UNSTABLE_OFFSET_COMMIT]) || Date.now() + delay > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /**
   * The end of a partition once no transaction is open on it: its last stable offset equals its high
   * watermark. A new owner restores a changelog only then: the transaction of the owner before it may have
   * committed its offsets already while the marker has not reached this partition yet.
   */
  async stableEnd(topic: string, partition: number, partitions: number, deadlineMs = STABLE_DEADLINE_MS): Promise<bigint> {
    return (await this.stableEnds(topic, partition, partitions, deadlineMs))[partition] ?? 0n;
  }

  /** Every partition's last stable offset, read once `partition`'s equals its high watermark (see stableEnd). */
  private async stableEnds(topic: string, partition: number, partitions: number, deadlineMs = STABLE_DEADLINE_MS): Promise<bigint[]> {
    const deadline = Date.now() + deadlineMs;
    for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
      const [stable, high] = await Promise.all([this.endOffsets(topic, partitions, true), this.endOffsets(topic, partitions, false)]);
      const lso = stable[partition] ?? 0n;
      if (lso === (high[partition] ?? 0n)) return stable;
      if (Date.now() + delay > deadline)
        throw new Error(`${topic}/${partition} still has an open transaction after ${deadlineMs} ms (stable offset ${lso}, end ${high[partition]})`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  /**
   * Reads partition `partition` of `topic` from `from` to its end as it is now, in batches. The other
   * partitions start at their ends, so nothing of theirs is fetched. Returns how many records it read, and the
   * end it read to: the offset the reader is in step with afterwards.
   */
  async readPartition(
    topic: string,
    partition: number,
    from: bigint,
    opts: {
      readCommitted: boolean;
      onRecords: (batch: Message[]) => Promise<void>;
      /** no record read for this long fails the read (a stall, not a size: a large restore may take long) */
      stallMs?: number;
      /** told the end once it is known, and the offset reached after each batch written */
      onProgress?: (next: bigint, end: bigint) => void;
      /** stops the read: it fails with the signal's reason once the batch being written is written */
      signal?: AbortSignal;
    },
  ): Promise<{ records: number; end: bigint }> {
    const count = (await this.partitionCounts([topic])).get(topic) ?? 0;
    // Under read_committed, the end is where no transaction is open any more (see stableEnd). The other
    // partitions are set at their ends too, so that nothing of theirs is fetched.
    const ends = opts.readCommitted ? await this.stableEnds(topic, partition, count) : await this.endOffsets(topic, count, false);
    const end = ends[partition] ?? 0n;
    opts.signal?.throwIfAborted();
    opts.onProgress?.(from, end);
    if (from >= end) return { records: 0, end: from };
    const consumer = readCommittedOnly(
      new Consumer({
        clientId: `${this.clientId}-restore`,
        groupId: `${this.restoreGroupPrefix}${this.clientId}-${topic}-${partition}-${process.pid}-${Date.now()}`,
        ...this.connection,
      }),
    );
    let read = 0;
    /** what a stop (opts.signal) does to the read under way; removed once the read is over */
    let onAbort: (() => void) | undefined;
    try {
      const stream = await consumer.consume({
        topics: [topic],
        mode: "manual",
        offsets: ends.map((e, p) => ({ topic, partition: p, offset: p === partition ? from : e })),
        autocommit: false,
        // never the library's default (latest): a restore that jumped to the end would "succeed" with nothing
        // read. The caller starts at or past the log start; if retention moves it during the read, this fails
        // and the restore is tried again from the new start.
        fallbackMode: "fail",
        isolationLevel: opts.readCommitted ? 1 : 0,
        maxWaitTime: 100,
        maxBytes: 2 * 1024 * 1024, // not the default 50 MB: a restore may be long, and memory stays bounded
      });
      await new Promise<void>((resolve, reject) => {
        const stallMs = opts.stallMs ?? RESTORE_STALL_MS;
        let deadline: NodeJS.Timeout;
        const armStall = () => {
          clearTimeout(deadline);
          deadline = setTimeout(
            () => reject(new Error(`reading ${topic}/${partition} made no progress for ${stallMs} ms, at ${read} records of ${end - from}`)),
            stallMs,
          );
        };
        armStall();
        let pending: Message[] = [];
        let writing = Promise.resolve();
        const done = () => (stream.offsetsToFetch.get(`${topic}:${partition}`) ?? 0n) >= end;
        const drain = (final: boolean) => {
          const batch = pending;
          pending = [];
          writing = writing.then(async () => {
            if (batch.length === 0) return;
            await opts.onRecords(batch);
            opts.onProgress?.((batch.at(-1) as Message).offset + 1n, end);
          });
          if (final)
            writing.then(
              () => {
                clearTimeout(deadline);
                resolve();
              },
              (err: unknown) => {
                clearTimeout(deadline);
                reject(err);
              },
            );
        };
        // The stream emits "fetch" before it pushes that fetch's records, and pushes them synchronously while it
        // flows: at a "fetch", everything fetched before has been delivered unless the stream holds it buffered.
        let finished = false;
        const finish = () => {
          finished = true;
          stream.pause();
          drain(true);
        };
        stream.on("data", (m: Message) => {
          if (finished || m.partition !== partition || m.offset >= end) return;
          armStall();
          pending.push(m);
          read++;
          if (pending.length >= 1000) drain(false);
          if (m.offset + 1n >= end) finish();
        });
        // Under read_committed the last offsets may be transaction markers or aborted records, never delivered.
        stream.on("fetch", () => {
          if (!finished && done() && stream.readableLength === 0) finish();
        });
        stream.on("error", (err: Error) => {
          clearTimeout(deadline);
          reject(err);
        });
        onAbort = () => {
          finished = true;
          stream.pause();
          clearTimeout(deadline);
          const reason = opts.signal?.reason as unknown;
          // nothing is left half written: the batch in hand goes to the store first
          writing.then(
            () => reject(reason),
            () => reject(reason),
          );
        };
        if (opts.signal?.aborted) onAbort();
        else opts.signal?.addEventListener("abort", onAbort, { once: true });
      }).finally(() => stream.close());
    } finally {
      // One signal stops all of an assignment's restores: a listener left on it for each would add up.
      if (onAbort) opts.signal?.removeEventListener("abort", onAbort);
      await consumer.close(true);
    }
    return { records: read, end };
  }

  /** What each topic's configuration lets a producer write into it (see topic-limits.ts). */
  async topicLimits(topics: string[]): Promise<Map<string, TopicLimits>> {
    const described = await this.admin.describeConfigs({
      resources: topics.map((name) => ({ resourceType: ConfigResourceTypes.TOPIC, resourceName: name, configurationKeys: LIMIT_CONFIGS })),
    });
    const out = new Map<string, TopicLimits>();
    for (const topic of topics) {
      const d = described.find((x) => x.resourceName === topic);
      out.set(topic, limitsFrom(new Map((d?.configs ?? []).map((c) => [c.name, c.value]))));
    }
    return out;
  }

  /**
   * Deletes the records of `topic` below the given offsets (DeleteRecords), as Kafka Streams purges its
   * repartition topics: the log start moves there, and the broker frees whole segments below it.
   */
  async deleteRecordsBefore(topic: string, offsets: Map<number, bigint>): Promise<void> {
    if (offsets.size === 0) return;
    await this.admin.deleteRecords({ topics: [{ name: topic, partitions: [...offsets].map(([partition, offset]) => ({ partition, offset })) }] });
  }

  close(): Promise<void> {
    return this.admin.close();
  }
}
