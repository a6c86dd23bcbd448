// A sub-topology's processors (graph.ts), compiled once and run on one record's value. A failure before the
// window is the record's: nothing of it goes on, and the record goes to the DLQ. A failure after the window is a
// result's: the window already counted the record, so the result goes to the DLQ alone (a DeadResult).

import type { CompiledTopology } from "../src/topology/compile.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, encodeInternal, encodeKey, encodeValue, RecordError } from "./codec.ts";
import type { GlobalLookup } from "./global-table.ts";
import type { JoinStep, KeyByStep, Processor, RouteStep } from "./graph.ts";
import { type HeldRecord, headerPairs, type JoinOutput } from "./join.ts";
import type { AnyJoinOperator } from "./join-task.ts";
import { compileSteps, evalError, type Failure, oversized, runSteps, SinkEncoder, type SinkRecord, type Step } from "./stateless.ts";
import type { TableJoinOperator } from "./table-join.ts";
import type { WindowOperator, WindowResult, WindowStep } from "./window.ts";
import type { WindowJoinOperator } from "./window-join.ts";

type Program = (ctx: Record<string, unknown>) => unknown;

export type OutRecord = { topic: string; partition?: number; key?: Buffer; value?: Buffer; headers?: Map<Buffer, Buffer>; timestamp?: bigint };

export const LATE_HEADERS = { watermark: "conveyor.late.watermark", step: "conveyor.late.step" } as const;
/**
 * A repartition record's event time travels in a header, not as its Kafka timestamp: a broker refuses
 * timestamps more than message.timestamp.after.max.ms (an hour by default) ahead, and event times may be.
 */
export const EVENT_TIME_HEADER = "conveyor.event-time";
/** Marks a repartition record as a join's table record (its input's), naming the join step; no value: a deletion. */
export const JOIN_TABLE_HEADER = "conveyor.join.table";

/** A window result that a step after the window, or the sink, could not handle: it goes to the DLQ as JSON. */
export interface DeadResult {
  failure: Failure;
  keyBytes: Buffer;
  value?: Buffer;
  end: number;
}

/** The record a value came from, as the processors see it. */
export interface RecordContext {
  /** what expressions see besides `value` */
  scope: Record<string, unknown>;
  /** the record's key: the sink's key unless sink.key says otherwise */
  key: Buffer | undefined;
  /** the producer's headers, without any conveyor.* header */
  headers: Map<Buffer, Buffer>;
  timestamp: bigint;
  /** read at the source when the graph has a window: it travels with the record through the repartition topic */
  eventTime?: number;
  /** the task's window operator, for a sub-topology with a window */
  window?: { operator: WindowOperator; key: string | null; eventTime: number };
  /** the task's join operator, for a sub-topology with a join, and the offset of the record in its partition */
  join?: { operator: AnyJoinOperator; offset: bigint };
}

/** What one record's value became. */
export interface ChainOut {
  ok: true;
  filtered: number;
  sink: SinkRecord[];
  repartition: OutRecord[];
  aggregated: number;
  late: OutRecord[];
  lateDropped: number;
  dead: DeadResult[];
}

function emptyOut(): ChainOut {
  return { ok: true, filtered: 0, sink: [], repartition: [], aggregated: 0, late: [], lateDropped: 0, dead: [] };
}

type Compiled =
  | { kind: "steps"; steps: Step[] }
  | { kind: "route"; step: RouteStep; routes: { when: Program; to: string; topic: string; sink: SinkEncoder }[] }
  | { kind: "keyBy"; step: KeyByStep; key: Program }
  | { kind: "window"; step: WindowStep }
  | { kind: "join"; step: JoinStep }
  | { kind: "sink" };

export class Chain {
  private readonly processors: Compiled[];
  private readonly sink: SinkEncoder;
  /** where the processors after the window (or join) start: window results and joined records run from here */
  private readonly afterWindow: number;

