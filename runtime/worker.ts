// The stream thread (after Kafka Streams' StreamThread): poll, process, commit. One consumer in the pipeline's
// group reads the source topics and the repartition topic of every keyBy. Source records run through the source
// stage; repartition records through the sub-topology that reads them (keyed-sub.ts: its keyed stage, its
// window tasks, its watermarks; graph.ts: a sub-topology per keyBy, each with at most one window). Every commit
// interval (or sooner, when maxInFlight records are waiting) one flush hands the sink records, dead letters, late
// records, repartition records, watermark markers and changelog records to the record collector
// (record-collector.ts), which writes them and commits the offsets through the producer (producer.ts); only then
// are the stores written:
// - atLeastOnce: plain writes, then offset commits. A crash before the commit replays the batch.
// - exactlyOnce: all of it in one Kafka transaction with the offsets (KIP-447: the commit carries the group's
//   generation, so a worker the group has moved past is fenced). A crash aborts it, and the local stores,
//   which never ran ahead of a commit, are rebuilt from the read_committed changelog.
// A rebalance discards the batch in flight rather than write it under a generation that no longer owns its
// partitions: the stores hold the committed state, and the group's committed offsets say where to read again.
// The thread's phase and what holds its stream are data (thread-state.ts); the Kafka client's workarounds live
// behind runtime/kafka/.
import { Consumer, type Message, type MessagesStream } from "@platformatic/kafka";
import { SPEC_DEFAULTS } from "../src/api-types.gen.ts";
import { restoreGroupPrefix, transactionalId } from "../src/kafka-acls.ts";
import { type ClientConnectionOptions, clientOptions } from "../src/kafka-client.ts";
import { isRebalanceError } from "../src/kafka-errors.ts";
import { errorMessage, type Logger } from "../src/log.ts";
import type { PipelineConfig } from "../src/pipeline-config.ts";
import { type CompiledInputSettings, globalInputs, sourceInputs, sourceTopicsOf, statefulSteps } from "../src/topology/compile.ts";
import { parseBytes } from "../src/topology/quantity.ts";
import { ordinalRangeAssigner } from "./assignor.ts";
import { GlobalTables } from "./global-table.ts";
import { graphOf, keyedSubTopologies, sourceSubTopology, statefulOf, type TopologyGraph, upstreamOf } from "./graph.ts";
import { FetchFence } from "./kafka/fetch-fence.ts";
import { connectionFromConfig } from "./kafka/kafka-auth.ts";
import { KafkaIo } from "./kafka/kafka-io.ts";
import { commitAsMember, type MemberGeneration, type OffsetToCommit } from "./kafka/member-commit.ts";
import { readCommittedOnly } from "./kafka/read-committed.ts";
import { KeyedSub } from "./keyed-sub.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { OutputProducer } from "./producer.ts";
import { RateLimiter } from "./rate-limit.ts";
import { type Batch, type ChangelogEnds, emptyBatch, RecordCollector } from "./record-collector.ts";
import { type OutRecord, SourceStage } from "./stages.ts";
import { StateCache } from "./state/cache.ts";
import { SinkEncoder } from "./stateless.ts";
import { TaskManager } from "./task-manager.ts";
import { type HoldReason, streamAction, ThreadState } from "./thread-state.ts";
import { MARKER_INTERVAL_MS, markerRecords, SourceWatermark, WatermarkTable } from "./watermarks.ts";

export interface WorkerOptions {
  config: PipelineConfig;
  clientId: string;
  log: Logger;
  metrics: RuntimeMetrics;
  /** where window tasks keep their stores: the pod's state volume */
  stateDir: string;
  /** how long a partial batch may wait; the pipeline's commit interval */
  lingerMs?: number;
  /** how often committed repartition records are purged (Kafka Streams' repartition.purge.interval.ms) */
  purgeIntervalMs?: number;
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
  /** batches a rebalance discarded before they were committed; their records are read again */
  discarded: number;
  /** records skipped because this assignment had read them already */
  skipped: number;
}

const SWEEP_INTERVAL_MS = 1_000;
/** A commit refused by a rebalance is followed by a rejoin; a worker that waits longer than this restarts. */
const REJOIN_DEADLINE_MS = 60_000;
/** Kafka Streams' default repartition.purge.interval.ms. */
export const REPARTITION_PURGE_INTERVAL_MS = 30_000;
/**
 * Bytes one fetch may return (the broker still returns a larger first batch whole). The library parses every
 * record of a response into an object before it looks at the stream's buffer: 512 KiB is about 3,500 records of
 * 150 B at once, where 2 MiB was about 14,000, and a worker behind a slow sink grew its heap with them.
 */
export const FETCH_MAX_BYTES = 512 * 1024;
/** How often the worker measures its lag per partition. */
const LAG_INTERVAL_MS = 5_000;

