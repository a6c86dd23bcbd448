// The walking skeleton's worker loop: records from the source topics go to the sink topic, and a partition's
// offset is committed only after the batch that holds its records has been written (at-least-once).
import { Consumer, type Message, type MessagesStream, Producer } from "@platformatic/kafka";
import type { Logger } from "../src/log.ts";
import type { PipelineConfig } from "../src/pipeline-config.ts";

export interface CopierOptions {
  config: PipelineConfig;
  clientId: string;
  log: Logger;
  /** records per batch before a write */
  maxBatch?: number;
  /** how long a partial batch may wait */
  lingerMs?: number;
  /**
   * Called once when the loop cannot go on (a write or commit failed, the stream broke). Nothing after the
   * last commit is acknowledged, so the process should exit and be restarted from there.
   */
  onFatal: (err: Error) => void;
}

export interface CopierStats {
  in: number;
  out: number;
  batches: number;
}

export class Copier {
  private readonly opts: Required<Pick<CopierOptions, "maxBatch" | "lingerMs">> & CopierOptions;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  private batch: Message[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private failed?: Error;
  readonly stats: CopierStats = { in: 0, out: 0, batches: 0 };
  joined = false;

  constructor(opts: CopierOptions) {
    this.opts = { maxBatch: 1000, lingerMs: 20, ...opts };
    const brokers = opts.config.kafka.bootstrapServers;
    this.consumer = new Consumer({
      clientId: opts.clientId,
      groupId: opts.config.consumerGroup,
      bootstrapBrokers: brokers,
      sessionTimeout: 10_000,
      heartbeatInterval: 1_000,
      rebalanceTimeout: 30_000,
    });
    this.producer = new Producer({ clientId: `${opts.clientId}-producer`, bootstrapBrokers: brokers, idempotent: true, acks: -1 });
    this.consumer.on("consumer:group:join", (p) => {
      this.joined = true;
      opts.log.info("joined consumer group", { group: p.groupId, memberId: p.memberId, generation: p.generationId, assignments: p.assignments });
    });
    this.consumer.on("consumer:group:rebalance", () => opts.log.info("rebalance"));
  }

  get healthy(): boolean {
    return this.failed === undefined;
  }

  async start(): Promise<void> {
    this.stream = await this.consumer.consume({
      topics: this.opts.config.topology.source.topics,
      mode: "committed",
      fallbackMode: "earliest",
      autocommit: false,
      maxWaitTime: 200,
    });
    this.stream.on("data", (m: Message) => this.onRecord(m));
    this.stream.on("error", (err: Error) => this.fail(err));
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.opts.log.error("worker loop failed", { error: err.message });
    this.opts.onFatal(err);
  }

  private onRecord(m: Message): void {
    this.stats.in++;
    this.batch.push(m);
    if (this.batch.length >= this.opts.maxBatch) {
      // Hold the stream while the batch is written: memory stays bounded.
      this.stream?.pause();
      this.scheduleFlush(0);
    } else if (!this.timer) {
      this.scheduleFlush(this.opts.lingerMs);
    }
  }

  private scheduleFlush(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flushing.then(() => this.flush()).catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
    }, ms);
  }

  private async flush(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    try {
      await this.producer.send({
        messages: batch.map((m) => ({
          topic: this.opts.config.topology.sink.topic,
          key: m.key,
          value: m.value,
          headers: m.headers,
          timestamp: m.timestamp,
        })),
      });
      // One commit per partition, the last record's, awaited one at a time.
      const last = new Map<string, Message>();
      for (const m of batch) last.set(`${m.topic}:${m.partition}`, m);
      for (const m of last.values()) await m.commit();
      this.stats.out += batch.length;
      this.stats.batches++;
    } finally {
      if (this.stream?.isPaused()) this.stream.resume();
    }
  }

  /** Stops fetching, writes and commits what was read, then leaves the group. Rejects if the last write failed. */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.stream?.pause();
    const lastWrite = await this.flushing
      .then(() => this.flush())
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    await this.stream?.close();
    await this.consumer.close();
    await this.producer.close();
    if (lastWrite) throw lastWrite;
    if (this.failed) throw this.failed;
  }
}
