// Event-time watermarks that travel with the data through the repartition topics.
// - A source partition's watermark is the highest event time read from it minus maxOutOfOrderness, and never
//   goes back. The task reading it writes markers carrying it into every repartition partition; after
//   idleTimeout without records, read to its end, the partition is marked idle. A partition with records
//   still to read is never idle: its reader is busy elsewhere, and its records would come late.
// - A window task's watermark is the minimum over every source partition's latest marker, idle ones left out.
//   Until it has heard from every source partition it holds (no window closes); when all are idle it takes the
//   highest, so a finished backlog still closes its windows.
// - A keyed task whose sub-topology writes a further repartition topic, with a window after it, forwards its
//   own watermark there as markers of its input partition, in the same way (forwardedWatermark): its table's,
//   less its window's grace when it has one, since a window result's event time is its window's last
//   millisecond. The tasks of the next sub-topology take the minimum over every partition of that input.

import { decodeInternal, encodeInternal } from "./codec.ts";
export const MARKER_HEADER = "conveyor.marker";
/** Markers go out when a watermark advanced, and at least this often while a partition is assigned. */
export const MARKER_INTERVAL_MS = 200;

export interface Marker {
  topic: string;
  partition: number;
  /** null until the partition has had a record with an event time */
  watermark: number | null;
  idle: boolean;
}

/** What a source watermark holds, as a sealed batch saw it. */
export interface SourceWatermarkState {
  maxEventTime: number;
  lastRecordAt: number;
  lastSent?: { watermark: number | null; idle: boolean; at: number };
}

/** The source side: one per assigned source partition. */
export class SourceWatermark {
  private maxEventTime = Number.NEGATIVE_INFINITY;
  private lastRecordAt: number;
  private lastSent?: { watermark: number | null; idle: boolean; at: number };
  readonly topic: string;
  readonly partition: number;
  private readonly maxOutOfOrdernessMs: number;
  private readonly idleTimeoutMs: number;
  /** Whether the partition was read to its end at the last look; unknown (false) until the first. */
  private caughtUp = false;

  constructor(topic: string, partition: number, opts: { maxOutOfOrdernessMs: number; idleTimeoutMs: number }, now: number) {
    this.topic = topic;
    this.partition = partition;
    this.maxOutOfOrdernessMs = opts.maxOutOfOrdernessMs;
    this.idleTimeoutMs = opts.idleTimeoutMs;
    this.lastRecordAt = now; // idleness counts from the assignment
  }

  private committed?: SourceWatermarkState;

  /** The state now: taken when a batch is sealed, and committed when that batch is. */
  snapshot(): SourceWatermarkState {
    return { maxEventTime: this.maxEventTime, lastRecordAt: this.lastRecordAt, ...(this.lastSent ? { lastSent: this.lastSent } : {}) };
  }

  /**
   * What a committed batch established: a rollback returns here. It is the snapshot taken when the batch was
   * sealed, not the state now: records of the next batch, read while this one was being written, are not
   * committed yet, and a watermark that kept them would run ahead of their second reading after a rollback.
   */
  commit(state: SourceWatermarkState = this.snapshot()): void {
    this.committed = state;
  }

  /**
   * Forgets what an uncommitted batch saw. Its records will be read again, and a watermark that ran ahead on
   * them would make them late on the second reading.
   */
  rollback(): void {
    if (!this.committed) return;
    this.maxEventTime = this.committed.maxEventTime;
    this.lastRecordAt = this.committed.lastRecordAt;
    this.lastSent = this.committed.lastSent;
  }

  observe(eventTime: number, now: number): void {
    if (eventTime > this.maxEventTime) this.maxEventTime = eventTime;
    this.lastRecordAt = now;
  }

  /** What the reader last found: every record of the partition read (its end at most the next offset), or not. */
  setCaughtUp(caughtUp: boolean): void {
    this.caughtUp = caughtUp;
  }

  get watermark(): number | null {
    return this.maxEventTime === Number.NEGATIVE_INFINITY ? null : this.maxEventTime - this.maxOutOfOrdernessMs;
  }

  /** The marker to write now, if any: on an advance, on a change of idleness, or when the interval is up. */
  due(now: number): Marker | undefined {
    const idle = this.caughtUp && now - this.lastRecordAt >= this.idleTimeoutMs;
    const watermark = this.watermark;
    const last = this.lastSent;
    const changed = !last || last.idle !== idle || (watermark ?? Number.NEGATIVE_INFINITY) > (last.watermark ?? Number.NEGATIVE_INFINITY);
    if (!changed && now - last.at < MARKER_INTERVAL_MS) return undefined;
    this.lastSent = { watermark, idle, at: now };
    return { topic: this.topic, partition: this.partition, watermark, idle };
  }
}

/**
 * The window task side: the latest marker of each source partition.
 * Only the source topics of the configuration now count: a marker, or a saved entry, naming any other topic is
 * ignored, so that a topic removed from the sources (an edit that keeps the state) cannot hold the watermark
 * back with its last marker. A partition of a source beyond those known (the topic grew) joins the expected.
 */
