// A sub-topology after a keyBy, as the stream thread (worker.ts) runs it: its input is the repartition topic
// the sub-topology before it writes; its keyed stage runs the steps (stages.ts); when it has a window or a
// table, its tasks hold the state, one per partition (task-manager.ts); and it forwards the watermarks it follows
// into its own output, through its tasks' tables or, with no window, through relay tables. The worker owns the
// batch, the consumer and the commit; this owns what one sub-topology does with the batch's records of its topic.
import type { Message } from "@platformatic/kafka";
import type { GlobalLookup } from "./global-table.ts";
import type { KeyedSubTopology, SubTopology, TopologyGraph } from "./graph.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import type { Batch, ChangelogEnds } from "./record-collector.ts";
import { type DeadResult, eventTimeOf, isTableRecord, KeyedStage, type OutRecord } from "./stages.ts";
import type { Failure, SinkEncoder, SinkRecord, SourceRecord } from "./stateless.ts";
import { type ClosingTrigger, WindowTask } from "./task.ts";
import type { TaskManager } from "./task-manager.ts";
import { decodeMarker, forwardedWatermark, isMarker, type Marker, MarkerSchedule, markerRecords, RelayTable, WatermarkTable } from "./watermarks.ts";
import type { WindowResult } from "./window.ts";

/** What a sub-topology needs of the worker around it. */
export interface KeyedSubContext {
  /** the main sink's topic: a sink record without a topic of its own (a route's) goes there */
  sinkTopic: string;
  metrics: RuntimeMetrics;
  /** a record that failed, to the dead-letter topic (record-collector.ts) */
  deadLetter(b: Batch, r: SourceRecord, failure: Failure): void;
  /** the loop cannot go on */
  fail(err: Error): void;
  warn(msg: string, fields: Record<string, unknown>): void;
  /** the global inputs' tables, for lookup steps */
  globals?: GlobalLookup;
}

/** What a step gives the batch: sink and repartition records, and results that failed on the way. */
interface Emitted {
  sink: SinkRecord[];
  repartition?: OutRecord[];
  dead: DeadResult[];
}

export class KeyedSub {
  readonly sub: KeyedSubTopology;
  /** its input: the repartition topic the sub-topology before it writes */
  readonly topic: string;
  readonly stage: KeyedStage;
  /** its window's or table's tasks, when it has one; the worker builds them, as they hold its stream too */
  tasks?: TaskManager;
  /** the topics whose markers its tasks' watermarks follow: the sources, or the repartition topic before */
  readonly markerTopics: string[];
  /** every partition upstream, `topic:partition`, as read at the start: a task's watermark waits for all */
  expected: string[] = [];
  /** its input's partition count and topic id (the fence holds a restoring task's partition by it) */
  partitions = 0;
  private id?: string;
  /** per partition this worker holds, when it forwards watermarks and has no window: its tasks' tables */
  private readonly relays = new Map<number, RelayTable>();
  /** per partition, when its task last wrote a marker into the sub-topology's output */
  private readonly schedules = new Map<number, MarkerSchedule>();
  private readonly ctx: KeyedSubContext;

  constructor(graph: TopologyGraph, sub: KeyedSubTopology, upstream: SubTopology, sink: SinkEncoder, ctx: KeyedSubContext) {
    this.sub = sub;
    this.topic = sub.input.topic;
    this.stage = new KeyedStage(graph, sub, sink, ctx.globals);
    this.markerTopics = upstream.input.kind === "source" ? upstream.input.topics : [upstream.input.topic];
    this.ctx = ctx;
  }

  /** Its window's, table's or join's name, for the metrics; "" without one. */
  private get stepName(): string {
    return this.sub.window?.name ?? this.sub.join?.name ?? "";
  }

  /** A table: an aggregate without a window, whose changes go out once per batch. */
  get isTable(): boolean {
    return this.sub.window?.window.type === "global";
  }

  /** Its input's id; the fence holds partitions by topic id. */
  get topicId(): string {
    if (this.id === undefined) throw new Error(`tasks to restore, but the id of ${this.topic} is not known`);
    return this.id;
  }

  /** What the worker read of the topics as it started: its input's partitions and id, and every upstream partition. */
  described(topics: Map<string, { partitions: number; id: string }>): void {
    this.partitions = topics.get(this.topic)?.partitions ?? 0;
    this.id = topics.get(this.topic)?.id;
    this.expected = this.markerTopics.flatMap((topic) => Array.from({ length: topics.get(topic)?.partitions ?? 0 }, (_, p) => WatermarkTable.id(topic, p)));
    this.tasks?.expectSources(this.expected);
  }

  /** A partition whose task restores: nothing of it is read until the task has caught up. */
  restoring(partition: number): boolean {
    return this.tasks?.restoringCount ? this.tasks.isRestoring(partition) : false;
  }

