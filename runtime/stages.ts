// The two stages of a plan, record by record. The source stage decodes a source record, reads its event time,
// runs the steps before the keyBy, and either writes the sink (no keyBy) or the repartition topic. The keyed
// stage reads a repartition record back, runs the steps after the keyBy, the window, and the steps after it.

import { SPEC_DEFAULTS } from "../src/api-types.gen.ts";
import type { CompiledTopology } from "../src/topology/compile.ts";
import { parseDuration } from "../src/topology/duration.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, decodeInternal, decodeKey, decodeValue, encodeInternal, encodeKey, encodeValue, RecordError } from "./codec.ts";
import { externalHeaders } from "./headers.ts";
import type { Plan } from "./plan.ts";
import {
  compileSteps,
  evalError,
  type Failure,
  oversized,
  runSteps,
  type SinkEncoder,
  type SinkRecord,
  type SourceRecord,
  type Step,
  scopeOf,
} from "./stateless.ts";
import type { WindowOperator, WindowResult } from "./window.ts";

type Program = (ctx: Record<string, unknown>) => unknown;
export type OutRecord = { topic: string; partition?: number; key?: Buffer; value?: Buffer; headers?: Map<Buffer, Buffer>; timestamp?: bigint };

export type SourceOutcome = Failure | { ok: true; eventTime?: number; filtered: number; sink: SinkRecord[]; repartition: OutRecord[] };

export const LATE_HEADERS = { watermark: "conveyor.late.watermark", step: "conveyor.late.step" } as const;
/**
 * A repartition record's event time travels in a header, not as its Kafka timestamp: a broker refuses
 * timestamps more than message.timestamp.after.max.ms (an hour by default) ahead, and event times may be.
 */
export const EVENT_TIME_HEADER = "conveyor.event-time";

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

export class SourceStage {
  private readonly t: CompiledTopology;
  private readonly plan: Plan;
  private readonly pre: Step[];
  private readonly eventTime?: Program;
  private readonly keyBy?: Program;
  private readonly sink: SinkEncoder;
  private readonly now: () => number;
  private readonly maxFutureSkewMs: number;

  constructor(t: CompiledTopology, plan: Plan, sink: SinkEncoder, now: () => number = Date.now) {
    this.t = t;
    this.plan = plan;
    this.sink = sink;
    this.now = now;
    // a topology from before the setting: its default
    this.maxFutureSkewMs = t.source.watermark.maxFutureSkewMs ?? (parseDuration(SPEC_DEFAULTS["source.watermark.maxFutureSkew"]) as number);
    this.pre = compileSteps(plan.pre);
    if (t.source.eventTime !== undefined) this.eventTime = runtimeProgram("record", t.source.eventTime);
    if (plan.keyBy) this.keyBy = runtimeProgram("record", plan.keyBy.expr);
  }

  process(record: SourceRecord): SourceOutcome {
    // conveyor.* headers from outside are dropped here, where a record enters: no expression sees them, and
    // nothing downstream can take them for the runtime's own (an event time, a watermark marker)
    const headers = externalHeaders(record.headers);
    // a copy only when something was dropped: most records bring no conveyor.* header, and a copy of each would
    // be garbage for every record of a backlog
    const r = headers === record.headers ? record : { ...record, headers };
    let value: unknown;
    try {
      value = decodeValue(r.value, this.t.source.format);
    } catch (err) {
      return { ok: false, step: "source", kind: "parse", error: err instanceof Error ? err.message : String(err) };
    }
    const scope = scopeOf(r);
    let eventTime: number | undefined;
    if (this.plan.window) {
      if (this.eventTime) {
        let v: unknown;
        try {
          v = this.eventTime({ ...scope, value });
        } catch (err) {
          return { ok: false, step: "eventTime", kind: "eval", error: evalError(err) };
        }
        eventTime = toMillis(v);
        if (eventTime === undefined)
          return { ok: false, step: "eventTime", kind: "eval", error: `event time must be a timestamp or milliseconds, not ${celTypeOf(v)}` };
      } else eventTime = Number(r.timestamp);
      const problem = eventTimeProblem(eventTime, this.now(), this.maxFutureSkewMs);
      if (problem) return { ok: false, step: "eventTime", kind: "eventTime", error: problem };
    }
    const ran = runSteps(this.pre, value, scope);
    if (!ran.ok) return ran;
    if (!this.keyBy || !this.plan.keyBy) {
      const out = this.sink.encode(ran.values, scope, r.key ?? undefined, headers, r.timestamp);
      if (!Array.isArray(out)) return out;
      return { ok: true, filtered: ran.filtered, sink: out, repartition: [] };
    }
    const repartition: OutRecord[] = [];
    const step = this.plan.keyBy;
    for (const v of ran.values) {
      let key: Buffer | undefined;
      try {
        const k = this.keyBy({ ...scope, value: v });
        if (k === null || k === undefined) return { ok: false, step: step.name, kind: "eval", error: "the key is null: a keyed step needs a key" };
        key = encodeKey(k);
      } catch (err) {
        return { ok: false, step: step.name, kind: err instanceof RecordError ? err.kind : "eval", error: evalError(err) };
      }
      const internal = new Map(headers);
      if (eventTime !== undefined) internal.set(Buffer.from(EVENT_TIME_HEADER), Buffer.from(String(eventTime)));
      const value = encodeInternal(v);
      const over = oversized(key, value, internal);
      if (over) return { ok: false, step: step.name, kind: "encode", error: over };
      repartition.push({ topic: step.repartitionTopic, key, value, headers: internal, timestamp: r.timestamp });
    }
    return { ok: true, filtered: ran.filtered, sink: [], repartition, ...(eventTime !== undefined ? { eventTime } : {}) };
  }
}

