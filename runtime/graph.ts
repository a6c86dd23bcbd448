// The compiled topology as data the runtime runs: a graph of sub-topologies cut where records cross the network
// (after Kafka Streams' TopologyDescription). A sub-topology reads its input (the source topics, or the repartition
// topic the one before it writes) and runs a list of processors in order; a keyBy ends a sub-topology by writing
// the next one's repartition topic, the sink ends the last one. A window is a stateful processor: its results go
// on through the processors after it, to the sink or, re-keyed, to the next sub-topology; a route sends some
// values to named sinks on the way. New processor kinds (joins) are new entries in the list; the stream thread and the task manager see only
// sub-topologies, inputs and stores.
import { type CompiledStep, type CompiledTopology, sourceTopicsOf } from "../src/topology/compile.ts";
import { type StatelessStepSpec, scopeNames } from "./stateless.ts";
import type { WindowStep } from "./window.ts";

export type KeyByStep = Extract<CompiledStep, { kind: "keyBy" }>;
export type JoinStep = Extract<CompiledStep, { kind: "join" }>;
export type RouteStep = Extract<CompiledStep, { kind: "route" }>;

export type Processor =
  /** filter, map and flatMap steps, in order: each value they give goes on alone */
  | { kind: "steps"; steps: StatelessStepSpec[] }
  /** sends each value that one of its conditions holds for to that route's named sink; the rest go on */
  | { kind: "route"; step: RouteStep }
  /** re-keys each value and writes it to the next sub-topology's repartition topic: ends the sub-topology */
  | { kind: "keyBy"; step: KeyByStep }
  /** aggregates per key and window in the task's store; its results go on through the processors after it */
  | { kind: "window"; step: WindowStep }
  /** holds each value until the watermark passes it, then joins it with the table's value as of its time (join.ts) */
  | { kind: "join"; step: JoinStep }
  /** encodes each value for the sink topic: ends the last sub-topology */
  | { kind: "sink" };

export type SubTopologyInput = { kind: "source"; topics: string[] } | { kind: "repartition"; topic: string };

export interface SubTopology {
  id: number;
  input: SubTopologyInput;
  processors: Processor[];
  /** its window step, when it has one: its tasks keep state (one task per partition of its input) */
  window?: WindowStep;
  /** its join step, when it has one instead: its tasks keep the table's versions and the held records */
  join?: JoinStep;
  /** the repartition topic its keyBy writes, the next sub-topology's input; none for the last */
  output?: string;
  /**
   * Whether it writes watermark markers into its output: some sub-topology after it holds a window. The source
   * sub-topology writes those of its source partitions; a keyed one forwards its tasks' watermarks.
   */
  forwardsWatermarks: boolean;
}

/** A sub-topology that reads a repartition topic: every one but the first. */
export type KeyedSubTopology = SubTopology & { input: { kind: "repartition"; topic: string } };

export interface TopologyGraph {
  subTopologies: SubTopology[];
  /** whether records need an event time: some sub-topology holds a window */
  eventTime: boolean;
  /** the fields of a record's scope that some expression reads (stateless.ts, scopeNames) */
  scopeNames: ReadonlySet<string>;
  /** the named sinks that route processors send to */
  sinks: NonNullable<CompiledTopology["sinks"]>;
  /** the join steps: the source stage writes each one's input, keyed, into its repartition topic */
  joins: JoinStep[];
}

/** A sub-topology's stateful step: its window (or table), or its join. */
export function statefulOf(sub: SubTopology): WindowStep | JoinStep | undefined {
  return sub.window ?? sub.join;
}

/**
 * The graph of a compiled topology: a new sub-topology at every keyBy, each holding at most one window, after
 * a keyBy. A topology beyond that is refused here, naming the step, before any record is read (the compiler
 * refuses it at apply).
 */
export function graphOf(t: CompiledTopology): TopologyGraph {
  const subs: SubTopology[] = [{ id: 0, input: { kind: "source", topics: sourceTopicsOf(t) }, processors: [], forwardsWatermarks: false }];
  const current = (): SubTopology => subs[subs.length - 1] as SubTopology;
  for (const s of t.steps) {
    const sub = current();
    const processors = sub.processors;
    if (s.kind === "keyBy") {
      processors.push({ kind: "keyBy", step: s });
      sub.output = s.repartitionTopic;
      subs.push({ id: subs.length, input: { kind: "repartition", topic: s.repartitionTopic }, processors: [], forwardsWatermarks: false });
    } else if (s.kind === "window") {
      if (subs.length === 1) throw new Error(`step "${s.name}": a window needs a keyBy before it`);
      const held = sub.window ?? sub.join;
      if (held) throw new Error(`step "${s.name}": a sub-topology holds one window, table or join; a keyBy goes between "${held.name}" and it`);
      sub.window = s;
      processors.push({ kind: "window", step: s });
    } else if (s.kind === "join") {
      if (subs.length === 1) throw new Error(`step "${s.name}": a join needs a keyBy before it`);
      const held = sub.window ?? sub.join;
      if (held) throw new Error(`step "${s.name}": a sub-topology holds one window, table or join; a keyBy goes between "${held.name}" and it`);
      sub.join = s;
      processors.push({ kind: "join", step: s });
    } else if (s.kind === "lookup") {
      // a lookup in a global input's table: stateless here, beside the filter, map and flatMap steps
      const last = processors[processors.length - 1];
      if (last?.kind === "steps") last.steps.push(s);
      else processors.push({ kind: "steps", steps: [s] });
    } else if (s.kind === "route") {
      processors.push({ kind: "route", step: s });
    } else {
      const last = processors[processors.length - 1];
      if (last?.kind === "steps") last.steps.push(s);
      else processors.push({ kind: "steps", steps: [s] });
    }
  }
  current().processors.push({ kind: "sink" });
  // markers flow down to the last window or join: every sub-topology before it forwards them
  const lastStateful = subs.findLastIndex((s) => statefulOf(s) !== undefined);
  for (const s of subs) s.forwardsWatermarks = s.id < lastStateful;
  const joins = t.steps.filter((s): s is JoinStep => s.kind === "join");
  return { subTopologies: subs, eventTime: lastStateful >= 0, scopeNames: scopeNames(t), sinks: t.sinks ?? {}, joins };
}

/** The sub-topology that reads the source topics. */
export function sourceSubTopology(g: TopologyGraph): SubTopology {
  return g.subTopologies[0] as SubTopology;
}

/** The sub-topologies that read a repartition topic, in order. */
export function keyedSubTopologies(g: TopologyGraph): KeyedSubTopology[] {
  return g.subTopologies.filter((s): s is KeyedSubTopology => s.input.kind === "repartition");
}

/** The sub-topology before a keyed one: whose output it reads, and whose markers it gets. */
export function upstreamOf(g: TopologyGraph, sub: KeyedSubTopology): SubTopology {
  const up = g.subTopologies.find((s) => s.output === sub.input.topic);
  if (!up) throw new Error(`no sub-topology writes ${sub.input.topic}`);
  return up;
}

/** The window steps, whose tasks keep state, in order. */
export function windowSteps(g: TopologyGraph): WindowStep[] {
  return g.subTopologies.flatMap((s) => (s.window ? [s.window] : []));
}
