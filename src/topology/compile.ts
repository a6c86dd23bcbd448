// The topology compiler, shared by the operator (admission, status, the ConfigMap) and the runtime (what it
// executes). It checks every CEL expression and the step graph, and derives internal topic names and a
// state-schema hash per stateful step. Every error names the field, the step and, for CEL, line and column.
import { createHash } from "node:crypto";
import { SPEC_DEFAULTS, type StepSpec, type StreamPipelineSpec } from "../api-types.gen.ts";
import { checkExpression, type Scope } from "./cel.ts";
import { parseDuration } from "./duration.ts";
import { parseBytes } from "./quantity.ts";

export const TOPOLOGY_FORMAT_VERSION = 1;

export interface CompileError {
  /** the field path, as the apiserver writes it: spec.steps[1].filter */
  field: string;
  step?: string;
  message: string;
  line?: number;
  column?: number;
}

export function formatCompileError(e: CompileError): string {
  const where = e.line !== undefined ? ` at line ${e.line}, column ${e.column}` : "";
  const step = e.step ? ` (step "${e.step}")` : "";
  return `${e.field}${step}${where}: ${e.message}`;
}

/** The error without its field path, for where the field is shown beside it: `step "x", line 1, column 7: ...` */
export function describeCompileError(e: CompileError): string {
  const where = [e.step ? `step "${e.step}"` : "", e.line !== undefined ? `line ${e.line}, column ${e.column}` : ""].filter(Boolean).join(", ");
  return where ? `${where}: ${e.message}` : e.message;
}

/**
 * A window shape. `global` is an aggregate step without a window, a table: one window per key that never closes
 * (Flink's GlobalWindows), holding the key's running aggregates.
 */
export type WindowShape =
  | { type: "tumbling"; sizeMs: number }
  | { type: "hopping"; sizeMs: number; advanceMs: number }
  | { type: "session"; gapMs: number }
  | { type: "global" };

/**
 * An aggregation. latest keeps the value of the record with the greatest `by` (no `by`: the event time); topN
 * the `n` (its spec's `limit`) values with the greatest `by`. Equal `by` go to the greater value
 * (runtime/order.ts), so that neither depends on the order records are read in.
 */
export type CompiledAggregation =
  | { fn: "count" }
  | { fn: "sum" | "min" | "max" | "avg"; expr: string }
  | { fn: "reduce"; init: string; expr: string }
  | { fn: "latest"; value: string; by?: string }
  | { fn: "topN"; n: number; by: string; value?: string };

/** The CEL expressions over the record that an aggregation evaluates (a reduce's are over `acc` and `value`). */
export function aggregationExprs(a: CompiledAggregation): string[] {
  switch (a.fn) {
    case "count":
    case "reduce":
      return [];
    case "latest":
      return a.by === undefined ? [a.value] : [a.value, a.by];
    case "topN":
      return a.value === undefined ? [a.by] : [a.by, a.value];
    default:
      return [a.expr];
  }
}

export type CompiledStep =
  | { name: string; kind: "filter" | "map" | "flatMap"; expr: string }
  /** the first route whose `when` holds takes the record to its named sink; none: it goes on */
  | { name: string; kind: "route"; routes: { when: string; to: string }[] }
  | { name: string; kind: "keyBy"; expr: string; repartitionTopic: string }
  | {
      name: string;
      kind: "window";
      window: WindowShape;
      graceMs: number;
      aggregate: Record<string, CompiledAggregation>;
      /**
       * onChange, a table's only mode: each key changed by a batch once, with its value at the batch's end, in the
       * batch's transaction (Kafka Streams' KTable cache, flushed on commit)
       */
      emit: "onWindowClose" | "onUpdate" | "onChange";
      /** a table: a key that state.ttl expires gets a tombstone at the sink */
      emitTombstones?: boolean;
      late: { topic: string } | { drop: true };
      changelogTopic: string;
      stateSchemaHash: string;
    }
  /**
   * A stream-table join on event time (runtime/join.ts): each record with the named input's value for its key
   * as of the record's event time. The input's records, keyed by `key`, go to the repartition topic of the keyBy
   * before the join, beside the records they join, so both sides of a key are in one task.
   */
  | {
      name: string;
      kind: "join";
      input: string;
      key: string;
      as: string;
      type: "inner" | "left" | "outer";
      /**
       * A windowed stream-stream join (runtime/window-join.ts): the input is a stream, and records of the two
       * sides at most this far apart in event time join. Absent: a stream-table join.
       */
      withinMs?: number;
      /** with withinMs: how far behind the watermark a record may come and still join */
      graceMs?: number;
      /**
       * A table-table join (runtime/table-join.ts): the records reaching the step are a table too, and a result
       * comes out whenever either side of a key changes
       */
      table?: true;
      late: { topic: string } | { drop: true };
      repartitionTopic: string;
      changelogTopic: string;
      stateSchemaHash: string;
    }
  /**
   * A join with a global input (runtime/global-table.ts): each value looked up by `lookup` in the input's table,
   * which every worker holds whole, as it stands when the record is processed. No state of a task, no repartition.
   */
  | {
      name: string;
      kind: "lookup";
      input: string;
      /** CEL over the input's records: each one's key in the table */
      key: string;
      /** CEL over the record: the key to look up */
      lookup: string;
      as: string;
      type: "inner" | "left";
    };