export class WatermarkTable {
  private readonly latest = new Map<string, { watermark: number | null; idle: boolean }>();
  private readonly expected: Set<string>;
  private readonly sourceTopics: Set<string>;

  /** `sourceTopics` defaults to the topics of `expected`. */
  constructor(expected: Iterable<string>, sourceTopics?: Iterable<string>) {
    this.expected = new Set(expected);
    this.sourceTopics = new Set(sourceTopics ?? [...this.expected].map((id) => id.slice(0, id.lastIndexOf(":"))));
  }

  static id(topic: string, partition: number): string {
    return `${topic}:${partition}`;
  }

  /**
   * Records a marker; a partition's watermark never goes back, even when a new owner starts lower. Returns
   * false, and changes nothing, for a marker of a topic that is not a source now.
   */
  update(m: Marker): boolean {
    if (!this.sourceTopics.has(m.topic)) return false;
    const id = WatermarkTable.id(m.topic, m.partition);
    const prev = this.latest.get(id);
    const wm = Math.max(prev?.watermark ?? Number.NEGATIVE_INFINITY, m.watermark ?? Number.NEGATIVE_INFINITY);
    this.latest.set(id, { watermark: wm === Number.NEGATIVE_INFINITY ? null : wm, idle: m.idle });
    this.expected.add(id);
    return true;
  }

  /** Whether every partition expected is heard from and idle: a task forwards its watermark as idle then. */
  allIdle(): boolean {
    if (this.expected.size === 0) return false;
    for (const id of this.expected) if (!this.latest.get(id)?.idle) return false;
    return true;
  }

  /** The task's watermark; -Infinity while it holds. */
  current(): number {
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    let active = 0;
    for (const id of this.expected) {
      const e = this.latest.get(id);
      if (!e) return Number.NEGATIVE_INFINITY; // not heard from yet
      const wm = e.watermark ?? Number.NEGATIVE_INFINITY;
      if (wm > max) max = wm;
      if (e.idle) continue;
      active++;
      if (wm < min) min = wm;
    }
    if (this.expected.size === 0) return Number.NEGATIVE_INFINITY;
    return active === 0 ? max : min;
  }

  toJSON(): Record<string, { watermark: number | null; idle: boolean }> {
    return Object.fromEntries(this.latest);
  }

  /** Takes back a saved table; entries of topics that are no longer sources are forgotten. */
  restore(saved: Record<string, { watermark: number | null; idle: boolean }>): void {
    for (const [id, v] of Object.entries(saved)) {
      const i = id.lastIndexOf(":");
      this.update({ topic: id.slice(0, i), partition: Number(id.slice(i + 1)), watermark: v.watermark, idle: v.idle });
    }
  }
}

const MARKER_KEY_PREFIX = Buffer.from("\u0000wm:");

/**
 * A watermark marker is a record the runtime wrote: its key and its header both. Source records reach the
 * repartition topic without any conveyor.* header (the source stage drops them), so no producer upstream can
 * make a record that passes for one.
 */
export function isMarker(r: { key?: Buffer | null; headers?: Map<Buffer, Buffer> }): boolean {
  if (!r.key || !r.key.subarray(0, MARKER_KEY_PREFIX.length).equals(MARKER_KEY_PREFIX)) return false;
  for (const k of r.headers?.keys() ?? []) if (k.toString() === MARKER_HEADER) return true;
  return false;
}

/** A marker's records: one into every partition of a repartition topic, keyed by the partition it speaks for. */
export function markerRecords(
  m: Marker,
  topic: string,
  partitions: number,
): { topic: string; partition: number; key: Buffer; value: Buffer; headers: Map<Buffer, Buffer> }[] {
  const value = encodeMarker(m);
  const key = Buffer.concat([MARKER_KEY_PREFIX, Buffer.from(`${m.topic}:${m.partition}`)]);
  const headers = new Map([[Buffer.from(MARKER_HEADER), Buffer.from("1")]]);
  return Array.from({ length: partitions }, (_, p) => ({ topic, partition: p, key, value, headers }));
}

export function encodeMarker(m: Marker): Buffer {
  return Buffer.from(JSON.stringify(m), "utf8");
}

export function decodeMarker(raw: Buffer): Marker {
  const m = JSON.parse(raw.toString("utf8")) as Marker;
  if (typeof m !== "object" || m === null || typeof m.topic !== "string" || typeof m.idle !== "boolean") throw new Error("not a watermark marker");
  if (!Number.isSafeInteger(m.partition) || m.partition < 0) throw new Error(`a watermark marker's partition must be a partition number, not ${m.partition}`);
  if (m.watermark !== null && !Number.isSafeInteger(m.watermark))
    throw new Error(`a watermark marker's watermark must be null or whole milliseconds, not ${m.watermark}`);
  return { topic: m.topic, partition: m.partition, watermark: m.watermark, idle: m.idle };
}

