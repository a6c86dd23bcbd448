// The writes of one flush (after Kafka Streams' RecordCollector): sink, late, dead-letter, repartition, marker
// and changelog records. It checks each record for the sink, the late topic and the DLQ against what its topic
// takes (topic-limits.ts), sends a refused one to the DLQ with the reason, splits the records into produce
// requests, and writes them with the batch's offsets through the producer. A record the broker refuses after
// all (refusals.ts) goes to the DLQ too, and the batch is written again.
import type { Message, ProduceResult } from "@platformatic/kafka";
import { errorMessage, type Logger } from "../src/log.ts";
import { type CompiledTopology, sinkTopics } from "../src/topology/compile.ts";
import { deadLetterRecord, describeFailure, refit } from "./dead-letter.ts";
import type { KafkaIo } from "./kafka/kafka-io.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import type { OffsetsCommit, OutputProducer, Send } from "./producer.ts";
import { RefusedRecord, recordRefusal } from "./refusals.ts";
import type { OutRecord } from "./stages.ts";
import type { Failure, SourceRecord } from "./stateless.ts";
import { BATCH_OVERHEAD_BYTES, DEFAULT_TOPIC_LIMITS, refusal, type TopicLimits } from "./topic-limits.ts";

/** What the stream thread read since the last flush, and what it made of it. */
export interface Batch {
  source: Message[];
  /** the repartition topic's records, run through the keyed stage when the batch is flushed */
  keyed: Message[];
  out: OutRecord[];
  fetchedAt: number[];
  counts: { in: number; out: number; filtered: number; dlq: number; aggregated: number; late: number; lateDropped: number };
  /** metric updates that count only once the batch is committed: a discarded batch is read and counted again */
  onCommit: (() => void)[];
}

/** Per changelog topic, per partition: the offset just past a batch's writes there. */
export type ChangelogEnds = Map<string, Map<number, bigint>>;

export function emptyBatch(): Batch {
  return {
    source: [],
    keyed: [],
    out: [],
    fetchedAt: [],
    counts: { in: 0, out: 0, filtered: 0, dlq: 0, aggregated: 0, late: 0, lateDropped: 0 },
    onCommit: [],
  };
}

export interface CollectorOptions {
  topology: CompiledTopology;
  /** `namespace/name`, for the dead letters' headers */
  pipeline: string;
  /** the late topics of the windows that send late records to one */
  lateTopics: string[];
  /** the changelog topics whose written offsets write() reports */
  changelogTopics: string[];
  io: KafkaIo;
  producer: OutputProducer;
  log: Logger;
  metrics: RuntimeMetrics;
  /** the worker cannot go on: a record it cannot write, and no DLQ to take it */
  fail: (err: Error) => void;
}

/** Rounds of writing one batch again after refusals (write): a bound, should every round find a record. */
const MAX_REFUSAL_ROUNDS = 20;

/** Bytes of records per produce request: a broker refuses a batch over message.max.bytes (1 MiB by default). */
const REQUEST_BYTES = 900_000;

export class RecordCollector {
  private readonly opts: CollectorOptions;
  /** what the sink, late and DLQ topics take, read at start; empty when their configuration could not be read */
  private limits = new Map<string, TopicLimits>();
  /** why this collector stopped the worker, once it has */
  private stopped?: Error;

  constructor(opts: CollectorOptions) {
    this.opts = opts;
  }

  private get dlq(): string | undefined {
    return this.opts.topology.deadLetter?.topic;
  }

  private stop(err: Error): void {
    this.stopped ??= err;
    this.opts.fail(err);
  }

  /** The output topics' limits (topic-limits.ts); Kafka's defaults for those whose configuration cannot be read. */
  async readLimits(): Promise<void> {
    const t = this.opts.topology;
    const topics = [...new Set([...sinkTopics(t), ...(this.dlq ? [this.dlq] : []), ...this.opts.lateTopics])];
    try {
      this.limits = await this.opts.io.topicLimits(topics);
    } catch (err) {
      this.limits = new Map(topics.map((topic) => [topic, DEFAULT_TOPIC_LIMITS]));
      this.opts.log.warn("could not read the output topics' configuration: records are checked against Kafka's defaults", { topics, error: errorMessage(err) });
    }
  }