  constructor(processors: Processor[], sink: SinkEncoder, namedSinks: NonNullable<CompiledTopology["sinks"]> = {}, globals?: GlobalLookup) {
    this.sink = sink;
    const encoders = new Map<string, SinkEncoder>();
    const encoderOf = (name: string): { topic: string; sink: SinkEncoder } => {
      const spec = namedSinks[name];
      if (!spec) throw new Error(`a route sends to the sink "${name}", which the topology does not have`);
      let e = encoders.get(name);
      if (!e) encoders.set(name, (e = new SinkEncoder(spec)));
      return { topic: spec.topic, sink: e };
    };
    this.processors = processors.map((p): Compiled => {
      switch (p.kind) {
        case "steps":
          return { kind: "steps", steps: compileSteps(p.steps, globals) };
        case "route":
          return { kind: "route", step: p.step, routes: p.step.routes.map((r) => ({ when: runtimeProgram("record", r.when), to: r.to, ...encoderOf(r.to) })) };
        case "keyBy":
          return { kind: "keyBy", step: p.step, key: runtimeProgram("record", p.step.expr) };
        case "window":
          return { kind: "window", step: p.step };
        case "join":
          return { kind: "join", step: p.step };
        case "sink":
          return { kind: "sink" };
      }
    });
    const w = this.processors.findIndex((p) => p.kind === "window" || p.kind === "join");
    this.afterWindow = w === -1 ? this.processors.length : w + 1;
  }

  /** Runs one record's value through every processor; a failure means nothing of the record goes on. */
  run(value: unknown, ctx: RecordContext): ChainOut | Failure {
    const out = emptyOut();
    const failure = this.runFrom(0, [value], ctx, out);
    return failure ?? out;
  }

  /**
   * Window results through the processors after the window, then the sink or the next repartition topic. Each
   * is stamped with the Kafka timestamp given (the triggering record's, which the broker accepted); the window is
   * in the value.
   */
  emitClosed(results: WindowResult[], scope: Record<string, unknown>, timestamp: bigint): { sink: SinkRecord[]; repartition: OutRecord[]; dead: DeadResult[] } {
    const out = emptyOut();
    this.emitResults(results, scope, timestamp, out);
    return { sink: out.sink, repartition: out.repartition, dead: out.dead };
  }

  private emitResults(results: WindowResult[], scope: Record<string, unknown>, timestamp: bigint, out: ChainOut): void {
    for (const r of results) {
      // A result's event time is its window's last millisecond, as Flink gives it: a window after a keyBy
      // counts it in the window that holds that end (watermarks.ts, forwardedWatermark). A table's is the
      // greatest its key has seen.
      const ctx: RecordContext = {
        scope: { ...scope, key: r.value.key, timestamp: new Date(r.eventTime ?? r.end) },
        key: r.keyBytes,
        headers: new Map(),
        timestamp,
        eventTime: r.eventTime ?? r.end - 1,
      };
      // a result's own outputs: kept only if it runs through to the end
      const mine = emptyOut();
      const failure = this.runFrom(this.afterWindow, [r.value], ctx, mine);
      if (failure) out.dead.push({ failure, keyBytes: r.keyBytes, value: encodeValue(r.value, "json"), end: r.end });
      else {
        out.sink.push(...mine.sink);
        out.repartition.push(...mine.repartition);
      }
    }
  }

  /**
   * Records the join released, joined, through the processors after it, each in the context `contextOf` gives it
   * back (its key, headers, Kafka timestamp and event time). One that cannot be joined (not a map) or fails after
   * the join goes to the DLQ alone: the join took it in an earlier batch.
   */
  emitJoined(
    released: JoinOutput[],
    step: string,
    contextOf: (r: HeldRecord) => RecordContext,
  ): { sink: SinkRecord[]; repartition: OutRecord[]; dead: DeadResult[] } {
    const out = emptyOut();
    for (const j of released) {
      const r = j.record;
      if (j.ok && "deleted" in j) {
        // a table-table join's result gone: a tombstone, keyed as the sink keyed the result it ends (the compiler
        // lets only such a join whose results go straight to the sink be one)
        if (this.processors[this.afterWindow]?.kind !== "sink")
          throw new Error(`join "${step}" ended a result, but its results do not go straight to the sink`);
        const ctx = contextOf(r);
        const t = this.sink.tombstone(j.last, ctx.scope, r.keyBytes, ctx.timestamp);
        if ("ok" in t) out.dead.push({ failure: t, keyBytes: r.keyBytes, value: encodeValue(j.last, "json"), end: r.eventTime });
        else out.sink.push(t);
        continue;
      }
      // a record's own outputs: kept only if it runs through to the end
      const mine = emptyOut();
      const failure: Failure | undefined = j.ok
        ? this.runFrom(this.afterWindow, [j.value], contextOf(r), mine)
        : { ok: false, step, kind: "eval", error: j.error };
      if (failure) {
        let value: Buffer | undefined;
        try {
          value = encodeValue(j.ok ? j.value : r.value, "json");
        } catch {
          value = undefined; // a value JSON cannot hold: the dead letter goes without it, its error says why
        }
        out.dead.push({ failure, keyBytes: r.keyBytes, ...(value ? { value } : {}), end: r.eventTime });
      } else {
        out.sink.push(...mine.sink);
        out.repartition.push(...mine.repartition);
      }
    }
    return { sink: out.sink, repartition: out.repartition, dead: out.dead };
  }

