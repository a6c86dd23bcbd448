// The sub-topologies of the graph (graph.ts), record by record. The source stage decodes a source record and
// reads its event time; a keyed stage (one per sub-topology after a keyBy) reads a repartition record back, its
// event time from the header the stage before it wrote. Each then runs its sub-topology's processors in order
// (processors.ts): steps, a keyBy that writes the next repartition topic, a window whose results go on through
// the processors after it, and the sink.

import { SPEC_DEFAULTS } from "../src/api-types.gen.ts";
import { type CompiledInputSettings, type CompiledTopology, sourceInputs } from "../src/topology/compile.ts";
import { parseDuration } from "../src/topology/duration.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, decodeInternal, decodeKey, decodeValue, encodeInternal, encodeKey, RecordError } from "./codec.ts";
import type { GlobalLookup } from "./global-table.ts";
import { type JoinStep, type KeyedSubTopology, sourceSubTopology, type TopologyGraph } from "./graph.ts";
import { externalHeaders } from "./headers.ts";
import { type HeldRecord, headerMap, headerPairs, JoinOperator, type JoinOutput } from "./join.ts";
import type { AnyJoinOperator } from "./join-task.ts";
import { Chain, type DeadResult, EVENT_TIME_HEADER, JOIN_TABLE_HEADER, type OutRecord, type RecordContext } from "./processors.ts";
import { evalError, type Failure, oversized, type SinkEncoder, type SinkRecord, type SourceRecord, scopeOf } from "./stateless.ts";
import type { WindowOperator, WindowResult } from "./window.ts";
import { WindowJoinOperator } from "./window-join.ts";

type Program = (ctx: Record<string, unknown>) => unknown;

export { type DeadResult, EVENT_TIME_HEADER, LATE_HEADERS, type OutRecord } from "./processors.ts";

export type SourceOutcome = Failure | { ok: true; eventTime?: number; filtered: number; sink: SinkRecord[]; repartition: OutRecord[] };

/** A repartition record's event time: the header the source stage wrote (any from outside was dropped there). */
export function eventTimeOf(r: SourceRecord): number {
  for (const [k, v] of r.headers ?? []) if (k.toString() === EVENT_TIME_HEADER) return Number(v.toString());
  return Number(r.timestamp);
}

/**
 * Why an event time must not reach a watermark, or undefined when it may: outside what the window arithmetic
 * holds (before the epoch, past 2^53 ms), or further ahead of the worker's clock than maxFutureSkew.
 */
export function eventTimeProblem(ms: number, now: number, maxFutureSkewMs: number): string | undefined {
  if (!Number.isSafeInteger(ms) || ms < 0) return `event time ${ms} ms is outside what windows hold (0 to 2^53 ms since the epoch)`;
  if (ms > now + maxFutureSkewMs) {
    return `event time ${new Date(ms).toISOString()} is more than maxFutureSkew (${maxFutureSkewMs} ms) ahead of the worker's clock (${new Date(now).toISOString()})`;
  }
  return undefined;
}

function toMillis(v: unknown): number | undefined {
  if (v instanceof Date) return v.getTime();
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number" && Number.isFinite(v)) return Math.floor(v);
  return undefined;
}

/** How the source stage reads the records of one input's topics (compile.ts, sourceInputs). */
interface InputReader {
  format: CompiledInputSettings["format"];
  eventTime?: Program;
  maxFutureSkewMs: number;
  /** the join whose table the input is: its records go, keyed by `key`, to the join's repartition topic */
  table?: { step: JoinStep; key: Program };
}

export class SourceStage {
  private readonly chain: Chain;
  /** per topic, its input's reader: the source's, or a named input's */
  private readonly readers = new Map<string, InputReader>();
  private readonly needsEventTime: boolean;
  private readonly names: ReadonlySet<string>;
  private readonly now: () => number;

  constructor(t: CompiledTopology, graph: TopologyGraph, sink: SinkEncoder, now: () => number = Date.now, globals?: GlobalLookup) {
    this.now = now;
    for (const input of sourceInputs(t)) {
      const reader: InputReader = {
        format: input.format,
        // a topology from before the setting: its default
        maxFutureSkewMs: input.watermark.maxFutureSkewMs ?? (parseDuration(SPEC_DEFAULTS["source.watermark.maxFutureSkew"]) as number),
        ...(input.eventTime !== undefined ? { eventTime: runtimeProgram("record", input.eventTime) } : {}),
      };
      const join = graph.joins.find((j) => j.input === input.name);
      if (join) reader.table = { step: join, key: runtimeProgram("record", join.key) };
      for (const topic of input.topics) this.readers.set(topic, reader);
    }
    this.chain = new Chain(sourceSubTopology(graph).processors, sink, graph.sinks, globals);
    this.needsEventTime = graph.eventTime;
    this.names = graph.scopeNames;
  }