  /** A record that failed a step, to the DLQ; without one the worker stops, as Kafka Streams' default handler does. */
  deadLetter(b: Batch, r: SourceRecord, failure: Failure): void {
    const dlq = this.dlq;
    if (!dlq) {
      this.stop(new Error(`${describeFailure(r, failure)}; the pipeline has no deadLetter topic, so the worker stops here`));
      return;
    }
    b.out.push({ topic: dlq, ...deadLetterRecord(r, failure, this.opts.pipeline) });
    b.counts.dlq++;
    b.onCommit.push(() => this.opts.metrics.deadLetters.inc({ step: failure.step, kind: failure.kind }));
  }

  /**
   * The batch's records bound for the sink, the late topic or the DLQ, each checked against what its topic takes.
   * Without a DLQ the worker stops before writing, as for any record it cannot write: then nothing.
   */
  screened(b: Batch, now: number): OutRecord[] {
    if (this.limits.size === 0) return b.out;
    const out: OutRecord[] = [];
    for (const r of b.out) {
      const s = this.screenOne(b, r, now);
      if (!s) return [];
      out.push(s);
    }
    return out;
  }

  /**
   * One record checked against what its topic takes: the record itself when the broker takes it. One the broker
   * would refuse goes to the DLQ, as the record it was to be, with the reason; a DLQ record too large is cut to
   * fit the DLQ's own limit, and one whose timestamp the DLQ would refuse takes the time now. Undefined when the
   * worker stopped: the record cannot be written and there is no DLQ.
   */
  private screenOne(b: Batch, r: OutRecord, now: number): OutRecord | undefined {
    const limits = this.limits.get(r.topic);
    const why = limits && refusal(r, limits, now);
    if (!why) return r;
    const dlq = this.dlq;
    const dlqLimits = dlq ? this.limits.get(dlq) : undefined;
    if (r.topic === dlq && dlqLimits) {
      const stamp = refusal({ topic: r.topic, ...(r.timestamp !== undefined ? { timestamp: r.timestamp } : {}) }, dlqLimits, now) ? BigInt(now) : r.timestamp;
      const letter = { key: r.key, value: r.value, headers: r.headers ?? new Map(), timestamp: stamp ?? BigInt(now) };
      return { topic: r.topic, ...refit(letter, dlqLimits.maxMessageBytes - BATCH_OVERHEAD_BYTES) };
    }
    return this.divert(b, r, why, now);
  }

  /**
   * A record for the sink or the late topic that the broker refuses (or would), to the DLQ as kind `encode`,
   * step `sink` or `late`, with the reason. Undefined when there is no DLQ: the worker stops.
   */
  private divert(b: Batch, r: OutRecord, why: string, now: number): OutRecord | undefined {
    const dlq = this.dlq;
    if (!dlq) {
      this.stop(new Error(`a record for ${r.topic}: ${why}; the pipeline has no deadLetter topic, so the worker stops here`));
      return undefined;
    }
    const dlqLimits = this.limits.get(dlq);
    const step = sinkTopics(this.opts.topology).includes(r.topic) ? "sink" : "late";
    const copy = deadLetterRecord(
      {
        topic: r.topic,
        partition: r.partition ?? -1,
        offset: -1n,
        timestamp: BigInt(now),
        key: r.key ?? null,
        value: r.value ?? null,
        headers: r.headers ?? new Map(),
      },
      { ok: false, step, kind: "encode", error: why },
      this.opts.pipeline,
      dlqLimits ? dlqLimits.maxMessageBytes - BATCH_OVERHEAD_BYTES : undefined,
      now,
    );
    if (step === "sink") b.counts.out--;
    b.counts.dlq++;
    b.onCommit.push(() => this.opts.metrics.deadLetters.inc({ step, kind: "encode" }));
    return { topic: dlq, ...copy };
  }