export type CompiledWindowStep = Extract<CompiledStep, { kind: "window" }>;
export type CompiledJoinStep = Extract<CompiledStep, { kind: "join" }>;
/** The steps that keep state in tasks, each with its changelog and state-schema hash. */
export type CompiledStatefulStep = CompiledWindowStep | CompiledJoinStep;

/** The window, table and join steps, in order. */
export function statefulSteps(t: Pick<CompiledTopology, "steps">): CompiledStatefulStep[] {
  return t.steps.filter((s): s is CompiledStatefulStep => s.kind === "window" || s.kind === "join");
}

/**
 * How far past its start a window stays open in event time: its size (its gap for a session) plus grace; a
 * table's never closes.
 */
export function windowSpanMs(step: Pick<CompiledWindowStep, "window" | "graceMs">): number {
  const w = step.window;
  if (w.type === "global") return Number.POSITIVE_INFINITY;
  return (w.type === "session" ? w.gapMs : w.sizeMs) + step.graceMs;
}

/**
 * How long the broker keeps a window store's changelog records; its cleanup policy is compact,delete. A closed
 * window goes from the store with its time segment and gets no tombstone, so retention removes it from the
 * changelog, as in Kafka Streams (windowstore.changelog.additional.retention.ms): the span plus a day. A window
 * that sees no update for that long while it stays open (its watermark stalled for a day) is kept by the local
 * store alone, and is lost if its task is restored from the changelog. A table's changelog is compacted
 * alone and kept for ever (undefined): an expired key gets a tombstone.
 */
export function changelogRetentionMs(step: CompiledStatefulStep): number | undefined {
  // a join's versions are kept per key and its held records deleted once released: compacted, kept for ever
  if (step.kind === "join" || step.window.type === "global") return undefined;
  return windowSpanMs(step) + 86_400_000;
}

/** How the records of an input's topics are read: the source's, or a named input's. */
export interface CompiledInputSettings {
  topics: string[];
  format: "json" | "string" | "bytes";
  eventTime?: string;
  watermark: { maxOutOfOrdernessMs: number; idleTimeoutMs: number; maxFutureSkewMs?: number };
}

/**
 * A named input (spec.inputs); `join`: the join step whose other side it is, so not a part of the union; `global`:
 * a global table, read by every worker outside the group (globalInputs), not by the source stage.
 */
export type CompiledInput = CompiledInputSettings & { name: string; join?: string; global?: true };

/** The name the source goes by among the inputs: no named input may take it. */
export const SOURCE_INPUT = "source";

/**
 * Every input the pipeline's consumer group reads records from: the source, then the named inputs but the
 * global ones (their partitions count in no watermark, lag or partition growth).
 */
export function sourceInputs(t: Pick<CompiledTopology, "source" | "inputs">): CompiledInput[] {
  return [{ ...t.source, name: SOURCE_INPUT }, ...(t.inputs ?? []).filter((i) => !i.global)];
}

/** The global inputs: every worker reads all of their partitions, outside the group. */
export function globalInputs(t: Pick<CompiledTopology, "inputs">): CompiledInput[] {
  return (t.inputs ?? []).filter((i) => i.global);
}

/** Every topic the pipeline's consumer group reads records from: the source's, then the named inputs'. */
export function sourceTopicsOf(t: Pick<CompiledTopology, "source" | "inputs">): string[] {
  return sourceInputs(t).flatMap((i) => i.topics);
}

export interface CompiledTopology {
  formatVersion: number;
  /** the Kafka Streams application.id equivalent: the consumer group */
  applicationId: string;
  /** what starts the pipeline's internal topics, restore groups and transactional ids (see internalPrefix) */
  internalPrefix: string;
  source: CompiledInputSettings & { startFrom: "earliest" | "latest" };
  /** the named inputs besides the source, whose records enter at the first step too (absent before there were) */
  inputs?: CompiledInput[];
  steps: CompiledStep[];
  sink: CompiledSink;
  /** the named sinks that route steps send to, by name (absent in a topology compiled before they were) */
  sinks?: Record<string, CompiledSink>;
  deadLetter?: { topic: string };
  processing: { guarantee: "atLeastOnce" | "exactlyOnce"; commitIntervalMs: number; maxInFlight: number; maxRecordsPerSecond?: number };
  /**
   * blockCacheBytes: the RocksDB block cache of one worker, shared out among its window tasks; cacheBytes: the
   * worker's state cache (runtime/state/cache.ts), shared by its tasks
   */
  state: { ttlMs?: number; blockCacheBytes: number; cacheBytes: number };
  /** every internal topic the pipeline needs: repartition and changelog topics */
  internalTopics: string[];
}

export interface CompiledSink {
  topic: string;
  key?: string;
  format: "json" | "string" | "bytes";
}

/** Every topic a pipeline writes its results to: the sink's, then the named sinks'. */
export function sinkTopics(t: Pick<CompiledTopology, "sink" | "sinks">): string[] {
  return [...new Set([t.sink.topic, ...Object.values(t.sinks ?? {}).map((s) => s.topic)])];
}