/**
 * The watermark a keyed task forwards into the next repartition topic, or undefined while it holds. Without a
 * window, its table's: its records keep their event times. With one, the window's less its grace: a window
 * still open ends more than grace past the watermark, so every result still to come has an event time (its
 * end - 1) at or above it, and no window after the keyBy takes it for late. While a close is under way
 * (CLOSE_BATCH) results below that are still to come: the watermark stays where it was.
 */
export function forwardedWatermark(table: WatermarkTable, window?: { watermark: number; graceMs: number; closing: boolean }): number | undefined {
  if (window) {
    if (window.closing || !Number.isFinite(window.watermark)) return undefined;
    return window.watermark - window.graceMs;
  }
  const wm = table.current();
  return Number.isFinite(wm) ? wm : undefined;
}

/**
 * When a keyed task writes a marker of its partition into the next repartition topic: when its forwarded
 * watermark advanced or its idleness changed, and at least every MARKER_INTERVAL_MS, as a source partition's.
 */
export class MarkerSchedule {
  private lastSent?: { watermark: number; idle: boolean; at: number };
  /** what the last committed batch wrote: a discarded batch's markers were never written */
  private committed?: { watermark: number; idle: boolean; at: number };

  /** The markers of the batch just written are in the topic. */
  commit(): void {
    this.committed = this.lastSent;
  }

  /**
   * The batch was discarded, and its markers with it: the next one goes from what was written before, and from
   * the task's table as the rollback left it, not past the records the batch will read again.
   */
  rollback(): void {
    this.lastSent = this.committed;
  }

  /** The watermark to write now, if any; `watermark` undefined: the task holds, and writes nothing. */
  due(watermark: number | undefined, idle: boolean, now: number): { watermark: number; idle: boolean } | undefined {
    const last = this.lastSent;
    // never back: a task that holds (a close under way) repeats the last it wrote, so that the next stage keeps
    // hearing from it
    const wm = Math.max(watermark ?? Number.NEGATIVE_INFINITY, last?.watermark ?? Number.NEGATIVE_INFINITY);
    if (!Number.isFinite(wm)) return undefined;
    const changed = !last || last.idle !== idle || wm > last.watermark;
    if (!changed && now - last.at < MARKER_INTERVAL_MS) return undefined;
    this.lastSent = { watermark: wm, idle, at: now };
    return { watermark: wm, idle };
  }
}

/**
 * The watermark table of a keyed task that keeps no store (a sub-topology without a window, between two
 * keyBys): in memory, as the last commit left it after a discarded batch. A new owner starts empty and holds
 * until it has heard from every partition upstream again, which writes markers at least every
 * MARKER_INTERVAL_MS; the next sub-topology's tasks never take a watermark back.
 */
export class RelayTable {
  table: WatermarkTable;
  private readonly expected: string[];
  private readonly topics: string[];
  private committed = "{}";

  constructor(expected: string[], topics: string[]) {
    this.expected = expected;
    this.topics = topics;
    this.table = new WatermarkTable(expected, topics);
  }

  commit(): void {
    this.committed = JSON.stringify(this.table.toJSON());
  }

  rollback(): void {
    this.table = new WatermarkTable(this.expected, this.topics);
    this.table.restore(JSON.parse(this.committed) as Parameters<WatermarkTable["restore"]>[0]);
  }
}

/**
 * A task's watermark table as its store and changelog keep it (a window task's or a join task's): taken into a
 * batch's changelog when it changed, committed with the batch, and back to the last commit on a rollback.
 */
export class LoggedTable {
  table: WatermarkTable;
  private readonly expected: string[];
  private readonly topics: string[];
  /** the encoding as last taken for the changelog, and as last committed */
  private taken = "";
  private committed = "";

  constructor(expected: string[], topics: string[]) {
    this.expected = expected;
    this.topics = topics;
    this.table = new WatermarkTable(expected, topics);
  }

  /** The table as the store held it on open. */
  load(saved: Buffer): void {
    this.table.restore(decodeInternal(saved) as Parameters<WatermarkTable["restore"]>[0]);
    this.committed = this.taken = saved.toString("utf8");
  }

  /** The table's encoding when it changed since the last take (for the changelog and the store), and its commit. */
  take(): { value?: Buffer; commit: () => void } {
    const value = encodeInternal(this.table.toJSON());
    const text = value.toString("utf8");
    const changed = text !== this.taken;
    this.taken = text;
    return { ...(changed ? { value } : {}), commit: () => (this.committed = text) };
  }

  rollback(): void {
    this.table = new WatermarkTable(this.expected, this.topics);
    if (this.committed) this.table.restore(decodeInternal(Buffer.from(this.committed, "utf8")) as Parameters<WatermarkTable["restore"]>[0]);
    this.taken = this.committed;
  }
}