  /**
   * The watermark tables of a sub-topology without a window that forwards watermarks, for the partitions this
   * assignment gives it; the rest go, with their marker schedules.
   */
  assignRelays(wanted: ReadonlySet<number>): void {
    for (const p of [...this.schedules.keys()]) if (!wanted.has(p)) this.schedules.delete(p);
    for (const p of [...this.relays.keys()]) if (!wanted.has(p)) this.relays.delete(p);
    if (this.sub.window || this.sub.join || !this.sub.forwardsWatermarks) return;
    for (const p of wanted) if (!this.relays.has(p)) this.relays.set(p, new RelayTable(this.expected, this.markerTopics));
  }

  /** A batch discarded: the tasks, relays and schedules go back to the last commit. */
  rollback(): void {
    this.tasks?.rollback();
    for (const r of this.relays.values()) r.rollback();
    for (const m of this.schedules.values()) m.rollback();
  }

  /** A batch committed: the tasks learn where their changelogs end, the relays and schedules keep what they saw. */
  committed(written: ChangelogEnds): void {
    const stateful = this.sub.window ?? this.sub.join;
    if (stateful) this.tasks?.wrote(written.get(stateful.changelogTopic) ?? new Map());
    for (const r of this.relays.values()) r.commit();
    for (const m of this.schedules.values()) m.commit();
  }

  /**
   * A watermark that closed more windows than one batch takes (CLOSE_BATCH): the next part of them, unless the
   * assignment is ending (`ending`: a rejoin is awaited), when the tasks' next owners close them.
   */
  async closeMore(b: Batch, ending: boolean): Promise<void> {
    if (ending) return;
    for (const [p, task] of this.tasks?.entries() ?? []) {
      if (!(task instanceof WindowTask) || !task.operator.closing) continue;
      const part = await task.closeMore({ topic: this.topic, offset: -1n, timestamp: BigInt(Date.now()) });
      this.emitClosed(b, p, part.closed, part.trigger);
    }
  }

  /**
   * Per task, what the batch's records of this topic will read, at once: the windows they may update, read into
   * the state cache; for a join, the versions of the keys its table records update.
   */
  async prefetch(records: Message[]): Promise<void> {
    if (!this.tasks) return;
    const join = this.sub.join !== undefined;
    const inputs = new Map<number, { keyBytes: Buffer; ts: number }[]>();
    for (const m of records) {
      if (m.topic !== this.topic || isMarker(m) || (join && !isTableRecord(m))) continue;
      let ts: number;
      try {
        ts = eventTimeOf(m);
      } catch {
        continue; // the keyed stage sends it to the DLQ, and reads no window for it
      }
      let list = inputs.get(m.partition);
      if (!list) {
        list = [];
        inputs.set(m.partition, list);
      }
      list.push({ keyBytes: m.key ?? Buffer.alloc(0), ts });
    }
    for (const [p, list] of inputs) {
      const task = this.tasks.get(p);
      if (task instanceof WindowTask) await task.operator.prefetch(list);
      else await task?.operator.prefetch(list.map((x) => x.keyBytes));
    }
  }

  /** One record of its topic: a marker moves a watermark (and may close windows); a record runs the steps. */
  async onRecord(m: Message, b: Batch): Promise<void> {
    const task = this.tasks?.get(m.partition);
    if (isMarker(m)) {
      const relay = this.relays.get(m.partition);
      if (!task && !relay) return; // no window here or after: nothing uses watermarks
      let marker: Marker;
      try {
        marker = decodeMarker(m.value);
      } catch (err) {
        this.ctx.warn("ignoring a malformed watermark marker", {
          topic: m.topic,
          partition: m.partition,
          offset: m.offset.toString(),
          error: err instanceof Error ? err.message : String(err),
        });
        return;
      }
      if (relay) {
        relay.table.update(marker);
        return;
      }
      if (!task) return;
      const trigger = { topic: m.topic, offset: m.offset, timestamp: m.timestamp };
      const moved = await task.onMarker(marker, trigger);
      if (!moved) return;
      if ("closed" in moved) this.emitClosed(b, m.partition, moved.closed, trigger);
      else if (moved.released.length > 0) this.add(b, this.stage.emitJoined(moved.released, m.partition), m.partition, trigger.timestamp);
      this.ctx.metrics.taskWatermark.set({ step: this.stepName, partition: String(m.partition) }, moved.watermark);
      return;
    }
    if (this.tasks && !task) {
      this.ctx.fail(new Error(`a record of ${m.topic}/${m.partition} arrived, but no task holds that partition`));
      return;
    }
    const outcome = this.stage.process(m, task instanceof WindowTask ? { window: task.operator } : task ? { join: task.operator } : {});
    if (!outcome.ok) {
      this.ctx.deadLetter(b, m, outcome);
      return;
    }
    b.counts.filtered += outcome.filtered;
    b.counts.aggregated += outcome.aggregated;
    b.counts.late += outcome.late.length + outcome.lateDropped;
    b.counts.lateDropped += outcome.lateDropped;
    const step = this.stepName;
    const metrics = this.ctx.metrics;
    if (outcome.aggregated > 0) b.onCommit.push(() => metrics.aggregated.inc({ step }, outcome.aggregated));
    if (outcome.late.length > 0) b.onCommit.push(() => metrics.late.inc({ step, action: "topic" }, outcome.late.length));
    if (outcome.lateDropped > 0) b.onCommit.push(() => metrics.late.inc({ step, action: "dropped" }, outcome.lateDropped));
    this.add(b, outcome, m.partition, m.timestamp);
    b.out.push(...outcome.late);
  }