export type CompileResult = { ok: true; topology: CompiledTopology } | { ok: false; errors: CompileError[] };

const BOOL_TYPES = new Set(["bool", "dyn"]);
const NUMERIC_TYPES = new Set(["int", "uint", "double", "dyn"]);
const TIME_TYPES = new Set(["google.protobuf.Timestamp", "int", "uint", "double", "dyn"]);

class Compiler {
  readonly errors: CompileError[] = [];

  error(field: string, message: string, step?: string): void {
    this.errors.push({ field, message, ...(step ? { step } : {}) });
  }

  /** Checks an expression; returns its type, or undefined after recording the problem. */
  expr(field: string, expr: string, scope: Scope, step?: string): string | undefined {
    const res = checkExpression(expr, scope);
    if (!res.ok) {
      this.errors.push({ field, message: res.problem.message, line: res.problem.line, column: res.problem.column, ...(step ? { step } : {}) });
      return undefined;
    }
    return res.type;
  }

  expectType(field: string, type: string | undefined, allowed: (t: string) => boolean, what: string, step?: string): void {
    if (type !== undefined && !allowed(type)) this.error(field, `${what}, but this expression gives ${type}`, step);
  }

  duration(field: string, text: string | undefined, fallback: string, step?: string): number {
    const value = text ?? fallback;
    const ms = parseDuration(value);
    if (ms === undefined) {
      this.error(field, `"${value}" is not a duration (like 100ms, 30s, 1m30s, 2h)`, step);
      return 0;
    }
    return ms;
  }
}

/** The most values a topN keeps: the list is the key's state, rewritten on every change. */
export const MAX_TOP_N = 100;

/** What a `by` may give: what runtime/order.ts compares. */
function isOrderType(t: string): boolean {
  return !t.startsWith("map") && t !== "null";
}

function isScalarKeyType(t: string): boolean {
  return !t.startsWith("list") && !t.startsWith("map") && t !== "null";
}

/** A stable hash of what a stateful step's stored state depends on: change it and old state no longer fits. */
export function stateSchemaHash(parts: { window: WindowShape; aggregate: Record<string, CompiledAggregation>; key: string; format: string }): string {
  const canonical = JSON.stringify({
    v: TOPOLOGY_FORMAT_VERSION,
    window: parts.window,
    aggregate: Object.keys(parts.aggregate)
      .sort()
      .map((k) => [k, parts.aggregate[k]]),
    key: parts.key,
    format: parts.format,
  });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}

function compileAggregation(c: Compiler, field: string, step: string, a: NonNullable<StepSpec["aggregate"]>[string]): CompiledAggregation | undefined {
  const numeric = (fn: "sum" | "min" | "max" | "avg", expr: string): CompiledAggregation => {
    const t = c.expr(`${field}.${fn}`, expr, "record", step);
    c.expectType(`${field}.${fn}`, t, (x) => NUMERIC_TYPES.has(x), `${fn} needs a number`, step);
    return { fn, expr };
  };
  const kinds = [a.count, a.sum, a.min, a.max, a.avg, a.reduce, a.latest, a.topN].map((x) => x !== undefined);
  if (kinds.filter(Boolean).length !== 1) {
    c.error(field, "an aggregation is exactly one of count, sum, min, max, avg, reduce, latest, topN", step);
    return undefined;
  }
  const ordering = (f: string, by: string) => {
    const t = c.expr(f, by, "record", step);
    c.expectType(f, t, isOrderType, "`by` orders records: it must give a number, string, bytes, timestamp or bool, or a list of those", step);
  };
  if (a.latest !== undefined) {
    c.expr(`${field}.latest.value`, a.latest.value, "record", step);
    if (a.latest.by !== undefined) ordering(`${field}.latest.by`, a.latest.by);
    return { fn: "latest", value: a.latest.value, ...(a.latest.by !== undefined ? { by: a.latest.by } : {}) };
  }
  if (a.topN !== undefined) {
    const n = a.topN.limit;
    if (!Number.isInteger(n) || n < 1 || n > MAX_TOP_N) c.error(`${field}.topN.limit`, `limit must be a whole number from 1 to ${MAX_TOP_N}`, step);
    ordering(`${field}.topN.by`, a.topN.by);
    if (a.topN.value !== undefined) c.expr(`${field}.topN.value`, a.topN.value, "record", step);
    return { fn: "topN", n, by: a.topN.by, ...(a.topN.value !== undefined ? { value: a.topN.value } : {}) };
  }
  if (a.count !== undefined) return { fn: "count" };
  if (a.sum !== undefined) return numeric("sum", a.sum);
  if (a.min !== undefined) return numeric("min", a.min);
  if (a.max !== undefined) return numeric("max", a.max);
  if (a.avg !== undefined) return numeric("avg", a.avg);
  const r = a.reduce as { init: string; expr: string };
  c.expr(`${field}.reduce.init`, r.init, "reduce", step);
  c.expr(`${field}.reduce.expr`, r.expr, "reduce", step);
  return { fn: "reduce", init: r.init, expr: r.expr };
}

