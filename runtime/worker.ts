// The worker loop, at-least-once. One consumer in the pipeline's group reads the source topics and, when the
// pipeline has a keyBy, its repartition topic. Source records run through the source stage; repartition records
// through the keyed stage and its window tasks. Every commit interval (or sooner, when maxInFlight records are
// waiting) one flush writes the sink records, dead letters, late records, repartition records, watermark
// markers and changelog records, then the stores, then commits the offsets. A crash before the commit replays
// the batch; nothing is acknowledged that was not written.
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Consumer, type Message, type MessagesStream, Producer } from "@platformatic/kafka";
import { errorMessage, type Logger } from "../src/log.ts";
import type { PipelineConfig } from "../src/pipeline-config.ts";
import { deadLetterRecord, describeFailure } from "./dead-letter.ts";
import { KafkaIo } from "./kafka-io.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { type Plan, planOf } from "./plan.ts";
import { type DeadResult, KeyedStage, type OutRecord, SourceStage } from "./stages.ts";
import { type Failure, SinkEncoder, type SourceRecord } from "./stateless.ts";
import { WindowTask } from "./task.ts";
import { decodeMarker, encodeMarker, MARKER_HEADER, MARKER_INTERVAL_MS, SourceWatermark, WatermarkTable } from "./watermarks.ts";
import type { WindowStep } from "./window.ts";

export interface WorkerOptions {
  config: PipelineConfig;
  clientId: string;
  log: Logger;
  metrics: RuntimeMetrics;
  /** where window tasks keep their stores: the pod's state volume */
  stateDir: string;
  /** the block cache of each store, bytes */
  blockCacheBytes?: number;
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
  aggregated: number;
  late: number;
  batches: number;
}

interface Batch {
  source: Message[];
  out: OutRecord[];
  fetchedAt: number[];
  counts: { in: number; out: number; filtered: number; dlq: number; aggregated: number; late: number; lateDropped: number };
}

const SWEEP_INTERVAL_MS = 1_000;
const MARKER_KEY_PREFIX = "\u0000wm:";

export class Worker {
  private readonly opts: WorkerOptions;
  private readonly plan: Plan;
  private readonly sourceStage: SourceStage;
  private readonly keyedStage: KeyedStage;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly io: KafkaIo;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private readonly pipeline: string;
  private readonly repartitionTopic?: string;
  private stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  private batch: Batch = Worker.empty();
  private flushing: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private ticker?: NodeJS.Timeout;
  private failed?: Error;
  private stopping = false;
  /** source partitions this worker reads, with their watermarks */
  private readonly sources = new Map<string, SourceWatermark>();
  private readonly tasks = new Map<number, WindowTask>();
  private repartitionPartitions = 0;
  private expectedSources: string[] = [];
  private restoring = false;
  private pending: Message[] = [];
  private assignments: Promise<void> = Promise.resolve();
  private lastSweep = 0;
  readonly stats: WorkerStats = { in: 0, out: 0, filtered: 0, deadLetters: 0, aggregated: 0, late: 0, batches: 0 };
  joined = false;

