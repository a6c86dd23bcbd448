// The worker loop, at-least-once: records from the source topics run through the stateless steps; the sink
// records and the dead letters of a batch are written, and only then are the batch's offsets committed. A
// crash before the commit replays the batch; nothing is acknowledged that was not written.
import { Consumer, type Message, type MessagesStream, Producer } from "@platformatic/kafka";
import type { Logger } from "../src/log.ts";
import type { PipelineConfig } from "../src/pipeline-config.ts";
import { deadLetterRecord, describeFailure } from "./dead-letter.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { StatelessChain } from "./stateless.ts";

export interface WorkerOptions {
  config: PipelineConfig;
  clientId: string;
  log: Logger;
  metrics: RuntimeMetrics;
  /** how long a partial batch may wait; the pipeline's commit interval */
  lingerMs?: number;
  /**
   * Called once when the loop cannot go on (a write or commit failed, the stream broke, or a bad record with
   * no dead-letter topic). Nothing after the last commit is acknowledged, so the process should exit and be
   * restarted from there.
   */
  onFatal: (err: Error) => void;
}

export interface WorkerStats {
  in: number;
  out: number;
  filtered: number;
  deadLetters: number;
  batches: number;
}

type OutRecord = { topic: string; key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint };

export class Worker {
  private readonly opts: WorkerOptions;
  private readonly chain: StatelessChain;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private readonly pipeline: string;
  private stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  private batch: { source: Message[]; out: OutRecord[]; fetchedAt: number[]; counts: { out: number; filtered: number; dlq: number } } = Worker.empty();
  private flushing: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private failed?: Error;
  readonly stats: WorkerStats = { in: 0, out: 0, filtered: 0, deadLetters: 0, batches: 0 };
  joined = false;

  private static empty() {
    return { source: [], out: [], fetchedAt: [], counts: { out: 0, filtered: 0, dlq: 0 } };
  }

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    const t = opts.config.topology;
    this.chain = new StatelessChain(t);
    this.maxBatch = t.processing.maxInFlight;
    this.lingerMs = opts.lingerMs ?? t.processing.commitIntervalMs;
    this.pipeline = `${opts.config.pipeline.namespace}/${opts.config.pipeline.name}`;
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
    const t = this.opts.config.topology;
    this.stream = await this.consumer.consume({
      topics: t.source.topics,
      mode: "committed",
      fallbackMode: t.source.startFrom,
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
    if (this.failed) return;
    this.stats.in++;
    this.opts.metrics.recordsIn.inc();
    const t = this.opts.config.topology;
    const b = this.batch;
    b.source.push(m);
    b.fetchedAt.push(performance.now());
    const outcome = this.chain.process(m);
    if (outcome.ok) {
      for (const o of outcome.out) b.out.push({ topic: t.sink.topic, ...o });
      b.counts.out += outcome.out.length;
      b.counts.filtered += outcome.filtered;
    } else if (t.deadLetter) {
      b.out.push({ topic: t.deadLetter.topic, ...deadLetterRecord(m, outcome, this.pipeline) });
      b.counts.dlq++;
      this.opts.metrics.deadLetters.inc({ step: outcome.step, kind: outcome.kind });
    } else {
      // No dead-letter topic: stop, as Kafka Streams' default handler does, rather than lose the record.
      this.fail(new Error(`${describeFailure(m, outcome)}; the pipeline has no deadLetter topic, so the worker stops here`));
      return;
    }
    if (b.source.length >= this.maxBatch) {
      // Hold the stream while the batch is written: in-flight records stay bounded by maxInFlight.
      this.stream?.pause();
      this.scheduleFlush(0);
    } else if (!this.timer) {
      this.scheduleFlush(this.lingerMs);
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
    const b = this.batch;
    this.batch = Worker.empty();
    if (b.source.length === 0) return;
    const end = this.opts.metrics.commit.startTimer();
    try {
      if (b.out.length > 0) await this.producer.send({ messages: b.out });
      // One commit per partition, the last record's, awaited one at a time.
      const last = new Map<string, Message>();
      for (const m of b.source) last.set(`${m.topic}:${m.partition}`, m);
      for (const m of last.values()) await m.commit();
      end();
      const now = performance.now();
      const wall = Date.now();
      for (let i = 0; i < b.source.length; i++) {
        this.opts.metrics.processing.observe((now - (b.fetchedAt[i] ?? now)) / 1000);
        this.opts.metrics.endToEnd.observe(Math.max(0, wall - Number(b.source[i]?.timestamp ?? wall)) / 1000);
      }
      this.stats.out += b.counts.out;
      this.stats.filtered += b.counts.filtered;
      this.stats.deadLetters += b.counts.dlq;
      this.stats.batches++;
      this.opts.metrics.recordsOut.inc(b.counts.out);
      this.opts.metrics.filtered.inc(b.counts.filtered);
    } finally {
      if (this.stream?.isPaused() && !this.failed) this.stream.resume();
    }
  }

  /** Stops fetching, writes and commits what was read, then leaves the group. Rejects if the last write failed. */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.stream?.pause();
    const lastWrite = this.failed
      ? undefined
      : await this.flushing
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
