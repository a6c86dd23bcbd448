// The stateless part of a topology: filter, map and flatMap in CEL, then the sink's key and format. Each
// expression is parsed once, with the compiler's environment and limits; a record that fails any of them comes
// back as a failure that names the step, for the dead-letter topic.

import { aggregationExprs, type CompiledTopology, sourceInputs } from "../src/topology/compile.ts";
import { namesIn, runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, decodeKey, encodeKey, encodeValue, RecordError } from "./codec.ts";
import type { GlobalLookup } from "./global-table.ts";

/** A record as it arrives from Kafka. */
export interface SourceRecord {
  topic: string;
  partition: number;
  offset: bigint;
  timestamp: bigint;
  key?: Buffer | null;
  value?: Buffer | null;
  headers?: Map<Buffer, Buffer>;
}

/** What a record becomes: the sink records it produces (none when filtered out), or a failure. */
export type Outcome =
  /** `topic`: a named sink's, for a record a route sent there; none for the sink's */
  | { ok: true; out: { topic?: string; key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint }[]; filtered: number }
  | { ok: false; step: string; kind: RecordError["kind"]; error: string };

type Program = (ctx: Record<string, unknown>) => unknown;

export interface Step {
  name: string;
  /** lookup: a join with a global input, whose run gives the joined value, or undefined to drop it (inner) */
  kind: "filter" | "map" | "flatMap" | "lookup";
  run: Program;
}

export type Failure = Extract<Outcome, { ok: false }>;
export type SinkRecord = Extract<Outcome, { ok: true }>["out"][number];

/** A filter, map or flatMap step as the compiler gives it, or a join with a global input. */
export type StatelessStepSpec =
  | { name: string; kind: "filter" | "map" | "flatMap"; expr: string }
  | Extract<CompiledTopology["steps"][number], { kind: "lookup" }>;

/** `globals`: the global inputs' tables, which lookup steps read (global-table.ts). */
export function compileSteps(specs: StatelessStepSpec[], globals?: GlobalLookup): Step[] {
  return specs.map((s) => {
    if (s.kind !== "lookup") return { name: s.name, kind: s.kind, run: runtimeProgram("record", s.expr) };
    if (!globals) throw new Error(`step "${s.name}" joins the global input "${s.input}", but the worker holds no global tables`);
    const lookup = runtimeProgram("record", s.lookup);
    return {
      name: s.name,
      kind: "lookup",
      run: (ctx) => {
        const k = encodeKey(lookup(ctx));
        if (k === undefined) throw new Error("the lookup key is null");
        const found = globals.get(s.input, k);
        if (found === undefined && s.type === "inner") return undefined;
        const v = ctx.value;
        if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array || v instanceof Date)
          throw new Error(`join "${s.name}" adds the input's value to the record's as ${s.as}, so it must be a map, not ${celTypeOf(v)}`);
        return { ...(v as Record<string, unknown>), [s.as]: found ?? null };
      },
    };
  });
}

export function headersObject(h: Map<Buffer, Buffer> | undefined): Record<string, string> {
  const o: Record<string, string> = {};
  if (h) for (const [k, v] of h) o[k.toString("utf8")] = v.toString("utf8");
  return o;
}

export function evalError(err: unknown): string {
  // cel-js appends a source excerpt with a caret after the first line: the first line is the message.
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0]?.trim() ?? message;
}

/** What every expression sees besides `value`. */
export type Scope = Record<string, unknown>;

/** The fields of a record's scope besides `value`. */
const RECORD_FIELDS = ["key", "headers", "topic", "partition", "offset", "timestamp"] as const;

/**
 * The fields of a record's scope that some expression of the topology reads: a record is given only those (a
 * headers map, a BigInt and a Date per record are garbage when nothing reads them).
 */
export function scopeNames(t: CompiledTopology): ReadonlySet<string> {
  const exprs: string[] = [];
  for (const input of sourceInputs(t)) if (input.eventTime !== undefined) exprs.push(input.eventTime);
  for (const sink of [t.sink, ...Object.values(t.sinks ?? {})]) if (sink.key !== undefined) exprs.push(sink.key);
  for (const s of t.steps) {
    if (s.kind === "window") {
      for (const a of Object.values(s.aggregate)) exprs.push(...aggregationExprs(a));
    } else if (s.kind === "route") exprs.push(...s.routes.map((r) => r.when));
    else if (s.kind === "join") exprs.push(s.key);
    // a lookup's key runs over the global input's records, which the table reads with every field
    else if (s.kind === "lookup") exprs.push(s.lookup);
    else exprs.push(s.expr);
  }
  const read = new Set<string>();
  for (const e of exprs) for (const n of namesIn("record", e)) read.add(n);
  return new Set(RECORD_FIELDS.filter((f) => read.has(f)));
}