function compileWindowShape(c: Compiler, field: string, step: string, w: NonNullable<StepSpec["window"]>): WindowShape | undefined {
  const kinds = [w.tumbling !== undefined, w.hopping !== undefined, w.session !== undefined].filter(Boolean).length;
  if (kinds !== 1) {
    c.error(field, "a window is exactly one of tumbling, hopping, session", step);
    return undefined;
  }
  const positive = (f: string, text: string) => {
    const ms = c.duration(f, text, text, step);
    if (ms <= 0 && parseDuration(text) !== undefined) c.error(f, "must be longer than 0", step);
    return ms;
  };
  if (w.tumbling !== undefined) return { type: "tumbling", sizeMs: positive(`${field}.tumbling`, w.tumbling) };
  if (w.hopping) {
    const sizeMs = positive(`${field}.hopping.size`, w.hopping.size);
    const advanceMs = positive(`${field}.hopping.advance`, w.hopping.advance);
    if (advanceMs > sizeMs) c.error(`${field}.hopping`, "advance must not exceed size", step);
    return { type: "hopping", sizeMs, advanceMs };
  }
  return { type: "session", gapMs: positive(`${field}.session.gap`, (w.session as { gap: string }).gap) };
}

/** Where a pipeline lives, and how its internal topics are named (see internalPrefix). */
export interface PipelineMeta {
  namespace: string;
  name: string;
  /** the names of pipelines that ran before collision-free names: kept, so that their state stays theirs */
  legacyNames?: boolean;
}

/** Kafka's longest topic name. */
export const MAX_TOPIC_NAME = 249;

/**
 * What starts every internal topic name, restore group and transactional id of a pipeline: `<namespace>_<name>_`.
 * Neither part can hold "_" (both are DNS names), so no two pipelines' prefixes start one another, and a prefixed
 * ACL covers one pipeline alone. Pipelines that ran before keep `<namespace>.<name>-`, under which `orders` with
 * step `by-user` and `orders-by` with step `user` shared a topic.
 */
export function internalPrefix(meta: PipelineMeta): string {
  return meta.legacyNames ? `${meta.namespace}.${meta.name}-` : `${meta.namespace}_${meta.name}_`;
}

export function internalTopicName(meta: PipelineMeta, step: string, kind: "repartition" | "changelog"): string {
  return `${internalPrefix(meta)}${step}-${kind}`;
}

const RESERVED =
  "is named as a pipeline's internal topic (<namespace>_<name>_<step>-repartition or -changelog, or <namespace>.<name>-<step>-...): those belong to the runtime";
const NEW_INTERNAL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?_[a-z0-9.-]+_[a-z0-9]([-a-z0-9]*[a-z0-9])?-(repartition|changelog)$/;
const LEGACY_INTERNAL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9.-]+-(repartition|changelog)$/;

/**
 * True for a name of the form any pipeline's internal topic has, in any namespace, under either naming: such
 * topics hold another pipeline's state or repartitioned records, and a spec may neither read nor write them.
 */
export function isInternalTopicName(topic: string): boolean {
  return NEW_INTERNAL.test(topic) || LEGACY_INTERNAL.test(topic);
}

/**
 * The internal topics a spec implies, from step names alone: the finalizer needs them even for a spec whose
 * expressions no longer compile.
 */
export function internalTopicNames(spec: StreamPipelineSpec, meta: PipelineMeta): { repartition: string[]; changelog: string[] } {
  const steps = spec.steps ?? [];
  return {
    repartition: steps.filter((s) => s.keyBy !== undefined).map((s) => internalTopicName(meta, s.name, "repartition")),
    changelog: steps.filter((s) => s.aggregate !== undefined || s.join !== undefined).map((s) => internalTopicName(meta, s.name, "changelog")),
  };
}

/** A join with a global input: a lookup by `lookup` in a table every worker holds, as it stands (no keyBy needed). */
function compileLookup(
  c: Compiler,
  field: string,
  name: string,
  j: NonNullable<StepSpec["join"]>,
  input: CompiledInput | undefined,
  steps: CompiledStep[],
): void {
  if (!input) c.error(`${field}.join.input`, `no input in spec.inputs is named "${j.input}"`, name);
  else if (input.join !== undefined)
    c.error(`${field}.join.input`, `input "${j.input}" is already joined by step "${input.join}": an input is the other side of one join`, name);
  else input.join = name;
  if (j.within !== undefined || j.grace !== undefined)
    c.error(`${field}.join.within`, "a global input is a table looked up as it stands: within and grace belong to a join of two streams", name);
  if (j.table) c.error(`${field}.join.table`, "a global input is looked up as it stands: a table-table join is partitioned", name);
  const type = j.type ?? SPEC_DEFAULTS["steps[].join.type"];
  if (type === "outer") c.error(`${field}.join.type`, "a join with a global input is inner or left", name);
  const keyType = c.expr(`${field}.join.key`, j.key, "record", name);
  c.expectType(`${field}.join.key`, keyType, isScalarKeyType, "a key must be a string, a number, a bool or bytes", name);
  if (j.lookup === undefined) {
    c.error(`${field}.join.lookup`, "a join with a global input needs lookup: the key to look each record up by", name);
    return;
  }
  const lookupType = c.expr(`${field}.join.lookup`, j.lookup, "record", name);
  c.expectType(`${field}.join.lookup`, lookupType, isScalarKeyType, "a key must be a string, a number, a bool or bytes", name);
  steps.push({ name, kind: "lookup", input: j.input, key: j.key, lookup: j.lookup, as: j.as, type: type === "outer" ? "left" : type });
}

