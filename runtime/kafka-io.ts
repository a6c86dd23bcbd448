// The runtime's reads outside its consumer group: partition counts, end offsets, and a bounded read of one
// changelog partition from an offset to its end (a restore).
import { Admin, Consumer, type Message } from "@platformatic/kafka";
import { readCommittedOnly } from "./read-committed.ts";

export class KafkaIo {
  private readonly admin: Admin;
  private readonly brokers: string[];
  private readonly clientId: string;

  constructor(brokers: string[], clientId: string) {
    this.brokers = brokers;
    this.clientId = clientId;
    this.admin = new Admin({ clientId: `${clientId}-admin`, bootstrapBrokers: brokers });
  }

  async partitionCounts(topics: string[]): Promise<Map<string, number>> {
    const md = await this.admin.metadata({ topics, forceUpdate: true });
    const out = new Map<string, number>();
    for (const t of topics) {
      const n = md.topics.get(t)?.partitionsCount;
      if (n === undefined) throw new Error(`topic ${t} does not exist`);
      out.set(t, n);
    }
    return out;
  }

  /** The topic's id: a topic deleted and created again under the same name has a new one. */
  async topicId(topic: string): Promise<string> {
    const md = await this.admin.metadata({ topics: [topic], forceUpdate: true });
    const id = md.topics.get(topic)?.id;
    if (id === undefined) throw new Error(`topic ${topic} does not exist`);
    return id;
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

  /**
   * Reads partition `partition` of `topic` from `from` to its end as it is now, in batches. The other
   * partitions start at their ends, so nothing of theirs is fetched. Returns how many records it read.
   */
  async readPartition(
    topic: string,
    partition: number,
    from: bigint,
    opts: { readCommitted: boolean; onRecords: (batch: Message[]) => Promise<void>; timeoutMs?: number },
  ): Promise<number> {
    const count = (await this.partitionCounts([topic])).get(topic) ?? 0;
    const ends = await this.endOffsets(topic, count, opts.readCommitted);
    const end = ends[partition] ?? 0n;
    if (from >= end) return 0;
    const consumer = readCommittedOnly(
      new Consumer({
        clientId: `${this.clientId}-restore`,
        groupId: `${this.clientId}-restore-${topic}-${partition}-${process.pid}-${Date.now()}`,
        bootstrapBrokers: this.brokers,
      }),
    );
    let read = 0;
    try {
      const stream = await consumer.consume({
        topics: [topic],
        mode: "manual",
        offsets: ends.map((e, p) => ({ topic, partition: p, offset: p === partition ? from : e })),
        autocommit: false,
        isolationLevel: opts.readCommitted ? 1 : 0,
        maxWaitTime: 100,
        maxBytes: 2 * 1024 * 1024, // not the default 50 MB: a restore may be long, and memory stays bounded
      });
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(
          () => reject(new Error(`restoring ${topic}/${partition} timed out at ${read} records of ${end - from}`)),
          opts.timeoutMs ?? 300_000,
        );
        let pending: Message[] = [];
        let writing = Promise.resolve();
        const done = () => (stream.offsetsToFetch.get(`${topic}:${partition}`) ?? 0n) >= end;
        const drain = (final: boolean) => {
          const batch = pending;
          pending = [];
          writing = writing.then(() => (batch.length > 0 ? opts.onRecords(batch) : undefined));
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
      }).finally(() => stream.close());
    } finally {
      await consumer.close(true);
    }
    return read;
  }

  close(): Promise<void> {
    return this.admin.close();
  }
}