/** What every expression sees besides `value`: all of it, or the fields `names` lists. */
export function scopeOf(r: SourceRecord, key?: string | null, names?: ReadonlySet<string>): Scope {
  if (!names) {
    return {
      key: key === undefined ? decodeKey(r.key) : key,
      headers: headersObject(r.headers),
      topic: r.topic,
      partition: BigInt(r.partition),
      offset: r.offset,
      timestamp: new Date(Number(r.timestamp)),
    };
  }
  const scope: Scope = {};
  if (names.has("key")) scope.key = key === undefined ? decodeKey(r.key) : key;
  if (names.has("headers")) scope.headers = headersObject(r.headers);
  if (names.has("topic")) scope.topic = r.topic;
  if (names.has("partition")) scope.partition = BigInt(r.partition);
  if (names.has("offset")) scope.offset = r.offset;
  if (names.has("timestamp")) scope.timestamp = new Date(Number(r.timestamp));
  return scope;
}

/** Runs stateless steps over one value; flatMap may turn it into many, a filter into none. */
export function runSteps(steps: Step[], value: unknown, scope: Scope): { ok: true; values: unknown[]; filtered: number } | Failure {
  let values: unknown[] = [value];
  let filtered = 0;
  // one context for every step and value of the record: an expression reads it while it runs and keeps nothing
  const ctx: Scope = { ...scope, value };
  for (const step of steps) {
    const next: unknown[] = [];
    for (const v of values) {
      let result: unknown;
      ctx.value = v;
      try {
        result = step.run(ctx);
      } catch (err) {
        return { ok: false, step: step.name, kind: "eval", error: evalError(err) };
      }
      switch (step.kind) {
        case "filter":
          if (typeof result !== "boolean") return { ok: false, step: step.name, kind: "eval", error: `a filter must give a bool, not ${celTypeOf(result)}` };
          if (result) next.push(v);
          else filtered++;
          break;
        case "map":
          next.push(result);
          break;
        case "flatMap":
          if (!Array.isArray(result)) return { ok: false, step: step.name, kind: "eval", error: `flatMap must give a list, not ${celTypeOf(result)}` };
          next.push(...result);
          break;
        case "lookup":
          if (result === undefined) filtered++;
          else next.push(result);
          break;
      }
    }
    values = next;
  }
  return { ok: true, values, filtered };
}

/** The sink: its key expression (or the record's key) and its format. */
export class SinkEncoder {
  private readonly key?: Program;
  private readonly format: CompiledTopology["sink"]["format"];

  constructor(sink: CompiledTopology["sink"]) {
    this.format = sink.format;
    if (sink.key !== undefined) this.key = runtimeProgram("record", sink.key);
  }

  encode(values: unknown[], scope: Scope, key: Buffer | undefined, headers: Map<Buffer, Buffer>, timestamp: bigint): SinkRecord[] | Failure {
    const out: SinkRecord[] = [];
    for (const v of values) {
      try {
        const k = this.key ? encodeKey(this.key({ ...scope, value: v })) : key;
        const value = encodeValue(v, this.format);
        const over = oversized(k, value, headers);
        if (over) return { ok: false, step: "sink", kind: "encode", error: over };
        out.push({ key: k, value, headers, timestamp });
      } catch (err) {
        if (err instanceof RecordError) return { ok: false, step: "sink", kind: err.kind, error: err.message };
        return { ok: false, step: "sink", kind: "eval", error: evalError(err) };
      }
    }
    return out;
  }

  /** A tombstone: the key the sink would give `last` (a table's last value of the key), and no value. */
  tombstone(last: unknown, scope: Scope, key: Buffer | undefined, timestamp: bigint): SinkRecord | Failure {
    try {
      const k = this.key ? encodeKey(this.key({ ...scope, value: last })) : key;
      return { key: k, headers: new Map(), timestamp };
    } catch (err) {
      if (err instanceof RecordError) return { ok: false, step: "sink", kind: err.kind, error: err.message };
      return { ok: false, step: "sink", kind: "eval", error: evalError(err) };
    }
  }
}

/**
 * The largest record the runtime writes, key and value together. A broker refuses a batch over its
 * message.max.bytes (1 MiB by default) and the whole batch would fail with it: one record too large goes to
 * the dead-letter topic instead.
 */
export const MAX_RECORD_BYTES = 1_000_000;

/** A record's bytes as the limit counts them: key, value, and every header's name and value. */
export function recordBytes(key: Buffer | undefined, value: Buffer | undefined, headers?: Map<Buffer, Buffer>): number {
  let size = (key?.length ?? 0) + (value?.length ?? 0);
  for (const [k, v] of headers ?? []) size += k.length + v.length;
  return size;
}

/** Why a record is too large to write, or undefined when it fits. */
export function oversized(key: Buffer | undefined, value: Buffer | undefined, headers?: Map<Buffer, Buffer>): string | undefined {
  const size = recordBytes(key, value, headers);
  return size > MAX_RECORD_BYTES ? `the record would be ${size} bytes, over the ${MAX_RECORD_BYTES}-byte limit for one record` : undefined;
}