/** A window result that a step after the window, or the sink, could not handle: it goes to the DLQ as JSON. */
export interface DeadResult {
  failure: Failure;
  keyBytes: Buffer;
  value?: Buffer;
  end: number;
}

export type KeyedOutcome =
  | Failure
  | { ok: true; filtered: number; aggregated: number; late: OutRecord[]; lateDropped: number; sink: SinkRecord[]; dead: DeadResult[] };

export class KeyedStage {
  private readonly plan: Plan;
  private readonly mid: Step[];
  private readonly post: Step[];
  private readonly sink: SinkEncoder;

  constructor(plan: Plan, sink: SinkEncoder) {
    this.plan = plan;
    this.sink = sink;
    this.mid = compileSteps(plan.mid);
    this.post = compileSteps(plan.post);
  }

  /**
   * The steps after the window, then the sink, for window results. A result that fails is not the input
   * record's fault (the window already counted it): it goes to the DLQ itself.
   */
  emit(results: WindowResult[], scope: Record<string, unknown>, timestamp: bigint): { sink: SinkRecord[]; dead: DeadResult[] } {
    const sink: SinkRecord[] = [];
    const dead: DeadResult[] = [];
    for (const r of results) {
      const s = { ...scope, key: r.value.key, timestamp: new Date(r.end) };
      const ran = runSteps(this.post, r.value, s);
      // The Kafka timestamp is the triggering record's, which the broker accepted; the window is in the value.
      const enc = ran.ok ? this.sink.encode(ran.values, s, r.keyBytes, new Map(), timestamp) : ran;
      if (Array.isArray(enc)) sink.push(...enc);
      else dead.push({ failure: enc, keyBytes: r.keyBytes, value: encodeValue(r.value, "json"), end: r.end });
    }
    return { sink, dead };
  }

  process(r: SourceRecord, window: WindowOperator | undefined): KeyedOutcome {
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
    const scope = scopeOf(headers === r.headers ? r : { ...r, headers }, key);
    const ran = runSteps(this.mid, value, scope);
    if (!ran.ok) return ran;
    if (!window || !this.plan.window) {
      const out = this.sink.encode(ran.values, scope, r.key ?? undefined, headers, r.timestamp);
      if (!Array.isArray(out)) return out;
      return { ok: true, filtered: ran.filtered, aggregated: 0, late: [], lateDropped: 0, sink: out, dead: [] };
    }
    const step = this.plan.window;
    const sink: SinkRecord[] = [];
    const dead: DeadResult[] = [];
    const late: OutRecord[] = [];
    let lateDropped = 0;
    let aggregated = 0;
    for (const v of ran.values) {
      let res: ReturnType<WindowOperator["process"]>;
      try {
        res = window.process({ key, keyBytes: r.key ?? Buffer.alloc(0), value: v, ctx: scope, ts: eventTimeOf(r) });
      } catch (err) {
        return { ok: false, step: step.name, kind: err instanceof RecordError ? err.kind : "eval", error: evalError(err) };
      }
      if (res.late) {
        if ("topic" in step.late) {
          const lateHeaders = new Map(headers);
          lateHeaders.set(Buffer.from(LATE_HEADERS.watermark), Buffer.from(String(window.watermark)));
          lateHeaders.set(Buffer.from(LATE_HEADERS.step), Buffer.from(step.name));
          let encoded: Buffer | undefined;
          try {
            encoded = encodeValue(v, "json");
          } catch (err) {
            return { ok: false, step: step.name, kind: "encode", error: evalError(err) };
          }
          late.push({ topic: step.late.topic, key: r.key ?? undefined, value: encoded, headers: lateHeaders, timestamp: r.timestamp });
        } else lateDropped++;
        continue;
      }
      aggregated++;
      const out = this.emit(res.results, scope, r.timestamp);
      sink.push(...out.sink);
      dead.push(...out.dead);
    }
    return { ok: true, filtered: ran.filtered, aggregated, late, lateDropped, sink, dead };
  }
}