  /**
   * Writes the batch's records, and commits its offsets with them. A record the broker refuses after all
   * (refusals.ts: a topic reconfigured since the start, a compacted sink given a record without a key) goes to
   * the DLQ, and the batch is written again, by a new producer (the old one counted the refused records in its
   * sequence numbers): first with the topics' limits read again, which catch a reconfigured topic; when they do
   * not explain the refusal, with the refused topics' records one per request, which names the record. Each
   * round diverts a record or sends a topic's records alone, so the rounds end; a refusal that neither explains
   * stops the worker, as before. Under exactly-once the failed rounds were aborted; under at-least-once their
   * records may be written twice. Returns, per changelog topic and partition, the offset just past the batch's
   * writes.
   */
  async write(b: Batch, out: OutRecord[], commit: OffsetsCommit | undefined, now: number): Promise<ChangelogEnds> {
    const alone = new Set<string>();
    const written: ChangelogEnds = new Map();
    for (let round = 0; ; round++) {
      written.clear();
      try {
        await this.opts.producer.write((send) => this.sendChunks(out, alone, send, written), commit);
        return written;
      } catch (err) {
        const refused = err instanceof RefusedRecord ? err.refusal : recordRefusal(err);
        if (!refused || round >= MAX_REFUSAL_ROUNDS) throw err;
        for (const topic of refused.topics) this.opts.metrics.refusals.inc({ topic });
        this.opts.log.warn("the broker refused records of a batch; writing the batch again without them", { reason: refused.reason, round });
        await this.opts.producer.renew();
        if (err instanceof RefusedRecord) {
          const r = out[err.index] as OutRecord;
          if (r.topic === this.dlq) throw new Error(`the dead-letter topic ${this.dlq} refused a dead letter: ${refused.reason}`);
          const diverted = this.divert(b, r, `the broker refused it: ${refused.reason}`, now);
          if (!diverted) throw this.stopped ?? err;
          out[err.index] = diverted;
          continue;
        }
        await this.readLimits();
        let changed = 0;
        for (let i = 0; i < out.length; i++) {
          const r = out[i] as OutRecord;
          const s = this.screenOne(b, r, now);
          if (!s) throw this.stopped ?? err;
          if (s !== r) changed++;
          out[i] = s;
        }
        if (changed > 0) continue;
        const outputs = new Set(this.limits.keys());
        const before = alone.size;
        for (const topic of refused.topics) if (outputs.has(topic)) alone.add(topic);
        // an internal topic refused, or the records already alone did not show which one: nothing to divert
        if (alone.size === before) throw err;
      }
    }
  }

  /**
   * The records in produce requests (requestChunks), those of the topics in `alone` one per request: a refusal
   * of one of those names its record (RefusedRecord, with its index in `out`).
   */
  private async sendChunks(out: OutRecord[], alone: Set<string>, send: Send, written: ChangelogEnds): Promise<void> {
    for (const chunk of requestChunks(out, (r) => alone.has(r.topic))) {
      try {
        this.changelogEnds(chunk, await send(chunk), written);
      } catch (err) {
        const refused = chunk.length === 1 && alone.has((chunk[0] as OutRecord).topic) ? recordRefusal(err) : undefined;
        if (refused) throw new RefusedRecord(out.indexOf(chunk[0] as OutRecord), refused);
        throw err;
      }
    }
  }

  /**
   * Per changelog partition, the offset just past this request's records there: the broker answers a produce
   * request with each partition's base offset, and a partition's records in one request are one batch.
   */
  private changelogEnds(chunk: OutRecord[], result: ProduceResult, into: ChangelogEnds): void {
    for (const changelog of this.opts.changelogTopics) {
      const counts = new Map<number, number>();
      for (const r of chunk) if (r.topic === changelog && r.partition !== undefined) counts.set(r.partition, (counts.get(r.partition) ?? 0) + 1);
      if (counts.size === 0) continue;
      for (const o of result.offsets ?? []) {
        const n = counts.get(o.partition);
        if (o.topic !== changelog || n === undefined) continue;
        let ends = into.get(changelog);
        if (!ends) {
          ends = new Map();
          into.set(changelog, ends);
        }
        ends.set(o.partition, o.offset + BigInt(n));
      }
    }
  }
}

/**
 * Splits records into produce requests of at most REQUEST_BYTES each, in order; a larger record goes alone, and
 * so does each record for which `alone` is true.
 */
export function requestChunks(records: OutRecord[], alone: (r: OutRecord) => boolean = () => false): OutRecord[][] {
  const chunks: OutRecord[][] = [];
  let chunk: OutRecord[] = [];
  let bytes = 0;
  for (const r of records) {
    if (alone(r)) {
      if (chunk.length > 0) chunks.push(chunk);
      chunks.push([r]);
      chunk = [];
      bytes = 0;
      continue;
    }
    let size = (r.key?.length ?? 0) + (r.value?.length ?? 0);
    for (const [k, v] of r.headers ?? []) size += k.length + v.length;
    if (chunk.length > 0 && bytes + size > REQUEST_BYTES) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(r);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}
