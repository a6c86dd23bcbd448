// The compiled topology as data the runtime runs: a graph of sub-topologies cut where records cross the network
// (after Kafka Streams' TopologyDescription). A sub-topology reads its input (the source topics, or the repartition
// topic the one before it writes) and runs a list of processors in order; a keyBy ends a sub-topology by writing
// the next one's repartition topic, the sink ends the last one. A window is a stateful processor: its results go
// on through the processors after it. New processor kinds (tables, joins, routes) are new entries in the list;
// the stream thread and the task manager see only sub-topologies, inputs and stores.
import type { CompiledStep, CompiledTopology } from "../src/topology/compile.ts";
import { type StatelessStepSpec, scopeNames } from "./stateless.ts";
import type { WindowStep } from "./window.ts";

export type KeyByStep = Extract<CompiledStep, { kind: "keyBy" }>;

export type Processor =
  /** filter, map and flatMap steps, in order: each value they give goes on alone */
  | { kind: "steps"; steps: StatelessStepSpec[] }
  /** re-keys each value and writes it to the next sub-topology's repartition topic: ends the sub-topology */
  | { kind: "keyBy"; step: KeyByStep }
  /** aggregates per key and window in the task's store; its results go on through the processors after it */
  | { kind: "window"; step: WindowStep }
  /** encodes each value for the sink topic: ends the last sub-topology */
  | { kind: "sink" };

export type SubTopologyInput = { kind: "source"; topics: string[] } | { kind: "repartition"; topic: string };

export interface SubTopology {
  id: number;
  input: SubTopologyInput;
  processors: Processor[];
}

export interface TopologyGraph {
  subTopologies: SubTopology[];
  /** whether records need an event time: some sub-topology holds a window */
  eventTime: boolean;
  /** the fields of a record's scope that some expression reads (stateless.ts, scopeNames) */
  scopeNames: ReadonlySet<string>;
}

/**
 * The graph of a compiled topology. This runtime runs at most two sub-topologies (one keyBy) and one window,
 * after the keyBy; a topology beyond that is refused here, naming the step, before any record is read.
 */
export function graphOf(t: CompiledTopology): TopologyGraph {
  const subs: SubTopology[] = [{ id: 0, input: { kind: "source", topics: t.source.topics }, processors: [] }];
  let windows = 0;
  const current = (): SubTopology => subs[subs.length - 1] as SubTopology;
  for (const s of t.steps) {
    const processors = current().processors;
    if (s.kind === "keyBy") {
      if (subs.length > 1) throw new Error(`step "${s.name}": this runtime runs one keyBy step per pipeline`);
      processors.push({ kind: "keyBy", step: s });
      subs.push({ id: subs.length, input: { kind: "repartition", topic: s.repartitionTopic }, processors: [] });
    } else if (s.kind === "window") {
      if (windows > 0) throw new Error(`step "${s.name}": this runtime runs one window step per pipeline`);
      if (subs.length === 1) throw new Error(`step "${s.name}": a window needs a keyBy before it`);
      windows++;
      processors.push({ kind: "window", step: s });
    } else {
      const last = processors[processors.length - 1];
      if (last?.kind === "steps") last.steps.push(s);
      else processors.push({ kind: "steps", steps: [s] });
    }
  }
  current().processors.push({ kind: "sink" });
  return { subTopologies: subs, eventTime: windows > 0, scopeNames: scopeNames(t) };
}

/** The sub-topology that reads the source topics. */
export function sourceSubTopology(g: TopologyGraph): SubTopology {
  return g.subTopologies[0] as SubTopology;
}

/** The sub-topology that reads a repartition topic, when the pipeline has a keyBy. */
export function keyedSubTopology(g: TopologyGraph): SubTopology | undefined {
  return g.subTopologies.find((s) => s.input.kind === "repartition");
}

/** The repartition topic between the sub-topologies, when there is one. */
export function repartitionTopicOf(g: TopologyGraph): string | undefined {
  const input = keyedSubTopology(g)?.input;
  return input?.kind === "repartition" ? input.topic : undefined;
}

/** The window step, whose tasks keep state, when there is one. */
export function windowOf(g: TopologyGraph): WindowStep | undefined {
  for (const sub of g.subTopologies) for (const p of sub.processors) if (p.kind === "window") return p.step;
  return undefined;
}