  /**
   * At the batch's end, before its changes are taken: on a `sweep` each task deletes what the TTL expired, and
   * a table that writes tombstones writes them for its expired keys; then a table's changed keys go on, once
   * each with their values now (WindowOperator.takeUpdates). They are stamped with the time of the partition's
   * last record in the batch, or `now` when none came.
   */
  async flushTasks(b: Batch, sweep: boolean, now: number): Promise<void> {
    if (!this.tasks || (!sweep && !this.isTable)) return;
    // the partitions' last records, only in a batch where something may be written
    const last = new Map<number, bigint>();
    for (const m of b.keyed) if (m.topic === this.topic) last.set(m.partition, m.timestamp);
    for (const [p, task] of this.tasks.entries()) {
      if (!(task instanceof WindowTask)) {
        if (sweep) await task.operator.sweep(); // a join's table keys: deleted, nothing written to the sink
        continue;
      }
      const timestamp = last.get(p) ?? BigInt(now);
      if (sweep) {
        const { tombstones } = await task.operator.sweep();
        if (tombstones.length > 0)
          this.add(b, this.stage.tombstones(tombstones, { topic: this.topic, partition: BigInt(p), offset: -1n, headers: {} }, timestamp), p, timestamp);
      }
      if (this.isTable) this.emitClosed(b, p, task.operator.takeUpdates(), { topic: this.topic, offset: -1n, timestamp });
    }
  }

  /**
   * The markers its tasks forward now (watermarks.ts, forwardedWatermark), each into every partition of `into`,
   * its output. Taken after the batch's records ran: a task's table holds the markers read before the records it
   * wrote in this batch, and those records go out before these markers.
   */
  forwardedMarkers(into: { topic: string; partitions: number }, now: number): OutRecord[] {
    const out: OutRecord[] = [];
    const graceMs = this.sub.window?.graceMs ?? 0;
    const forward = (p: number, table: WatermarkTable, window?: { watermark: number; closing: boolean }) => {
      let schedule = this.schedules.get(p);
      if (!schedule) {
        schedule = new MarkerSchedule();
        this.schedules.set(p, schedule);
      }
      const due = schedule.due(forwardedWatermark(table, window && { ...window, graceMs }), table.allIdle(), now);
      if (due) out.push(...markerRecords({ topic: this.topic, partition: p, ...due }, into.topic, into.partitions));
    };
    // a join releases every held record its watermark passes at once: it forwards its watermark as it stands (a
    // windowed left or outer join, less its within: window-join.ts)
    for (const [p, task] of this.tasks?.entries() ?? [])
      forward(
        p,
        task.table,
        task instanceof WindowTask
          ? { watermark: task.operator.watermark, closing: task.operator.closing }
          : { watermark: task.operator.forwardable, closing: false },
      );
    for (const [p, relay] of this.relays) forward(p, relay.table);
    return out;
  }

  /**
   * Window results that a watermark closed (or a table's changes), through the steps after the window to the
   * sink. The marker that moved the watermark is their trigger: its time stamps them, and a failed one's dead
   * letter.
   */
  private emitClosed(b: Batch, partition: number, closed: WindowResult[], trigger: ClosingTrigger): void {
    if (closed.length === 0) return;
    const scope = { topic: trigger.topic, partition: BigInt(partition), offset: trigger.offset, headers: {} };
    this.add(b, this.stage.emit(closed, scope, trigger.timestamp), partition, trigger.timestamp);
  }

  /**
   * What a step gave, into the batch: sink records (to the main sink unless a route named another), repartition
   * records, and a dead letter for each result that failed, with no source record of its own. Its timestamp is
   * the trigger's, not the window end: a window result may be further ahead than a broker takes
   * (message.timestamp.after.max.ms), and the end is in the value.
   */
  private add(b: Batch, e: Emitted, partition: number, timestamp: bigint): void {
    for (const o of e.sink) b.out.push({ topic: this.ctx.sinkTopic, ...o });
    b.counts.out += e.sink.length;
    if (e.repartition) for (const o of e.repartition) b.out.push(o);
    for (const d of e.dead) {
      const r: SourceRecord = { topic: this.topic, partition, offset: -1n, timestamp, key: d.keyBytes, ...(d.value ? { value: d.value } : {}) };
      this.ctx.deadLetter(b, r, d.failure);
    }
  }
}