  /**
   * Tombstones for a table's keys that the TTL expired: each key as the sink would key the key's last result,
   * and no value. The compiler lets only a table whose results go straight to the sink ask for them.
   */
  tombstones(expired: WindowResult[], scope: Record<string, unknown>, timestamp: bigint): { sink: SinkRecord[]; dead: DeadResult[] } {
    const out: { sink: SinkRecord[]; dead: DeadResult[] } = { sink: [], dead: [] };
    if (this.processors[this.afterWindow]?.kind !== "sink") throw new Error("tombstones were asked of a table whose results do not go straight to the sink");
    for (const r of expired) {
      const t = this.sink.tombstone(r.value, { ...scope, key: r.value.key }, r.keyBytes, timestamp);
      if ("ok" in t) out.dead.push({ failure: t, keyBytes: r.keyBytes, value: encodeValue(r.value, "json"), end: r.end });
      else out.sink.push(t);
    }
    return out;
  }

  private runFrom(from: number, input: unknown[], ctx: RecordContext, out: ChainOut): Failure | undefined {
    let values = input;
    for (let i = from; i < this.processors.length; i++) {
      const p = this.processors[i] as Compiled;
      switch (p.kind) {
        case "steps": {
          // one value in (the usual case) takes the steps' own list of values out, with no copy
          let next: unknown[] | undefined;
          for (const v of values) {
            const ran = runSteps(p.steps, v, ctx.scope);
            if (!ran.ok) return ran;
            out.filtered += ran.filtered;
            if (values.length === 1) next = ran.values;
            else (next ??= []).push(...ran.values);
          }
          values = next ?? [];
          break;
        }
        case "route": {
          const rest = this.route(p, values, ctx, out);
          if (!Array.isArray(rest)) return rest;
          values = rest;
          break;
        }
        case "keyBy":
          return this.keyBy(p, values, ctx, out);
        case "window":
          return this.window(p.step, values, ctx, out);
        case "join":
          return this.join(p.step, values, ctx, out);
        case "sink": {
          const encoded = this.sink.encode(values, ctx.scope, ctx.key, ctx.headers, ctx.timestamp);
          if (!Array.isArray(encoded)) return encoded;
          out.sink.push(...encoded);
          return undefined;
        }
      }
    }
    return undefined;
  }

  /**
   * Each value to the named sink of the first route whose condition holds, encoded by that sink's key and format;
   * gives the values no route took, which go on.
   */
  private route(p: Extract<Compiled, { kind: "route" }>, values: unknown[], ctx: RecordContext, out: ChainOut): unknown[] | Failure {
    const rest: unknown[] = [];
    const scope: Record<string, unknown> = { ...ctx.scope };
    for (const v of values) {
      scope.value = v;
      let taken: (typeof p.routes)[number] | undefined;
      for (const r of p.routes) {
        let holds: unknown;
        try {
          holds = r.when(scope);
        } catch (err) {
          return { ok: false, step: p.step.name, kind: "eval", error: evalError(err) };
        }
        if (typeof holds !== "boolean")
          return { ok: false, step: p.step.name, kind: "eval", error: `a route's when must give a bool, not ${celTypeOf(holds)}` };
        if (holds) {
          taken = r;
          break;
        }
      }
      if (!taken) {
        rest.push(v);
        continue;
      }
      const encoded = taken.sink.encode([v], ctx.scope, ctx.key, ctx.headers, ctx.timestamp);
      if (!Array.isArray(encoded)) return { ...encoded, step: p.step.name, error: `sink "${taken.to}": ${encoded.error}` };
      for (const e of encoded) out.sink.push({ ...e, topic: taken.topic });
    }
    return rest;
  }