  process(record: SourceRecord): SourceOutcome {
    // conveyor.* headers from outside are dropped here, where a record enters: no expression sees them, and
    // nothing downstream can take them for the runtime's own (an event time, a watermark marker)
    const headers = externalHeaders(record.headers);
    // a copy only when something was dropped: most records bring no conveyor.* header, and a copy of each would
    // be garbage for every record of a backlog
    const r = headers === record.headers ? record : { ...record, headers };
    const reader = this.readers.get(r.topic);
    if (!reader) throw new Error(`a record of ${r.topic}, which no input of the pipeline reads`);
    let value: unknown;
    try {
      value = decodeValue(r.value, reader.format);
    } catch (err) {
      return { ok: false, step: "source", kind: "parse", error: err instanceof Error ? err.message : String(err) };
    }
    const scope = scopeOf(r, undefined, this.names);
    // a table's tombstone has no value to read an event time from: it deletes its key as of its Kafka timestamp
    const tombstone = reader.table !== undefined && (r.value === null || r.value === undefined || r.value.length === 0);
    let eventTime: number | undefined;
    if (this.needsEventTime) {
      if (reader.eventTime && !tombstone) {
        let v: unknown;
        try {
          v = reader.eventTime({ ...scope, value });
        } catch (err) {
          return { ok: false, step: "eventTime", kind: "eval", error: evalError(err) };
        }
        eventTime = toMillis(v);
        if (eventTime === undefined)
          return { ok: false, step: "eventTime", kind: "eval", error: `event time must be a timestamp or milliseconds, not ${celTypeOf(v)}` };
      } else eventTime = Number(r.timestamp);
      const problem = eventTimeProblem(eventTime, this.now(), reader.maxFutureSkewMs);
      if (problem) return { ok: false, step: "eventTime", kind: "eventTime", error: problem };
    }
    if (reader.table) return this.tableRecord(reader.table, r, tombstone ? undefined : value, scope, headers, eventTime as number);
    const ctx: RecordContext = { scope, key: r.key ?? undefined, headers, timestamp: r.timestamp };
    if (eventTime !== undefined) ctx.eventTime = eventTime;
    const out = this.chain.run(value, ctx);
    if (!out.ok) return out;
    return { ok: true, filtered: out.filtered, sink: out.sink, repartition: out.repartition, ...(eventTime !== undefined ? { eventTime } : {}) };
  }

  /**
   * A record of a join's table input: keyed by the join's key and written to its repartition topic, beside the
   * records it joins, marked as the table's (undefined value: a tombstone, which deletes its key from its time).
   */
  private tableRecord(
    table: NonNullable<InputReader["table"]>,
    r: SourceRecord,
    value: unknown,
    scope: Record<string, unknown>,
    headers: Map<Buffer, Buffer>,
    eventTime: number,
  ): SourceOutcome {
    const step = table.step;
    let key: Buffer | undefined;
    try {
      const k = table.key({ ...scope, value: value ?? null });
      if (k === null || k === undefined) return { ok: false, step: step.name, kind: "eval", error: "the join key is null: a table record needs a key" };
      key = encodeKey(k);
    } catch (err) {
      return { ok: false, step: step.name, kind: err instanceof RecordError ? err.kind : "eval", error: evalError(err) };
    }
    const internal = new Map(headers);
    internal.set(Buffer.from(EVENT_TIME_HEADER), Buffer.from(String(eventTime)));
    internal.set(Buffer.from(JOIN_TABLE_HEADER), Buffer.from(step.name));
    const encoded = value === undefined ? undefined : encodeInternal(value);
    const over = oversized(key, encoded, internal);
    if (over) return { ok: false, step: step.name, kind: "encode", error: over };
    const out: OutRecord = { topic: step.repartitionTopic, key, headers: internal, timestamp: r.timestamp, ...(encoded ? { value: encoded } : {}) };
    return { ok: true, filtered: 0, sink: [], repartition: [out], eventTime };
  }
}

/** True for a join's table record (the source stage marked it). */
export function isTableRecord(r: { headers?: Map<Buffer, Buffer> }): boolean {
  for (const k of r.headers?.keys() ?? []) if (k.toString() === JOIN_TABLE_HEADER) return true;
  return false;
}

export type KeyedOutcome =
  | Failure
  | {
      ok: true;
      filtered: number;
      aggregated: number;
      late: OutRecord[];
      lateDropped: number;
      sink: SinkRecord[];
      repartition: OutRecord[];
      dead: DeadResult[];
    };

export class KeyedStage {
  readonly sub: KeyedSubTopology;
  private readonly chain: Chain;
  private readonly names: ReadonlySet<string>;
  private readonly eventTime: boolean;

  constructor(graph: TopologyGraph, sub: KeyedSubTopology, sink: SinkEncoder, globals?: GlobalLookup) {
    this.sub = sub;
    this.names = graph.scopeNames;
    this.eventTime = graph.eventTime;
    this.chain = new Chain(sub.processors, sink, graph.sinks, globals);
  }