  private static empty(): Batch {
    return { source: [], out: [], fetchedAt: [], counts: { in: 0, out: 0, filtered: 0, dlq: 0, aggregated: 0, late: 0, lateDropped: 0 } };
  }

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    const t = opts.config.topology;
    if (t.processing.guarantee === "exactlyOnce") {
      // Refused rather than run at-least-once under an exactly-once label.
      throw new Error("processing.guarantee exactlyOnce is not implemented by this runtime version; use atLeastOnce");
    }
    this.plan = planOf(t);
    const sink = new SinkEncoder(t.sink);
    this.sourceStage = new SourceStage(t, this.plan, sink);
    this.keyedStage = new KeyedStage(t, this.plan, sink);
    this.repartitionTopic = this.plan.keyBy?.repartitionTopic;
    this.maxBatch = t.processing.maxInFlight;
    this.lingerMs = opts.lingerMs ?? t.processing.commitIntervalMs;
    this.pipeline = `${opts.config.pipeline.namespace}/${opts.config.pipeline.name}`;
    const brokers = opts.config.kafka.bootstrapServers;
    this.io = new KafkaIo(brokers, opts.clientId);
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
      this.restoring = true;
      const assigned = p.assignments ?? [];
      this.assignments = this.assignments.then(() => this.reassign(assigned)).catch((err: unknown) => this.fail(asError(err)));
    });
    this.consumer.on("consumer:group:rebalance", () => opts.log.info("rebalance"));
  }

  get healthy(): boolean {
    return this.failed === undefined;
  }

  /** Ready once joined and every assigned task has restored its state. */
  get ready(): boolean {
    return this.joined && !this.restoring && this.healthy;
  }

  async start(): Promise<void> {
    const t = this.opts.config.topology;
    if (this.plan.window) this.dropStaleStores(this.plan.window);
    if (this.repartitionTopic) {
      const counts = await this.io.partitionCounts([...t.source.topics, this.repartitionTopic]);
      this.repartitionPartitions = counts.get(this.repartitionTopic) ?? 0;
      this.expectedSources = t.source.topics.flatMap((topic) => Array.from({ length: counts.get(topic) ?? 0 }, (_, p) => WatermarkTable.id(topic, p)));
    }
    this.stream = await this.consumer.consume({
      topics: this.repartitionTopic ? [...t.source.topics, this.repartitionTopic] : t.source.topics,
      mode: "committed",
      fallbackMode: t.source.startFrom,
      autocommit: false,
      maxWaitTime: 200,
    });
    if (this.restoring) this.stream.pause();
    this.stream.on("data", (m: Message) => this.onRecord(m));
    this.stream.on("error", (err: Error) => this.fail(err));
    if (this.plan.window) {
      // Markers, idleness and the TTL sweeper need a flush even when no record arrives.
      this.ticker = setInterval(() => {
        if (!this.timer && !this.stopping) this.scheduleFlush(0);
      }, MARKER_INTERVAL_MS / 2);
    }
  }

  /** Stores of this step under another state-schema hash belong to a topology that a reset replaced. */
  private dropStaleStores(window: WindowStep): void {
    if (!existsSync(this.opts.stateDir)) return;
    for (const entry of readdirSync(this.opts.stateDir)) {
      const hash = entry.startsWith(`${window.name}-`) ? entry.slice(window.name.length + 1) : "";
      if (/^[0-9a-f]{16}$/.test(hash) && entry !== storeDirName(window)) {
        rmSync(join(this.opts.stateDir, entry), { recursive: true, force: true });
        this.opts.log.info("removed the stores of a replaced state schema", { dir: entry });
      }
    }
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.opts.log.error("worker loop failed", { error: errorMessage(err) });
    this.opts.onFatal(err);
  }

  /** A new assignment: write what the old tasks hold, close the revoked ones, restore the new ones. */
  private async reassign(assigned: { topic: string; partitions: number[] }[]): Promise<void> {
    this.restoring = true;
    this.stream?.pause();
    await this.flushing;
    await this.flush();
    const now = Date.now();
    const sourceTopics = new Set(this.opts.config.topology.source.topics);
    const wantedSources = new Set<string>();
    const wantedTasks = new Set<number>();
    for (const a of assigned) {
      for (const p of a.partitions) {
        if (a.topic === this.repartitionTopic) wantedTasks.add(p);
        else if (sourceTopics.has(a.topic)) wantedSources.add(WatermarkTable.id(a.topic, p));
      }
    }
    const wm = this.opts.config.topology.source.watermark;
    for (const id of [...this.sources.keys()]) if (!wantedSources.has(id)) this.sources.delete(id);
    for (const id of wantedSources) {
      if (this.sources.has(id)) continue;
      const i = id.lastIndexOf(":");
      this.sources.set(id, new SourceWatermark(id.slice(0, i), Number(id.slice(i + 1)), wm, now));
    }
    for (const [p, task] of [...this.tasks]) {
      if (wantedTasks.has(p)) continue;
      this.tasks.delete(p);
      await this.closeTask(task);
    }
    const window = this.plan.window;
    if (window) {
      for (const p of wantedTasks) {
        if (this.tasks.has(p)) continue;
        this.opts.metrics.restoring.inc();
        try {
          const { task, restore } = await WindowTask.open({
            step: window,
            partition: p,
            dir: join(this.opts.stateDir, storeDirName(window), String(p)),
            blockCacheBytes: this.opts.blockCacheBytes ?? 64 << 20,
            ...(this.opts.config.topology.state.ttlMs !== undefined ? { ttlMs: this.opts.config.topology.state.ttlMs } : {}),
            expectedSources: this.expectedSources,
            io: this.io,
            readCommitted: true,
          });
          this.tasks.set(p, task);
          this.opts.metrics.restoredRecords.inc({ partition: String(p) }, restore.records);
          this.opts.log.info("task restored", { partition: p, ...restore, from: restore.from.toString() });
        } finally {
          this.opts.metrics.restoring.dec();
        }
      }
    }
    this.restoring = false;
    const pending = this.pending;
    this.pending = [];
    for (const m of pending) this.onRecord(m);
    if (!this.stopping && !this.failed) this.stream?.resume();
  }

  private async closeTask(task: WindowTask): Promise<void> {
    const window = this.plan.window;
    if (!window) return;
    const ends = await this.io.endOffsets(window.changelogTopic, this.repartitionPartitions, true);
    await task.close(ends[task.partition]);
    this.opts.log.info("task closed", { partition: task.partition, checkpoint: ends[task.partition]?.toString() });
  }

  private onRecord(m: Message): void {
    if (this.failed) return;
    if (this.restoring) {
      this.pending.push(m);
      return;
    }
    const b = this.batch;
    b.source.push(m);
    b.fetchedAt.push(performance.now());
    if (m.topic === this.repartitionTopic) this.onKeyed(m, b);
    else this.onSource(m, b);
    if (this.failed) return;
    if (b.source.length >= this.maxBatch) {
      // Hold the stream while the batch is written: in-flight records stay bounded by maxInFlight.
      this.stream?.pause();
      this.scheduleFlush(0);
    } else if (!this.timer) {
      this.scheduleFlush(this.lingerMs);
    }
  }

  private deadLetter(b: Batch, r: SourceRecord, failure: Failure): void {
    const dlq = this.opts.config.topology.deadLetter;
    if (!dlq) {
      // No dead-letter topic: stop, as Kafka Streams' default handler does, rather than lose the record.
      this.fail(new Error(`${describeFailure(r, failure)}; the pipeline has no deadLetter topic, so the worker stops here`));
      return;
    }
    b.out.push({ topic: dlq.topic, ...deadLetterRecord(r, failure, this.pipeline) });
    b.counts.dlq++;
    this.opts.metrics.deadLetters.inc({ step: failure.step, kind: failure.kind });
  }

  private deadResults(b: Batch, partition: number, dead: DeadResult[]): void {
    for (const d of dead) {
      const r: SourceRecord = {
        topic: this.repartitionTopic ?? "",
        partition,
        offset: -1n,
        timestamp: BigInt(d.end),
        key: d.keyBytes,
        ...(d.value ? { value: d.value } : {}),
      };
      this.deadLetter(b, r, d.failure);
    }
  }

  private onSource(m: Message, b: Batch): void {
    this.stats.in++;
    b.counts.in++;
    this.opts.metrics.recordsIn.inc();
    const outcome = this.sourceStage.process(m);
    if (!outcome.ok) {
      this.deadLetter(b, m, outcome);
      return;
    }
    if (outcome.eventTime !== undefined) this.sources.get(WatermarkTable.id(m.topic, m.partition))?.observe(outcome.eventTime, Date.now());
    b.counts.filtered += outcome.filtered;
    for (const o of outcome.sink) b.out.push({ topic: this.opts.config.topology.sink.topic, ...o });
    b.counts.out += outcome.sink.length;
    for (const o of outcome.repartition) b.out.push(o);
  }

  private onKeyed(m: Message, b: Batch): void {
    const task = this.tasks.get(m.partition);
    if (m.headers?.size && [...m.headers.keys()].some((k) => k.toString() === MARKER_HEADER)) {
      if (!task) return; // a keyBy without a window has no use for watermarks
      let marker: ReturnType<typeof decodeMarker>;
      try {
        marker = decodeMarker(m.value);
      } catch (err) {
        this.opts.log.warn("ignoring a malformed watermark marker", { partition: m.partition, offset: m.offset.toString(), error: asError(err).message });
        return;
      }
      task.table.update(marker);
      const wm = task.table.current();
      if (wm > task.operator.watermark) {
        const closed = task.operator.advance(wm);
        this.opts.metrics.taskWatermark.set({ partition: String(m.partition) }, wm);
        const emitted = this.keyedStage.emit(closed, { topic: m.topic, partition: BigInt(m.partition), offset: m.offset, headers: {} }, m.timestamp);
        for (const o of emitted.sink) b.out.push({ topic: this.opts.config.topology.sink.topic, ...o });
        b.counts.out += emitted.sink.length;
        this.deadResults(b, m.partition, emitted.dead);
      }
      return;
    }
    if (this.plan.window && !task) {
      this.fail(new Error(`a record of ${m.topic}/${m.partition} arrived, but no task holds that partition`));
      return;
    }
    const outcome = this.keyedStage.process(m, task?.operator);
    if (!outcome.ok) {
      this.deadLetter(b, m, outcome);
      return;
    }
    b.counts.filtered += outcome.filtered;
    b.counts.aggregated += outcome.aggregated;
    b.counts.late += outcome.late.length + outcome.lateDropped;
    b.counts.lateDropped += outcome.lateDropped;
    const step = this.plan.window?.name ?? "";
    if (outcome.aggregated > 0) this.opts.metrics.aggregated.inc({ step }, outcome.aggregated);
    if (outcome.late.length > 0) this.opts.metrics.late.inc({ step, action: "topic" }, outcome.late.length);
    if (outcome.lateDropped > 0) this.opts.metrics.late.inc({ step, action: "dropped" }, outcome.lateDropped);
    for (const o of outcome.sink) b.out.push({ topic: this.opts.config.topology.sink.topic, ...o });
    b.counts.out += outcome.sink.length;
    b.out.push(...outcome.late);
    this.deadResults(b, m.partition, outcome.dead);
  }

  private scheduleFlush(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flushing.then(() => this.flush()).catch((err: unknown) => this.fail(asError(err)));
    }, ms);
  }

  /** Watermark markers due now, into every partition of the repartition topic. */
  private markers(now: number): OutRecord[] {
    if (!this.plan.window || !this.repartitionTopic) return [];
    const out: OutRecord[] = [];
    for (const w of this.sources.values()) {
      const m = w.due(now);
      if (!m) continue;
      if (m.watermark !== null) this.opts.metrics.sourceWatermark.set({ topic: m.topic, partition: String(m.partition) }, m.watermark);
      const value = encodeMarker(m);
      const key = Buffer.from(`${MARKER_KEY_PREFIX}${m.topic}:${m.partition}`);
      const headers = new Map([[Buffer.from(MARKER_HEADER), Buffer.from("1")]]);
      for (let p = 0; p < this.repartitionPartitions; p++) out.push({ topic: this.repartitionTopic, partition: p, key, value, headers });
    }
    return out;
  }

  private async flush(): Promise<void> {
    if (this.failed) return;
    const b = this.batch;
    this.batch = Worker.empty();
    const now = Date.now();
    const out = [...b.out, ...this.markers(now)];
    const applies: (() => Promise<void>)[] = [];
    const sweep = now - this.lastSweep >= SWEEP_INTERVAL_MS;
    if (sweep) this.lastSweep = now;
    for (const task of this.tasks.values()) {
      if (sweep) task.operator.sweep();
      const c = task.changes();
      out.push(...c.changelog);
      applies.push(c.apply);
    }
    if (b.source.length === 0 && out.length === 0) return;
    const end = this.opts.metrics.commit.startTimer();
    try {
      if (out.length > 0) await this.producer.send({ messages: out });
      for (const apply of applies) await apply();
      // One commit per partition, the last record's, awaited one at a time.
      const last = new Map<string, Message>();
      for (const m of b.source) last.set(`${m.topic}:${m.partition}`, m);
      for (const m of last.values()) await m.commit();
      end();
      const t = performance.now();
      const wall = Date.now();
      for (let i = 0; i < b.source.length; i++) {
        if (b.source[i]?.topic === this.repartitionTopic) continue;
        this.opts.metrics.processing.observe((t - (b.fetchedAt[i] ?? t)) / 1000);
        this.opts.metrics.endToEnd.observe(Math.max(0, wall - Number(b.source[i]?.timestamp ?? wall)) / 1000);
      }
      this.stats.out += b.counts.out;
      this.stats.filtered += b.counts.filtered;
      this.stats.deadLetters += b.counts.dlq;
      this.stats.aggregated += b.counts.aggregated;
      this.stats.late += b.counts.late;
      this.stats.batches++;
      this.opts.metrics.recordsOut.inc(b.counts.out);
      this.opts.metrics.filtered.inc(b.counts.filtered);
      for (const [p, task] of this.tasks) this.opts.metrics.stateBytes.set({ step: this.plan.window?.name ?? "", partition: String(p) }, task.sizeBytes());
    } finally {
      if (this.stream?.isPaused() && !this.failed && !this.restoring && !this.stopping) this.stream.resume();
    }
  }

  /** Stops fetching, writes and commits what was read, closes the tasks with checkpoints, leaves the group. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ticker) clearInterval(this.ticker);
    this.timer = undefined;
    this.stream?.pause();
    await this.assignments;
    const lastWrite = this.failed
      ? undefined
      : await this.flushing
          .then(() => this.flush())
          .then(
            () => undefined,
            (err: unknown) => err,
          );
    if (!lastWrite && !this.failed) for (const task of this.tasks.values()) await this.closeTask(task);
    this.tasks.clear();
    await this.stream?.close();
    await this.consumer.close();
    await this.producer.close();
    await this.io.close();
    if (lastWrite) throw lastWrite;
    if (this.failed) throw this.failed;
  }
}

/** A step's stores live under `<step>-<state-schema hash>/<partition>` on the state volume. */
function storeDirName(window: WindowStep): string {
  return `${window.name}-${window.stateSchemaHash}`;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