  /** Each value keyed and written to the repartition topic, its event time in a header. */
  private keyBy(p: Extract<Compiled, { kind: "keyBy" }>, values: unknown[], ctx: RecordContext, out: ChainOut): Failure | undefined {
    const step = p.step;
    for (const v of values) {
      let key: Buffer | undefined;
      try {
        const k = p.key({ ...ctx.scope, value: v });
        if (k === null || k === undefined) return { ok: false, step: step.name, kind: "eval", error: "the key is null: a keyed step needs a key" };
        key = encodeKey(k);
      } catch (err) {
        return { ok: false, step: step.name, kind: err instanceof RecordError ? err.kind : "eval", error: evalError(err) };
      }
      const internal = new Map(ctx.headers);
      if (ctx.eventTime !== undefined) internal.set(Buffer.from(EVENT_TIME_HEADER), Buffer.from(String(ctx.eventTime)));
      const value = encodeInternal(v);
      const over = oversized(key, value, internal);
      if (over) return { ok: false, step: step.name, kind: "encode", error: over };
      out.repartition.push({ topic: step.repartitionTopic, key, value, headers: internal, timestamp: ctx.timestamp });
    }
    return undefined;
  }

  /** Each value into the task's windows; late ones to the late topic or dropped; results on through the rest. */
  private window(step: WindowStep, values: unknown[], ctx: RecordContext, out: ChainOut): Failure | undefined {
    const w = ctx.window;
    if (!w) throw new Error(`step "${step.name}": a record reached the window, but no task's window operator came with it`);
    for (const v of values) {
      let res: ReturnType<WindowOperator["process"]>;
      try {
        res = w.operator.process({ key: w.key, keyBytes: ctx.key ?? Buffer.alloc(0), value: v, ctx: ctx.scope, ts: w.eventTime });
      } catch (err) {
        return { ok: false, step: step.name, kind: err instanceof RecordError ? err.kind : "eval", error: evalError(err) };
      }
      if (res.late) {
        const failure = this.late(step, v, ctx, w.operator.watermark, out);
        if (failure) return failure;
        continue;
      }
      out.aggregated++;
      this.emitResults(res.results, ctx.scope, ctx.timestamp, out);
    }
    return undefined;
  }

  /**
   * Each value held by the task's join until the watermark passes its event time (join.ts), numbered within the
   * record; one at or below the watermark already is late, as a window's late record.
   */
  private join(step: JoinStep, values: unknown[], ctx: RecordContext, out: ChainOut): Failure | undefined {
    const j = ctx.join;
    if (!j || ctx.eventTime === undefined)
      throw new Error(`step "${step.name}": a record reached the join, but no task's join operator or event time came with it`);
    for (const v of values) {
      const error = j.operator.refuses(v);
      if (error) return { ok: false, step: step.name, kind: "eval", error };
    }
    const headers = headerPairs(ctx.headers);
    for (const [index, v] of values.entries()) {
      const held = j.operator.stream({
        keyBytes: ctx.key ?? Buffer.alloc(0),
        eventTime: ctx.eventTime,
        offset: j.offset,
        index,
        value: v,
        headers,
        timestamp: ctx.timestamp,
      });
      if (held.late) {
        const failure = this.late(step, v, ctx, j.operator.watermark, out);
        if (failure) return failure;
      }
    }
    return undefined;
  }

  /**
   * A record of a windowed join's input (window-join.ts): held beside the stream's records, or late as they are.
   * Its context is its own, as read from the repartition topic: the join's key, its headers and time.
   */
  joinInput(step: JoinStep, operator: WindowJoinOperator | TableJoinOperator, r: HeldRecord, ctx: RecordContext): ChainOut | Failure {
    const out = emptyOut();
    if (!operator.other(r).late) return out;
    return this.late(step, r.value, ctx, operator.watermark, out) ?? out;
  }

  /** A late value to the step's late topic, with the watermark and the step in headers, or dropped and counted. */
  private late(step: WindowStep | JoinStep, v: unknown, ctx: RecordContext, watermark: number, out: ChainOut): Failure | undefined {
    if (!("topic" in step.late)) {
      out.lateDropped++;
      return undefined;
    }
    const lateHeaders = new Map(ctx.headers);
    lateHeaders.set(Buffer.from(LATE_HEADERS.watermark), Buffer.from(String(watermark)));
    lateHeaders.set(Buffer.from(LATE_HEADERS.step), Buffer.from(step.name));
    let encoded: Buffer | undefined;
    try {
      encoded = encodeValue(v, "json");
    } catch (err) {
      return { ok: false, step: step.name, kind: "encode", error: evalError(err) };
    }
    out.late.push({ topic: step.late.topic, key: ctx.key, value: encoded, headers: lateHeaders, timestamp: ctx.timestamp });
    return undefined;
  }
}