  /**
   * The processors after the window, for window results that a watermark closed. A result that fails is not the
   * input record's fault (the window already counted it): it goes to the DLQ itself.
   */
  emit(results: WindowResult[], scope: Record<string, unknown>, timestamp: bigint): { sink: SinkRecord[]; repartition: OutRecord[]; dead: DeadResult[] } {
    return this.chain.emitClosed(results, scope, timestamp);
  }

  /** Tombstones at the sink for a table's keys that the TTL expired (Chain.tombstones). */
  tombstones(expired: WindowResult[], scope: Record<string, unknown>, timestamp: bigint): { sink: SinkRecord[]; dead: DeadResult[] } {
    return this.chain.tombstones(expired, scope, timestamp);
  }

  /**
   * Records the task's join released, joined, through the processors after it: each in its own record's context,
   * as read from this sub-topology's partition (its key, headers, Kafka timestamp and event time).
   */
  emitJoined(released: JoinOutput[], partition: number): { sink: SinkRecord[]; repartition: OutRecord[]; dead: DeadResult[] } {
    const step = this.sub.join?.name ?? "join";
    return this.chain.emitJoined(released, step, (h: HeldRecord) => {
      const headers = headerMap(h.headers);
      const rec: SourceRecord = { topic: this.sub.input.topic, partition, offset: h.offset, timestamp: h.timestamp, key: h.keyBytes, headers };
      return { scope: scopeOf(rec, decodeKey(h.keyBytes), this.names), key: h.keyBytes, headers, timestamp: h.timestamp, eventTime: h.eventTime };
    });
  }

  process(r: SourceRecord, op: { window?: WindowOperator; join?: AnyJoinOperator } = {}): KeyedOutcome {
    if (isTableRecord(r)) return this.tableRecord(r, op.join);
    const window = op.window;
    let value: unknown;
    try {
      value = decodeInternal(r.value);
    } catch (err) {
      return { ok: false, step: "repartition", kind: "parse", error: err instanceof Error ? err.message : String(err) };
    }
    const key = decodeKey(r.key);
    // the runtime's own headers (the event time) stay behind: expressions, the sink and the late topic get the
    // source record's headers only
    const headers = externalHeaders(r.headers);
    const scope = scopeOf(headers === r.headers || !this.names.has("headers") ? r : { ...r, headers }, key, this.names);
    const ctx: RecordContext = { scope, key: r.key ?? undefined, headers, timestamp: r.timestamp };
    // the event time goes on with the record: to this sub-topology's window, or through its keyBy to the next
    if (this.eventTime) ctx.eventTime = eventTimeOf(r);
    if (window) ctx.window = { operator: window, key, eventTime: ctx.eventTime ?? eventTimeOf(r) };
    if (op.join) ctx.join = { operator: op.join, offset: r.offset };
    const out = this.chain.run(value, ctx);
    if (!out.ok) return out;
    return {
      ok: true,
      filtered: out.filtered,
      aggregated: out.aggregated,
      late: out.late,
      lateDropped: out.lateDropped,
      sink: out.sink,
      repartition: out.repartition,
      dead: out.dead,
    };
  }

  /**
   * A record of the join's input: for a stream-table join, a new version of its key, from its event time, in the
   * task's join; for a windowed join, a record held beside the stream's (late as they are). No output now.
   */
  private tableRecord(r: SourceRecord, join: AnyJoinOperator | undefined): KeyedOutcome {
    if (!join) return { ok: false, step: "repartition", kind: "parse", error: "a join's table record in a sub-topology without that join" };
    let value: unknown;
    try {
      value = r.value && r.value.length > 0 ? decodeInternal(r.value) : undefined;
    } catch (err) {
      return { ok: false, step: "repartition", kind: "parse", error: err instanceof Error ? err.message : String(err) };
    }
    const none = { ok: true as const, filtered: 0, aggregated: 0, late: [], lateDropped: 0, sink: [], repartition: [], dead: [] };
    if (join instanceof JoinOperator) {
      join.table(r.key ?? Buffer.alloc(0), eventTimeOf(r), value);
      return none;
    }
    const step = this.sub.join as JoinStep;
    if (value === undefined && join instanceof WindowJoinOperator)
      return {
        ok: false,
        step: step.name,
        kind: "eval",
        error: "a record of a windowed join's input has no value: a tombstone deletes a table's key, and a stream has none",
      };
    const headers = externalHeaders(r.headers);
    const keyBytes = r.key ?? Buffer.alloc(0);
    const eventTime = eventTimeOf(r);
    const held: HeldRecord = { keyBytes, eventTime, offset: r.offset, index: 0, value, headers: headerPairs(headers), timestamp: r.timestamp };
    const scope = scopeOf(headers === r.headers || !this.names.has("headers") ? r : { ...r, headers }, decodeKey(r.key), this.names);
    const out = this.chain.joinInput(step, join, held, { scope, key: keyBytes, headers, timestamp: r.timestamp, eventTime });
    if (!out.ok) return out;
    return { ...none, late: out.late, lateDropped: out.lateDropped };
  }
}