/** Where a window's or join's late records go: a topic (not the sink, a source or another pipeline's), or nowhere. */
function compileLate(
  c: Compiler,
  field: string,
  step: string,
  late: StepSpec["late"],
  spec: StreamPipelineSpec,
  sourceTopics: string[],
): { topic: string } | { drop: true } {
  if (late?.topic !== undefined && late.drop) {
    c.error(field, "late records go to a topic or are dropped, not both", step);
    return { drop: true };
  }
  if (late?.topic === undefined) return { drop: true };
  if (late.topic === spec.sink.topic || sourceTopics.includes(late.topic)) c.error(`${field}.topic`, "the late topic must not be the sink or a source", step);
  if (isInternalTopicName(late.topic)) c.error(`${field}.topic`, `${late.topic} ${RESERVED}`, step);
  return { topic: late.topic };
}

/** A join's state-schema hash: its versions and held records are laid out by its keys, its name for the table and the formats. */
export function joinStateSchemaHash(parts: { as: string; key: string; tableKey: string; format: string; windowed?: boolean; table?: boolean }): string {
  // a windowed or table-table join keeps both sides' records, not a table's versions: another layout each (the
  // stream-table join's hash stays as it was)
  const join = {
    as: parts.as,
    tableKey: parts.tableKey,
    ...(parts.windowed ? { windowed: true } : {}),
    ...(parts.table ? { table: true } : {}),
  };
  const canonical = JSON.stringify({ v: TOPOLOGY_FORMAT_VERSION, join, key: parts.key, format: parts.format });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}

/** An input's settings (the source's, or a named input's at `field`): its event time checked, its durations read. */
function compileInputSettings(
  c: Compiler,
  field: string,
  spec: {
    topics: string[];
    format?: CompiledInputSettings["format"];
    eventTime?: string;
    watermark?: { maxOutOfOrderness?: string; idleTimeout?: string; maxFutureSkew?: string };
  },
): CompiledInputSettings {
  if (spec.eventTime !== undefined) {
    const t = c.expr(`${field}.eventTime`, spec.eventTime, "record");
    c.expectType(`${field}.eventTime`, t, (x) => TIME_TYPES.has(x), "event time must be a timestamp or milliseconds since the epoch");
  }
  const w = spec.watermark;
  return {
    topics: [...spec.topics],
    format: spec.format ?? SPEC_DEFAULTS["source.format"],
    ...(spec.eventTime !== undefined ? { eventTime: spec.eventTime } : {}),
    watermark: {
      maxOutOfOrdernessMs: c.duration(`${field}.watermark.maxOutOfOrderness`, w?.maxOutOfOrderness, SPEC_DEFAULTS["source.watermark.maxOutOfOrderness"]),
      idleTimeoutMs: c.duration(`${field}.watermark.idleTimeout`, w?.idleTimeout, SPEC_DEFAULTS["source.watermark.idleTimeout"]),
      maxFutureSkewMs: c.duration(`${field}.watermark.maxFutureSkew`, w?.maxFutureSkew, SPEC_DEFAULTS["source.watermark.maxFutureSkew"]),
    },
  };
}