export class Worker {
  private readonly opts: WorkerOptions;
  /** the compiled topology as sub-topologies of processors (graph.ts) */
  private readonly graph: TopologyGraph;
  private readonly sourceStage: SourceStage;
  /** the sub-topologies after a keyBy, by the repartition topic each reads */
  private readonly keyed = new Map<string, KeyedSub>();
  private readonly consumer: Consumer;
  private readonly producer: OutputProducer;
  /** the writes of each flush: screened, split into requests, written with the offsets (record-collector.ts) */
  private readonly collector: RecordCollector;
  private readonly io: KafkaIo;
  /** the state cache, shared by the window tasks (state/cache.ts) */
  private readonly cache: StateCache;
  private readonly connection: ClientConnectionOptions;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private readonly pipeline: string;
  /** per repartition topic, the committed offset of each partition this worker read, not purged yet */
  private readonly purgeable = new Map<string, Map<number, bigint>>();
  private readonly purgeIntervalMs: number;
  // the first purge comes one interval after the start, as Kafka Streams does
  private lastPurge = Date.now();
  private purging?: Promise<void>;
  private stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  private batch: Batch = emptyBatch();
  private flushing: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private ticker?: NodeJS.Timeout;
  private failed?: Error;
  /** the thread's phase and what holds its stream (thread-state.ts): syncStream makes the stream follow it */
  private readonly state = new ThreadState();
  /** source partitions this worker reads, with their watermarks */
  private readonly sources = new Map<string, SourceWatermark>();
  /** every join advances it: a fetch sent under an earlier assignment delivers nothing */
  private readonly fence = new FetchFence();
  private streamCreated!: (stream: MessagesStream<Buffer, Buffer, Buffer, Buffer>) => void;
  private readonly streamReady = new Promise<MessagesStream<Buffer, Buffer, Buffer, Buffer>>((resolve) => {
    this.streamCreated = resolve;
  });
  private assignments: Promise<void> = Promise.resolve();
  private lastSweep = 0;
  private readonly exactlyOnce: boolean;
  /** per partition, the next offset this assignment takes; an older record was read before and is skipped */
  private readonly next = new Map<string, bigint>();
  private rejoinDeadline?: NodeJS.Timeout;
  private lagTimer?: NodeJS.Timeout;
  /** per partition, the position at the last lag measurement */
  private readonly lastLagCheck = new Map<string, bigint>();
  private readonly limiter?: RateLimiter;
  private throttled?: NodeJS.Timeout;
  /** the partitions of the current assignment */
  private readonly owned = new Set<string>();
  /** the partitions of the newest assignment the group gave, before the worker has taken it up */
  private lastAssigned = new Set<string>();
  /**
   * The group generation and member of the current assignment, from its join (or from the cooperative round
   * that revoked partitions from it). Offsets are committed under it, never under the library's
   * consumer.generationId, which takes the next generation's number at its JoinGroup response, before the
   * SyncGroup and the event that tell which of the old assignment's partitions are revoked.
   */
  private assignment?: MemberGeneration;
  /** The generation the open tasks were last assigned in: their stores hold everything written until then. */
  private tasksAssignedIn?: MemberGeneration;
  readonly stats: WorkerStats = { in: 0, out: 0, filtered: 0, deadLetters: 0, aggregated: 0, late: 0, batches: 0, discarded: 0, skipped: 0 };
  joined = false;
  /** the global inputs' tables, when a join names one */
  private readonly globals?: GlobalTables;

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    const t = opts.config.topology;
    this.exactlyOnce = t.processing.guarantee === "exactlyOnce";
    this.graph = graphOf(t);
    const sink = new SinkEncoder(t.sink);
    // every client of the worker connects alike: brokers, SASL and TLS as the pod's Secrets give them
    this.connection = clientOptions(connectionFromConfig(opts.config.kafka));
    this.io = new KafkaIo(this.connection, opts.clientId, restoreGroupPrefix(t));
    const lookups = t.steps.flatMap((s) => (s.kind === "lookup" ? [s] : []));
    if (lookups.length > 0)
      this.globals = new GlobalTables(
        globalInputs(t).map((input) => ({ input, key: (lookups.find((s) => s.input === input.name) as (typeof lookups)[number]).key })),
        { io: this.io, log: opts.log, metrics: opts.metrics, readCommitted: true },
      );
    this.sourceStage = new SourceStage(t, this.graph, sink, Date.now, this.globals);
    this.maxBatch = t.processing.maxInFlight;
    if (t.processing.maxRecordsPerSecond !== undefined) this.limiter = new RateLimiter(t.processing.maxRecordsPerSecond, performance.now());
    this.lingerMs = opts.lingerMs ?? t.processing.commitIntervalMs;
    this.purgeIntervalMs = opts.purgeIntervalMs ?? REPARTITION_PURGE_INTERVAL_MS;
    this.pipeline = `${opts.config.pipeline.namespace}/${opts.config.pipeline.name}`;
    // An operator older than the state cache sends no size: the CRD's default then.
    this.cache = new StateCache(Number.isFinite(t.state.cacheBytes) ? t.state.cacheBytes : (parseBytes(SPEC_DEFAULTS["state.cacheSize"]) as number));
    this.consumer = this.fence.install(
      readCommittedOnly(
        new Consumer({
          clientId: opts.clientId,
          groupId: opts.config.consumerGroup,
          ...this.connection,
          sessionTimeout: 10_000,
          heartbeatInterval: 1_000,
          rebalanceTimeout: 30_000,
          // The group leader assigns partitions from its cached metadata, up to metadataMaxAge old, and nothing
          // else makes it look again: partitions added to a source just before a rebalance would stay unread
          // until the next one. A protocolsMetadata callback makes every JoinGroup fetch the metadata afresh;
          // its user data is empty, as without it.
          protocolsMetadata: () => Buffer.alloc(0),
          // By ordinal: a worker that comes back gets the tasks whose state its volume holds (runtime/assignor.ts).
          partitionAssigner: ordinalRangeAssigner,
          // Cooperative first: a rebalance revokes only the partitions that move, and a worker goes on with the
          // rest. The group takes it once every member offers it; while an older worker that offers only
          // roundrobin is in the group (a rolling update), the group stays eager, and the worker handles both.
          protocols: [
            { name: "cooperative-sticky", version: 3 },
            { name: "roundrobin", version: 1 },
          ],
        }),
        (dropped) => {
          // Rare (only after a failed or fenced transaction) and worth seeing: which records a read left out.
          for (const d of dropped) opts.metrics.abortedSkipped.inc(d.records);
          opts.log.info("dropped the records of aborted transactions", { dropped });
        },
      ),
    );
    this.producer = new OutputProducer({
      clientId: opts.clientId,
      connection: this.connection,
      ...(this.exactlyOnce ? { transactionalId: transactionalId(t, opts.clientId) } : {}),
      log: opts.log,
    });
    const keyedSubs = keyedSubTopologies(this.graph);
    this.collector = new RecordCollector({
      topology: t,
      pipeline: this.pipeline,
      lateTopics: statefulSteps(t).flatMap((s) => ("topic" in s.late ? [s.late.topic] : [])),
      changelogTopics: statefulSteps(t).map((s) => s.changelogTopic),
      io: this.io,
      producer: this.producer,
      log: opts.log,
      metrics: opts.metrics,
      fail: (err) => this.fail(err),
    });
    for (const sub of keyedSubs) {
      const ks = new KeyedSub(this.graph, sub, upstreamOf(this.graph, sub), sink, {
        sinkTopic: t.sink.topic,
        metrics: opts.metrics,
        deadLetter: (b, r, failure) => this.collector.deadLetter(b, r, failure),
        fail: (err) => this.fail(err),
        warn: (msg, fields) => opts.log.warn(msg, fields),
        ...(this.globals ? { globals: this.globals } : {}),
      });
      const step = statefulOf(sub);
      if (step)
        ks.tasks = new TaskManager({
          topology: t,
          step,
          markerTopics: ks.markerTopics,
          stateDir: opts.stateDir,
          cache: this.cache,
          io: this.io,
          log: opts.log,
          metrics: opts.metrics,
          hold: (p) => this.fence.hold(ks.topicId, p),
          release: (p, caughtUp) => {
            const at = `${ks.topic}:${p}`;
            const next = this.next.get(at);
            // caught up: read from the committed offset that positionsFor set before any state was restored
            if (caughtUp && next !== undefined) this.stream?.offsetsToFetch.set(at, next);
            this.fence.release(ks.topicId, p);
          },
          fail: (err) => this.fail(err),
        });
      this.keyed.set(ks.topic, ks);
    }
    this.consumer.on("consumer:group:join", (p) => {
      this.joined = true;
      if (p.generationId === undefined) {
        this.fail(new Error("joined the group without a generation: the worker needs the classic group protocol, whose commits it fences by generation"));
        return;
      }
      opts.log.info("joined consumer group", { group: p.groupId, memberId: p.memberId, generation: p.generationId, assignments: p.assignments });
      this.assigned(p.assignments ?? [], { groupId: p.groupId, generationId: p.generationId, memberId: p.memberId });
    });
    // A cooperative round that revokes partitions ends with no join event: the library gives the consumer its
    // assignment without them, resumes the stream and joins again at once, telling only of a rebalance. The
    // assignment is the new generation's, in which nobody else owns the revoked partitions yet.
    this.consumer.on("consumer:group:rebalance", () => {
      const now = this.consumer.assignments ?? [];
      const held = new Set(now.flatMap((a) => a.partitions.map((p) => `${a.topic}:${p}`)));
      const revoked = [...this.lastAssigned].filter((at) => !held.has(at));
      const memberId = this.consumer.memberId;
      if (revoked.length === 0 || !this.assignment || memberId === null || memberId !== this.assignment.memberId) {
        opts.log.info("rebalance");
        // A cooperative round resumes the stream, whatever held it.
        this.syncStream();
        return;
      }
      const generationId = this.consumer.generationId;
      opts.log.info("a cooperative rebalance revoked partitions; going on with the rest", { revoked, generation: generationId, assignments: now });
      this.assigned(
        now.map((a) => ({ topic: a.topic, partitions: [...a.partitions] })),
        { groupId: this.opts.config.consumerGroup, generationId, memberId },
      );
    });
  }

  /** The window task managers, one per window step. */
  private taskManagers(): TaskManager[] {
    const out: TaskManager[] = [];
    for (const ks of this.keyed.values()) if (ks.tasks) out.push(ks.tasks);
    return out;
  }

  /** A new assignment, from a join or from a cooperative round that revoked partitions. */
  private assigned(assigned: { topic: string; partitions: number[] }[], joined: MemberGeneration): void {
    // First of all: whatever a fetch sent before now returns belongs to the old assignment.
    this.fence.advance();
    this.assignment = joined;
    this.lastAssigned = new Set(assigned.flatMap((a) => a.partitions.map((p) => `${a.topic}:${p}`)));
    // At once, before the stream's own handler rewinds it (or, in a cooperative round, before the stream that
    // the library has just resumed reads on): no fetch may start under the new assignment until the batch of
    // the old one is discarded.
    this.holdStream("assigning");
    this.assignments = this.assignments.then(() => this.reassign(assigned, joined)).catch((err: unknown) => this.fail(asError(err)));
  }

  get healthy(): boolean {
    return this.failed === undefined;
  }

  /** Ready once joined and every assigned task has restored its state. */
  get ready(): boolean {
    return this.joined && !this.state.held("assigning") && this.taskManagers().every((m) => m.restoringCount === 0) && this.healthy;
  }

  async start(): Promise<void> {
    const t = this.opts.config.topology;
    await this.producer.fencePredecessor();
    await this.collector.readLimits();
    for (const m of this.taskManagers()) m.dropStaleStores();
    const internal = [...this.keyed.keys()];
    if (internal.length > 0) {
      const topics = await this.io.describeTopics([...sourceTopicsOf(t), ...internal]);
      for (const ks of this.keyed.values()) ks.described(topics);
    }
    // the global tables, read to their ends before any record is taken (global-table.ts)
    if (this.globals) {
      await this.globals.bootstrap();
      this.globals.start();
    }
    this.stream = await this.consumer.consume({
      topics: [...sourceTopicsOf(t), ...internal],
      mode: "committed",
      fallbackMode: t.source.startFrom,
      autocommit: false,
      maxWaitTime: 200,
      // The library's default of 50 MB a fetch would be parsed into objects at once, whatever the backlog:
      // a small fetch keeps memory bounded, and the stream stops fetching while its buffer is full.
      maxBytes: FETCH_MAX_BYTES,
      highWaterMark: t.processing.maxInFlight,
    });
    this.streamCreated(this.stream);
    if (this.state.phase === "starting") this.state.to("running");
    this.syncStream();
    this.stream.on("data", (m: Message) => this.onRecord(m));
    this.stream.on("error", (err: Error) => this.fail(err));
    this.lagTimer = setInterval(() => {
      this.measureLag().catch((err: unknown) => this.opts.log.warn("measuring lag failed; trying again", { error: errorMessage(err) }));
    }, LAG_INTERVAL_MS);
    if (this.graph.eventTime) {
      // Markers, idleness and the TTL sweeper need a flush even when no record arrives.
      this.ticker = setInterval(() => {
        if (!this.timer && this.state.phase === "running" && !this.state.held("assigning")) this.scheduleFlush(0);
      }, MARKER_INTERVAL_MS / 2);
    }
  }

  /** Lag per owned partition: its read_committed end offset minus the next offset this worker reads. */
  private async measureLag(): Promise<void> {
    if (this.state.held("assigning") || this.state.phase !== "running") return;
    const byTopic = new Map<string, number[]>();
    for (const at of this.owned) {
      const i = at.lastIndexOf(":");
      const topic = at.slice(0, i);
      byTopic.set(topic, [...(byTopic.get(topic) ?? []), Number(at.slice(i + 1))]);
    }
    this.opts.metrics.lag.reset();
    for (const [topic, partitions] of byTopic) {
      const count = Math.max(...partitions) + 1;
      const ends = await this.io.endOffsets(topic, count, true);
      // The high watermarks, read once a topic and only when a partition stalled: for the line below.
      let highs: bigint[] | undefined;
      for (const p of partitions) {
        const at = `${topic}:${p}`;
        const next = this.next.get(at);
        if (next === undefined) continue;
        const lag = (ends[p] ?? 0n) - next;
        this.opts.metrics.lag.set({ topic, partition: String(p) }, Math.max(0, Number(lag)));
        // A source partition with records still to read is not idle, however long since its last one.
        this.sources.get(at)?.setCaughtUp(lag <= 0n);
        // Lag that does not move for a whole interval is worth a line: where the stream fetches from says
        // whether the records are not coming (an open transaction holds the stable offset) or not processed.
        const before = this.lastLagCheck.get(at);
        if (lag > 0n && before === next) {
          highs ??= await this.io.endOffsets(topic, count, false);
          this.opts.log.warn("no progress on a partition with lag", {
            partition: at,
            next: next.toString(),
            stableEnd: ends[p]?.toString(),
            end: highs[p]?.toString(),
            fetchingFrom: this.stream?.offsetsToFetch.get(at)?.toString(),
            paused: this.stream?.isPaused(),
            thread: this.state.describe(),
            batch: this.batch.source.length,
          });
        }
        this.lastLagCheck.set(at, next);
      }
    }
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.state.to("failed");
    this.syncStream();
    this.opts.log.error("worker loop failed", { error: errorMessage(err) });
    this.opts.onFatal(err);
  }

  /**
   * A new assignment: write what the old tasks hold, close the revoked ones, restore the new ones. A task kept
   * from the last assignment is kept open only if no generation came between: a member that the group dropped
   * (a stall past the session timeout) and took back may have missed one, in which another member owned the
   * task and wrote its changelog. Such a task is closed and opened again, which reads those writes from its
   * checkpoint on.
   */
  private async reassign(assigned: { topic: string; partitions: number[] }[], joined: MemberGeneration): Promise<void> {
    this.holdStream("assigning");
    // A restore still running belongs to the old assignment: it stops where it got to (its checkpoint says where),
    // and this assignment restores what it holds again, from there.
    for (const m of this.taskManagers()) await m.stopRestores();
    await this.flushing;
    clearTimeout(this.rejoinDeadline);
    this.rejoinDeadline = undefined;
    this.state.release("rejoin");
    await this.discard("rebalance");
    const stream = await this.streamReady;
    const now = Date.now();
    // per source topic, the watermark settings of its input
    const watermarkOf = new Map(sourceInputs(this.opts.config.topology).flatMap((input) => input.topics.map((topic) => [topic, input.watermark] as const)));
    const wantedSources = new Set<string>();
    const wantedTasks = new Map<KeyedSub, Set<number>>();
    for (const ks of this.keyed.values()) wantedTasks.set(ks, new Set());
    for (const a of assigned) {
      const ks = this.keyed.get(a.topic);
      for (const p of a.partitions) {
        if (ks) wantedTasks.get(ks)?.add(p);
        else if (watermarkOf.has(a.topic)) wantedSources.add(WatermarkTable.id(a.topic, p));
      }
    }
    for (const [id, w] of [...this.sources]) {
      if (wantedSources.has(id)) continue;
      this.sources.delete(id);
      this.opts.metrics.sourceWatermark.remove({ topic: w.topic, partition: String(w.partition) });
      this.opts.metrics.sourceIdle.remove({ topic: w.topic, partition: String(w.partition) });
    }
    for (const id of wantedSources) {
      if (this.sources.has(id)) continue;
      const i = id.lastIndexOf(":");
      const topic = id.slice(0, i);
      this.sources.set(id, new SourceWatermark(topic, Number(id.slice(i + 1)), watermarkOf.get(topic) as CompiledInputSettings["watermark"], now));
    }
    for (const [ks, wanted] of wantedTasks) ks.assignRelays(wanted);
    const last = this.tasksAssignedIn;
    const continuous = followsOn(last, joined);
    if (!continuous && this.taskManagers().some((m) => m.size > 0))
      this.opts.log.info("a generation may have passed without this member: its tasks are opened again from their checkpoints", {
        last: last?.generationId,
        joined: joined.generationId,
      });
    const toOpen = new Map<KeyedSub, number[]>();
    for (const [ks, wanted] of wantedTasks) if (ks.tasks) toOpen.set(ks, await ks.tasks.assign(wanted, continuous));
    this.tasksAssignedIn = joined;
    // Where to read from, before any state is restored: the committed offsets once no earlier owner's
    // transaction can move them any more. Restored the other way round, a zombie's commit landing in between
    // would put the offsets past records whose state was never restored.
    await this.positionsFor(assigned, joined);
    if (this.state.phase !== "stopping") for (const [ks, open] of toOpen) ks.tasks?.restore(open, wantedTasks.get(ks)?.size ?? 0);
    // Everything the stream holds was fetched under the old assignment (the fence empties what was still in
    // flight): it goes, and the stream reads on from this assignment's positions, which the worker sets itself.
    // The stream's own rewind leaves a partition with no committed offset where an earlier read left it.
    let stale = 0;
    while (stream.read() !== null) stale++;
    for (const [at, offset] of this.next) stream.offsetsToFetch.set(at, offset);
    this.opts.log.info("reading from the committed offsets", {
      positions: Object.fromEntries([...this.next].map(([k, v]) => [k, v.toString()])),
      staleRecordsDropped: stale,
      staleFetches: this.fence.staleResponses,
    });
    this.releaseStream("assigning");
  }

  /**
   * Drops the batch that was read but not committed: its records are read again from the committed offsets,
   * so the windows go back to the stores and the source watermarks to what the last commit established.
   */
  private async discard(why: string): Promise<void> {
    const b = this.batch;
    this.batch = emptyBatch();
    this.state.release("batchFull");
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.sources.values()) w.rollback();
    for (const ks of this.keyed.values()) ks.rollback();
    if (b.source.length > 0) {
      this.stats.discarded++;
      this.opts.log.info("discarded a batch that was not committed; its records will be read again", { why, records: b.source.length });
    }
  }

  private awaitRejoin(): void {
    this.holdStream("rejoin");
    if (this.rejoinDeadline) return;
    this.rejoinDeadline = setTimeout(
      () => this.fail(new Error(`no rejoin within ${REJOIN_DEADLINE_MS} ms after a rebalance refused a commit`)),
      REJOIN_DEADLINE_MS,
    );
  }

  /**
   * Where this assignment reads from: the group's stable committed offsets (records before them are done).
   * A partition with none starts where startFrom says (the internal repartition topic always at its start, as
   * Kafka Streams reads its own), and that start is committed at once, so that a worker stopped before its
   * first commit does not start again from a later `latest`.
   */
  private async positionsFor(assigned: { topic: string; partitions: number[] }[], joined: MemberGeneration): Promise<void> {
    this.next.clear();
    this.owned.clear();
    // A stall is measured within one assignment: its positions start over here.
    this.lastLagCheck.clear();
    for (const a of assigned) for (const p of a.partitions) this.owned.add(`${a.topic}:${p}`);
    if (assigned.length === 0) return;
    const committed = await this.io.stableCommittedOffsets(this.opts.config.consumerGroup, assigned);
    const fresh: OffsetToCommit[] = [];
    for (const a of assigned) {
      const missing: number[] = [];
      for (const p of a.partitions) {
        const offset = committed.get(`${a.topic}:${p}`);
        if (offset === undefined) missing.push(p);
        else this.next.set(`${a.topic}:${p}`, offset);
      }
      if (missing.length === 0) continue;
      // A source partition added after the pipeline first read its topic is read from its start: under latest
      // the records written to it before its first reader came would be skipped, as Flink reads a new split.
      const initial = this.opts.config.initialPartitions?.[a.topic];
      const internal = this.keyed.has(a.topic);
      const fromStart = internal ? missing : missing.filter((p) => initial !== undefined && p >= initial);
      const rest = missing.filter((p) => !fromStart.includes(p));
      const starts = [
        ...(fromStart.length > 0 ? await this.io.offsetsAt(a.topic, fromStart, "earliest", true) : []),
        ...(rest.length > 0 ? await this.io.offsetsAt(a.topic, rest, this.opts.config.topology.source.startFrom, true) : []),
      ];
      for (const [p, offset] of starts) {
        this.next.set(`${a.topic}:${p}`, offset);
        fresh.push({ topic: a.topic, partition: p, offset, leaderEpoch: -1 });
      }
      if (fromStart.length > 0 && !internal)
        this.opts.log.info("reading partitions added to a source from their start", { topic: a.topic, partitions: fromStart });
    }
    if (fresh.length === 0) return;
    try {
      await commitAsMember(this.consumer, joined, fresh);
    } catch (err) {
      // The group moved on again: the next join sets the positions anew.
      if (!isRebalanceError(err)) throw err;
      this.opts.log.info("committing the start offsets met a rebalance; the next join starts again", { error: errorMessage(err) });
    }
  }

  private onRecord(m: Message): void {
    if (this.failed) return;
    // Read under an assignment that is ending or has ended: the next one reads them again from its positions.
    if (this.state.betweenAssignments) {
      this.stats.skipped++;
      return;
    }
    // The stream can deliver a record below this assignment's position again (its own rewind on a join reads
    // committed offsets that may lag the stable ones), and, in principle, one of a partition that moved.
    const at = `${m.topic}:${m.partition}`;
    if (!this.owned.has(at) || this.held(at)) {
      this.stats.skipped++;
      return;
    }
    const next = this.next.get(at);
    if (next !== undefined && m.offset < next) {
      this.stats.skipped++;
      return;
    }
    this.next.set(at, m.offset + 1n);
    const internal = this.keyed.has(m.topic);
    if (this.limiter && !internal) this.throttle(this.limiter.take(performance.now()));
    const b = this.batch;
    b.source.push(m);
    b.fetchedAt.push(performance.now());
    if (internal) b.keyed.push(m);
    else this.onSource(m, b);
    if (this.failed) return;
    if (b.source.length >= this.maxBatch) {
      // Hold the stream while the batch is written: in-flight records stay bounded by maxInFlight.
      this.holdStream("batchFull");
      this.scheduleFlush(0);
    } else if (!this.timer) {
      this.scheduleFlush(this.lingerMs);
    }
  }

  /** A partition whose task restores: nothing of it is read until the task has caught up (restoreInBackground). */
  private held(at: string): boolean {
    const i = at.lastIndexOf(":");
    return this.keyed.get(at.slice(0, i))?.restoring(Number(at.slice(i + 1))) ?? false;
  }

  /** processing.maxRecordsPerSecond: holds the stream until the limiter lets the next record through. */
  private throttle(waitMs: number): void {
    if (waitMs === 0 || this.throttled) return;
    this.holdStream("throttled");
    this.throttled = setTimeout(() => {
      this.throttled = undefined;
      this.releaseStream("throttled");
    }, waitMs);
  }

  /** Holds the stream for a reason (thread-state.ts), pausing it if nothing held it yet. */
  private holdStream(reason: HoldReason): void {
    this.state.hold(reason);
    this.syncStream();
  }

  /** Lets go of one reason to hold the stream; it reads again once nothing holds it. */
  private releaseStream(reason: HoldReason): void {
    this.state.release(reason);
    this.syncStream();
  }

  /** Pauses or resumes the stream to match the thread's state: the one place that does either. */
  private syncStream(): void {
    const stream = this.stream;
    if (!stream) return;
    const action = streamAction(this.state, stream.isPaused());
    if (action === "pause") stream.pause();
    else if (action === "resume") stream.resume();
  }

  private onSource(m: Message, b: Batch): void {
    b.counts.in++;
    const outcome = this.sourceStage.process(m);
    if (!outcome.ok) {
      this.collector.deadLetter(b, m, outcome);
      return;
    }
    if (outcome.eventTime !== undefined) this.sources.get(WatermarkTable.id(m.topic, m.partition))?.observe(outcome.eventTime, Date.now());
    b.counts.filtered += outcome.filtered;
    for (const o of outcome.sink) b.out.push({ topic: this.opts.config.topology.sink.topic, ...o });
    b.counts.out += outcome.sink.length;
    for (const o of outcome.repartition) b.out.push(o);
  }

  /**
   * The batch's repartition records, each through the keyed stage of the sub-topology that reads its topic: per
   * task, the windows they may update are read into the state cache first (one multi-get), then the records run
   * in order. A marker moves its task's watermark, which closes windows: one iterator over the store's range that
   * the watermark passed.
   */
  private async processKeyed(b: Batch): Promise<void> {
    const ending = this.state.held("rejoin");
    for (const ks of this.keyed.values()) await ks.closeMore(b, ending);
    if (b.keyed.length === 0) return;
    for (const ks of this.keyed.values()) await ks.prefetch(b.keyed);
    for (const m of b.keyed) {
      const ks = this.keyed.get(m.topic);
      if (!ks) continue; // onRecord puts only records of a repartition topic here
      await ks.onRecord(m, b);
      if (this.failed) return;
    }
  }

  /**
   * Repartition records below the group's committed offsets are read by no one again: every so often they are
   * deleted (DeleteRecords), as Kafka Streams does, or the topic (retention.ms -1) would grow for ever, markers
   * and all. A failed purge is counted and logged, and tried again at the next interval; it never fails the
   * worker, as nothing is lost by keeping records longer.
   */
  private purgeCommitted(): void {
    if (this.purging || this.purgeable.size === 0 || Date.now() - this.lastPurge < this.purgeIntervalMs) return;
    this.lastPurge = Date.now();
    const purges = [...this.purgeable].map(([topic, offsets]) =>
      this.io.deleteRecordsBefore(topic, offsets).then(
        () => {
          for (const [p, offset] of offsets) this.opts.metrics.repartitionPurgedTo.set({ topic, partition: String(p) }, Number(offset));
        },
        (err: unknown) => {
          this.opts.metrics.repartitionPurgeFailures.inc();
          this.opts.log.warn("purging committed repartition records failed; trying again at the next interval", { topic, error: errorMessage(err) });
        },
      ),
    );
    this.purgeable.clear();
    this.purging = Promise.all(purges)
      .then(() => undefined)
      .finally(() => {
        this.purging = undefined;
      });
  }

  private scheduleFlush(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flushing.then(() => this.flush()).catch((err: unknown) => this.fail(asError(err)));
    }, ms);
  }

  /** The source partitions' watermark markers due now, into every partition of the first repartition topic. */
  private markers(now: number): OutRecord[] {
    const first = sourceSubTopology(this.graph);
    const into = first.output === undefined ? undefined : this.keyed.get(first.output);
    if (!first.forwardsWatermarks || !into) return [];
    const out: OutRecord[] = [];
    for (const w of this.sources.values()) {
      const m = w.due(now);
      if (!m) continue;
      const labels = { topic: m.topic, partition: String(m.partition) };
      if (m.watermark !== null) this.opts.metrics.sourceWatermark.set(labels, m.watermark);
      this.opts.metrics.sourceIdle.set(labels, m.idle ? 1 : 0);
      out.push(...markerRecords(m, into.topic, into.partitions));
    }
    return out;
  }

  /**
   * The markers the keyed tasks forward now (watermarks.ts, forwardedWatermark), each into every partition of
   * its sub-topology's output. Taken after the batch's records ran: a task's table holds the markers read before
   * the records it wrote in this batch, and those records go out before these markers.
   */
  private forwardedMarkers(now: number): OutRecord[] {
    const out: OutRecord[] = [];
    for (const ks of this.keyed.values()) {
      const into = ks.sub.output === undefined ? undefined : this.keyed.get(ks.sub.output);
      if (ks.sub.forwardsWatermarks && into) out.push(...ks.forwardedMarkers(into, now));
    }
    return out;
  }

  /** One flush; a stream held by a full batch reads again once it has ended, unless the next batch is full too. */
  private async flush(): Promise<void> {
    try {
      await this.flushBatch();
    } finally {
      if (this.batch.source.length < this.maxBatch) this.state.release("batchFull");
      this.syncStream();
    }
  }

  private async flushBatch(): Promise<void> {
    // A reassignment is under way: the batch belongs to the old assignment and is being discarded.
    if (this.failed || this.state.held("assigning")) return;
    const b = this.batch;
    this.batch = emptyBatch();
    const now = Date.now();
    // What the source watermarks stand at for this batch, taken before anything awaits: records read from now on
    // belong to the next one, and a marker must not run ahead of records not yet in the repartition topic.
    const markers = this.markers(now);
    const sealed = [...this.sources.values()].map((w) => [w, w.snapshot()] as const);
    await this.processKeyed(b);
    if (this.failed) return;
    const sweep = now - this.lastSweep >= SWEEP_INTERVAL_MS;
    if (sweep) this.lastSweep = now;
    // each sub-topology's TTL sweep and table changes, before the batch's changes are taken
    for (const ks of this.keyed.values()) await ks.flushTasks(b, sweep, now);
    const out = [...this.collector.screened(b, now), ...markers, ...this.forwardedMarkers(now)];
    if (this.failed) return; // a record the broker would refuse, and no DLQ to take it: stopped before writing
    const applies: (() => Promise<void>)[] = [];
    for (const m of this.taskManagers()) {
      for (const task of m.values()) {
        const c = task.changes();
        out.push(...c.changelog);
        applies.push(c.apply);
      }
    }
    // The assignment this batch was read under: a join while it is written must not move its commit to the next.
    const member = this.assignment;
    const offsets = this.commitOffsets(b.source);
    if (offsets.length === 0 && out.length === 0) return;
    if (offsets.length > 0 && this.consumer.generationId !== this.assignment?.generationId)
      this.opts.log.info("committing under the assignment's generation while the consumer has joined the next; the broker will refuse it", {
        assignment: this.assignment?.generationId,
        consumer: this.consumer.generationId,
      });
    const end = this.opts.metrics.commit.startTimer();
    try {
      let written: ChangelogEnds;
      try {
        written = await this.collector.write(b, out, offsets.length > 0 && member ? { consumer: this.consumer, member, offsets } : undefined, now);
      } catch (err) {
        if (!isRebalanceError(err)) throw err;
        // The group moved on: these offsets are no longer ours to commit. Whoever owns them reads them again,
        // from the committed offsets that the rejoin rewinds the stream to; until then, read nothing.
        this.awaitRejoin();
        await this.discard(`the commit was refused by a rebalance: ${errorMessage(err)}`);
        return;
      }
      for (const apply of applies) await apply();
      for (const ks of this.keyed.values()) ks.committed(written);
      for (const m of offsets) {
        if (!this.keyed.has(m.topic)) continue;
        let purgeable = this.purgeable.get(m.topic);
        if (!purgeable) {
          purgeable = new Map();
          this.purgeable.set(m.topic, purgeable);
        }
        purgeable.set(m.partition, m.offset + 1n);
      }
      this.purgeCommitted();
      for (const [w, state] of sealed) w.commit(state);
      end();
      const t = performance.now();
      const wall = Date.now();
      for (let i = 0; i < b.source.length; i++) {
        if (this.keyed.has(b.source[i]?.topic ?? "")) continue;
        this.opts.metrics.processing.observe((t - (b.fetchedAt[i] ?? t)) / 1000);
        this.opts.metrics.endToEnd.observe(Math.max(0, wall - Number(b.source[i]?.timestamp ?? wall)) / 1000);
      }
      this.stats.in += b.counts.in;
      this.opts.metrics.recordsIn.inc(b.counts.in);
      for (const inc of b.onCommit) inc();
      this.stats.out += b.counts.out;
      this.stats.filtered += b.counts.filtered;
      this.stats.deadLetters += b.counts.dlq;
      this.stats.aggregated += b.counts.aggregated;
      this.stats.late += b.counts.late;
      this.stats.batches++;
      this.opts.metrics.recordsOut.inc(b.counts.out);
      this.opts.metrics.filtered.inc(b.counts.filtered);
      for (const m of this.taskManagers()) m.reportSizes();
      // The batch's windows are written: what the cache holds beyond its bound may go now.
      this.cache.trim();
      this.opts.metrics.stateCacheBytes.set(this.cache.bytes);
    } finally {
      // windows still to come out of a large close: the next batch takes them, read or not
      if (this.state.phase === "running" && !this.state.held("rejoin") && this.taskManagers().some((m) => m.closing)) this.scheduleFlush(0);
    }
  }

  /**
   * What to commit, one per partition: the offset after the batch's last record of it, as a record whose offset
   * + 1 is that (the form the library's commits take). Past it too, when nothing else is buffered, whatever the
   * stream fetched and could not deliver: transaction markers and aborted records. Kafka's own consumer commits
   * its position, past them; committing only after the last record would leave a lag of 1 behind every
   * transaction's marker for ever, which a lag autoscaler reads as work (KEDA's Kafka scaler falls for it).
   */
  private commitOffsets(records: Message[]): Message[] {
    const last = new Map<string, Message>();
    for (const m of records) last.set(`${m.topic}:${m.partition}`, m);
    const assignment = this.assignment;
    if (!assignment) {
      if (records.length > 0) throw new Error("records to commit before any assignment: the worker reads only partitions a join assigned");
      return [];
    }
    const group = { ...assignment, coordinatorId: this.consumer.coordinatorId };
    const stream = this.stream;
    // Records in the buffer, or a rejoin pending, leave the positions ahead of what was read: no skipping.
    if (!stream || stream.readableLength > 0 || this.state.betweenAssignments) return underGeneration([...last.values()], group);
    // Nor past the records of a partition that the next batch read while this one awaited the keyed stage's
    // reads (a batch flushed on its commit interval does not hold the stream): they are not written yet.
    const reading = new Set<string>();
    for (const m of this.batch.source) reading.add(`${m.topic}:${m.partition}`);
    for (const at of this.owned) {
      if (reading.has(at) || this.held(at)) continue;
      const next = this.next.get(at);
      const fetched = stream.offsetsToFetch.get(at);
      if (next === undefined || fetched === undefined || fetched <= next) continue;
      this.next.set(at, fetched);
      const i = at.lastIndexOf(":");
      const template = last.get(at) ?? ({ topic: at.slice(0, i), partition: Number(at.slice(i + 1)), metadata: { consumer: group } } as unknown as Message);
      last.set(at, { ...template, offset: fetched - 1n });
    }
    return underGeneration([...last.values()], group);
  }

  /** Stops fetching, writes and commits what was read, closes the tasks with checkpoints, leaves the group. */
  async stop(): Promise<void> {
    if (!this.failed) this.state.to("stopping");
    if (this.timer) clearTimeout(this.timer);
    if (this.ticker) clearInterval(this.ticker);
    clearInterval(this.lagTimer);
    clearTimeout(this.rejoinDeadline);
    clearTimeout(this.throttled);
    this.timer = undefined;
    this.syncStream();
    await this.assignments;
    for (const m of this.taskManagers()) await m.stopRestores();
    const lastWrite = this.failed
      ? undefined
      : await this.flushing
          .then(() => this.flush())
          .then(
            () => undefined,
            (err: unknown) => err,
          );
    for (const m of this.taskManagers()) {
      if (!lastWrite && !this.failed) await m.closeAll();
      else m.forget();
    }
    await this.stream?.close();
    await this.consumer.close();
    await this.producer.close();
    await this.globals?.stop();
    await this.purging; // settles either way: a failure was counted
    await this.io.close();
    if (lastWrite) throw lastWrite;
    if (this.failed) throw this.failed;
  }
}

/** True when `joined` is the generation right after `last`, for the same member: none came between. */
export function followsOn(last: MemberGeneration | undefined, joined: MemberGeneration): boolean {
  return last !== undefined && last.memberId === joined.memberId && joined.generationId === last.generationId + 1;
}

/**
 * Offsets to commit, each stamped with the generation of the assignment whose records they follow. The library
 * stamps a fetched record with the consumer's generation when it parses the fetch, and that can already be the
 * next generation's (its JoinGroup response arrived, its SyncGroup and the join event not yet). Committed under
 * it once the group is stable again, the offsets of partitions this member no longer owns would be accepted,
 * after their new owner had read the committed offsets and while it restored their changelog: the new owner
 * counts the batch again. Under the assignment's own generation the broker refuses them (ILLEGAL_GENERATION),
 * and the batch is discarded and read again by whoever owns it now.
 */
export function underGeneration(offsets: Message[], group: MemberGeneration & { coordinatorId: number | null }): Message[] {
  return offsets.map((m) => ({ ...m, metadata: { ...m.metadata, consumer: group } }) as Message);
}

/** A repartition topic's id, by which fetch requests name it: read at the start, before any task restores. */
function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