export function compile(spec: StreamPipelineSpec, meta: PipelineMeta): CompileResult {
  const c = new Compiler();
  const applicationId = `${meta.namespace}.${meta.name}`;
  const internalTopics: string[] = [];

  const source = compileInputSettings(c, "spec.source", spec.source);
  const inputs: CompiledInput[] = [];
  /** who reads each topic so far: a topic read twice is refused */
  const readBy = new Map(spec.source.topics.map((t) => [t, "spec.source"]));
  (spec.inputs ?? []).forEach((input, i) => {
    const field = `spec.inputs[${i}]`;
    if (input.name === SOURCE_INPUT) c.error(`${field}.name`, `"${SOURCE_INPUT}" names spec.source among the inputs: choose another name`);
    if (inputs.some((x) => x.name === input.name)) c.error(`${field}.name`, `input name "${input.name}" is used twice`);
    input.topics.forEach((t, j) => {
      const other = readBy.get(t);
      if (other !== undefined) c.error(`${field}.topics[${j}]`, `${t} is read by ${other} already: each topic belongs to one input`);
      readBy.set(t, `input "${input.name}"`);
    });
    inputs.push({ name: input.name, ...compileInputSettings(c, field, input), ...(input.global ? { global: true as const } : {}) });
  });
  const sourceTopics = [...readBy.keys()];
  /** what the state's values were decoded from: the source's format, and each named input's after it */
  // (a global input's records go to no task's state)
  const inputFormats = [source.format, ...inputs.filter((x) => !x.global).map((x) => `${x.name}:${x.format}`)].join(",");
  const steps: CompiledStep[] = [];
  const seen = new Set<string>();
  let lastKey: string | undefined;
  /** the keyBy before the step now */
  let lastKeyBy: { name: string; repartitionTopic: string } | undefined;
  /** the window, table or join since the last keyBy, if any: a sub-topology holds one (runtime/graph.ts) */
  let windowSinceKeyBy: string | undefined;
  /**
   * The last window or table so far, if it emits updates: the field that says so, and why a stateful step after
   * it would count them.
   */
  let lastUpdates: { field: string; name: string; problem: (next: string) => string } | undefined;
  const specSteps = spec.steps ?? [];
  const namedSinks = new Map((spec.sinks ?? []).map((k) => [k.name, k]));
  specSteps.forEach((s, i) => {
    const field = `spec.steps[${i}]`;
    if (seen.has(s.name)) c.error(`${field}.name`, `step name "${s.name}" is used twice`, s.name);
    seen.add(s.name);
    const kinds = (["filter", "map", "flatMap", "keyBy", "aggregate", "route", "join"] as const).filter((k) => s[k] !== undefined);
    if (kinds.length !== 1) {
      c.error(field, "a step has exactly one of filter, map, flatMap, keyBy, aggregate (with or without a window), route, join", s.name);
      return;
    }
    const kind = kinds[0];
    if (s.window && kind !== "aggregate") c.error(`${field}.window`, "a window step needs an aggregate", s.name);
    if (!s.window && (s.emit || (s.late && kind !== "join")))
      c.error(s.emit ? `${field}.emit` : `${field}.late`, "emit and late belong to window steps (late to join steps too)", s.name);
    if (s.emitTombstones !== undefined && (kind !== "aggregate" || s.window))
      c.error(`${field}.emitTombstones`, "emitTombstones belongs to an aggregate step without a window (a table)", s.name);
    switch (kind) {
      case "filter": {
        const t = c.expr(`${field}.filter`, s.filter as string, "record", s.name);
        c.expectType(`${field}.filter`, t, (x) => BOOL_TYPES.has(x), "a filter must give a bool", s.name);
        steps.push({ name: s.name, kind, expr: s.filter as string });
        return;
      }
      case "map":
        c.expr(`${field}.map`, s.map as string, "record", s.name);
        steps.push({ name: s.name, kind, expr: s.map as string });
        return;
      case "flatMap": {
        const t = c.expr(`${field}.flatMap`, s.flatMap as string, "record", s.name);
        c.expectType(`${field}.flatMap`, t, (x) => x === "dyn" || x.startsWith("list"), "flatMap must give a list", s.name);
        steps.push({ name: s.name, kind, expr: s.flatMap as string });
        return;
      }
      case "route": {
        const routes = (s.route ?? []).map((r, j) => {
          const t = c.expr(`${field}.route[${j}].when`, r.when, "record", s.name);
          c.expectType(`${field}.route[${j}].when`, t, (x) => BOOL_TYPES.has(x), "a route's when must give a bool", s.name);
          if (!namedSinks.has(r.to)) c.error(`${field}.route[${j}].to`, `no sink in spec.sinks is named "${r.to}"`, s.name);
          return { when: r.when, to: r.to };
        });
        if (routes.length === 0) c.error(`${field}.route`, "a route step needs at least one route", s.name);
        steps.push({ name: s.name, kind: "route", routes });
        return;
      }
      case "keyBy": {
        const t = c.expr(`${field}.keyBy`, s.keyBy as string, "record", s.name);
        c.expectType(`${field}.keyBy`, t, isScalarKeyType, "a key must be a string, a number, a bool or bytes", s.name);
        windowSinceKeyBy = undefined;
        const repartitionTopic = internalTopicName(meta, s.name, "repartition");
        internalTopics.push(repartitionTopic);
        lastKey = s.keyBy as string;
        lastKeyBy = { name: s.name, repartitionTopic };
        steps.push({ name: s.name, kind, expr: s.keyBy as string, repartitionTopic });
        return;
      }
      case "join": {
        const j = s.join as NonNullable<StepSpec["join"]>;
        const joined = inputs.find((x) => x.name === j.input);
        if (joined?.global || (!joined && j.lookup !== undefined)) {
          if (s.late) c.error(`${field}.late`, "a join with a global input looks records up as they come: none is late", s.name);
          compileLookup(c, field, s.name, j, joined, steps);
          return;
        }
        if (j.lookup !== undefined) c.error(`${field}.join.lookup`, `lookup belongs to a join with a global input, and "${j.input}" is not one`, s.name);
        if (lastKeyBy === undefined) c.error(field, "a join step needs a keyBy step before it: the two sides meet per key", s.name);
        else if (windowSinceKeyBy !== undefined)
          c.error(field, `a keyBy step goes between "${windowSinceKeyBy}" and this join: a sub-topology holds one window, table or join`, s.name);
        windowSinceKeyBy = s.name;
        // the source stage writes an input's records into its join's repartition topic: one join's, so no input
        // is the other side of two
        const input = inputs.find((x) => x.name === j.input);
        if (!input) c.error(`${field}.join.input`, `no input in spec.inputs is named "${j.input}"`, s.name);
        else if (input.join !== undefined)
          c.error(`${field}.join.input`, `input "${j.input}" is already joined by step "${input.join}": an input is the other side of one join`, s.name);
        else input.join = s.name;
        const t = c.expr(`${field}.join.key`, j.key, "record", s.name);
        c.expectType(`${field}.join.key`, t, isScalarKeyType, "a key must be a string, a number, a bool or bytes", s.name);
        const late = compileLate(c, `${field}.late`, s.name, s.late, spec, sourceTopics);
        const changelogTopic = internalTopicName(meta, s.name, "changelog");
        internalTopics.push(changelogTopic);
        const type = j.type ?? SPEC_DEFAULTS["steps[].join.type"];
        const windowed = j.within !== undefined;
        if (j.table && windowed)
          c.error(`${field}.join.table`, "a table-table join keeps each side's latest value: within belongs to a join of two streams", s.name);
        if (j.table && i !== specSteps.length - 1)
          c.error(
            `${field}.join.table`,
            "a table-table join must be the last step: a result it ends is a tombstone, with no value for a step after it to read",
            s.name,
          );
        if (type === "outer" && !windowed) c.error(`${field}.join.type`, "an outer join is a windowed stream-stream join: it needs within", s.name);
        if (j.grace !== undefined && !windowed) c.error(`${field}.join.grace`, "grace belongs to a windowed stream-stream join: it needs within", s.name);
        const within = windowed
          ? { withinMs: c.duration(`${field}.join.within`, j.within, "0s", s.name), graceMs: c.duration(`${field}.join.grace`, j.grace, "0s", s.name) }
          : {};
        steps.push({
          name: s.name,
          kind: "join",
          input: j.input,
          key: j.key,
          as: j.as,
          type,
          ...within,
          ...(j.table ? { table: true as const } : {}),
          late,
          repartitionTopic: lastKeyBy?.repartitionTopic ?? "",
          changelogTopic,
          stateSchemaHash: joinStateSchemaHash({ as: j.as, key: lastKey ?? "", tableKey: j.key, format: inputFormats, windowed, table: j.table === true }),
        });
        return;
      }
      case "aggregate": {
        const table = s.window === undefined;
        const what = table ? "an aggregate step" : "a window step";
        if (lastKey === undefined) c.error(field, `${what} needs a keyBy step before it: state is kept per key`, s.name);
        else if (windowSinceKeyBy !== undefined)
          c.error(
            field,
            `a keyBy step goes between two ${table ? "stateful steps" : "windows"} ("${windowSinceKeyBy}" and this one): their results are keyed anew`,
            s.name,
          );
        // A stateful step after a window or table counts the earlier one's results: each once, so that one must
        // emit each result once. A table's results are changes to it, and there are no retractions.
        if (lastUpdates) c.error(lastUpdates.field, lastUpdates.problem(s.name), lastUpdates.name);
        windowSinceKeyBy = s.name;
        const emit = table ? "onChange" : (s.emit ?? "onWindowClose");
        const name = s.name;
        lastUpdates = table
          ? {
              field: `${field}.aggregate`,
              name,
              problem: (next) =>
                `table "${name}" writes each change of a key, and step "${next}" after it would count each one: a table's changes cannot be aggregated again (there are no retractions)`,
            }
          : emit === "onUpdate"
            ? {
                field: `${field}.emit`,
                name,
                problem: (next) =>
                  `window "${name}" writes every update of a window, and window "${next}" after it would count each one: emit onWindowClose there`,
              }
            : undefined;
        if (s.emitTombstones) {
          if (spec.state?.ttl === undefined)
            c.error(`${field}.emitTombstones`, "tombstones are written for keys that spec.state.ttl expires: set a ttl", s.name);
          if (i !== specSteps.length - 1)
            c.error(`${field}.emitTombstones`, "a step with emitTombstones must be the last: a tombstone has no value for a step after it to read", s.name);
        }
        const window: WindowShape | undefined = table
          ? { type: "global" }
          : compileWindowShape(c, `${field}.window`, s.name, s.window as NonNullable<StepSpec["window"]>);
        const graceMs = table ? 0 : c.duration(`${field}.window.grace`, s.window?.grace, SPEC_DEFAULTS["steps[].window.grace"], s.name);
        const aggregate: Record<string, CompiledAggregation> = {};
        if (!s.aggregate || Object.keys(s.aggregate).length === 0) c.error(`${field}.aggregate`, `${what} needs at least one aggregation`, s.name);
        for (const [name, a] of Object.entries(s.aggregate ?? {})) {
          const compiled = compileAggregation(c, `${field}.aggregate[${name}]`, s.name, a);
          if (compiled?.fn === "reduce" && s.window?.session !== undefined)
            c.error(`${field}.aggregate[${name}].reduce`, "a session window cannot use reduce: sessions merge, and a reduce has no merge", s.name);
          if (compiled) aggregate[name] = compiled;
        }
        const late = compileLate(c, `${field}.late`, s.name, s.late, spec, sourceTopics);
        if (!window) return;
        const changelogTopic = internalTopicName(meta, s.name, "changelog");
        internalTopics.push(changelogTopic);
        steps.push({
          name: s.name,
          kind: "window",
          window,
          graceMs,
          aggregate,
          emit,
          ...(s.emitTombstones ? { emitTombstones: true } : {}),
          late,
          changelogTopic,
          stateSchemaHash: stateSchemaHash({ window, aggregate, key: lastKey ?? "", format: inputFormats }),
        });
        return;
      }
    }
  });

  if (sourceTopics.includes(spec.sink.topic)) c.error("spec.sink.topic", "the sink must not be a source topic: the pipeline would read its own output");
  const reserved = RESERVED;
  for (const [field, topics] of [["spec.source", spec.source.topics] as const, ...(spec.inputs ?? []).map((x, i) => [`spec.inputs[${i}]`, x.topics] as const)])
    topics.forEach((t, i) => {
      if (isInternalTopicName(t)) c.error(`${field}.topics[${i}]`, `${t} ${reserved}`);
    });
  if (isInternalTopicName(spec.sink.topic)) c.error("spec.sink.topic", `${spec.sink.topic} ${reserved}`);
  if (spec.deadLetter && isInternalTopicName(spec.deadLetter.topic)) c.error("spec.deadLetter.topic", `${spec.deadLetter.topic} ${reserved}`);
  if (spec.sink.key !== undefined) {
    const t = c.expr("spec.sink.key", spec.sink.key, "record");
    c.expectType("spec.sink.key", t, isScalarKeyType, "a key must be a string, a number, a bool or bytes");
  }
  const sinks: Record<string, CompiledSink> = {};
  (spec.sinks ?? []).forEach((k, i) => {
    const field = `spec.sinks[${i}]`;
    if (sourceTopics.includes(k.topic)) c.error(`${field}.topic`, "a sink must not be a source topic: the pipeline would read its own output");
    if (isInternalTopicName(k.topic)) c.error(`${field}.topic`, `${k.topic} ${reserved}`);
    if (spec.deadLetter?.topic === k.topic) c.error(`${field}.topic`, "a sink must not be the dead-letter topic");
    if (k.key !== undefined) {
      const t = c.expr(`${field}.key`, k.key, "record");
      c.expectType(`${field}.key`, t, isScalarKeyType, "a key must be a string, a number, a bool or bytes");
    }
    sinks[k.name] = { topic: k.topic, ...(k.key !== undefined ? { key: k.key } : {}), format: k.format ?? SPEC_DEFAULTS["sinks[].format"] };
  });
  if (spec.sinks?.length && !specSteps.some((s) => s.route !== undefined)) c.error("spec.sinks", "no route step sends to these sinks");
  inputs.forEach((input, i) => {
    if (input.global && input.join === undefined)
      c.error(`spec.inputs[${i}].global`, `a global input is read only by a join step that names it, and no step joins "${input.name}"`);
  });
  if (spec.deadLetter && (spec.deadLetter.topic === spec.sink.topic || sourceTopics.includes(spec.deadLetter.topic))) {
    c.error("spec.deadLetter.topic", "the dead-letter topic must not be the sink or a source");
  }
  const processing = {
    guarantee: spec.processing?.guarantee ?? SPEC_DEFAULTS["processing.guarantee"],
    commitIntervalMs: c.duration("spec.processing.commitInterval", spec.processing?.commitInterval, SPEC_DEFAULTS["processing.commitInterval"]),
    maxInFlight: spec.processing?.maxInFlight ?? SPEC_DEFAULTS["processing.maxInFlight"],
    ...(spec.processing?.maxRecordsPerSecond !== undefined ? { maxRecordsPerSecond: spec.processing.maxRecordsPerSecond } : {}),
  };
  const ttlMs = spec.state?.ttl !== undefined ? c.duration("spec.state.ttl", spec.state.ttl, spec.state.ttl) : undefined;
  const blockCacheBytes = parseBytes(spec.state?.blockCacheSize ?? SPEC_DEFAULTS["state.blockCacheSize"]);
  if (blockCacheBytes === undefined) c.error("spec.state.blockCacheSize", "the block cache size must be a whole number of bytes, such as 64Mi");
  const cacheBytes = parseBytes(spec.state?.cacheSize ?? SPEC_DEFAULTS["state.cacheSize"]);
  if (cacheBytes === undefined) c.error("spec.state.cacheSize", "the state cache size must be a whole number of bytes, such as 32Mi");

  const longest = internalTopics.reduce((a, b) => (b.length > a.length ? b : a), "");
  if (longest.length > MAX_TOPIC_NAME) {
    c.error(
      "metadata.name",
      `the internal topic ${longest.slice(0, 60)}... would be ${longest.length} characters, over Kafka's ${MAX_TOPIC_NAME}: use a shorter pipeline or step name`,
    );
  }
  if (c.errors.length > 0) return { ok: false, errors: c.errors };
  return {
    ok: true,
    topology: {
      formatVersion: TOPOLOGY_FORMAT_VERSION,
      applicationId,
      internalPrefix: internalPrefix(meta),
      source: { ...source, startFrom: spec.source.startFrom ?? SPEC_DEFAULTS["source.startFrom"] },
      ...(inputs.length > 0 ? { inputs } : {}),
      steps,
      sink: {
        topic: spec.sink.topic,
        ...(spec.sink.key !== undefined ? { key: spec.sink.key } : {}),
        format: spec.sink.format ?? SPEC_DEFAULTS["sink.format"],
      },
      sinks,
      ...(spec.deadLetter ? { deadLetter: { topic: spec.deadLetter.topic } } : {}),
      processing,
      state: { blockCacheBytes: blockCacheBytes ?? 0, cacheBytes: cacheBytes ?? 0, ...(ttlMs !== undefined ? { ttlMs } : {}) },
      internalTopics,
    },
  };
}
