// The stateless part of a topology: filter, map and flatMap in CEL, then the sink's key and format. Each
// expression is parsed once, with the compiler's environment and limits; a record that fails any of them comes
// back as a failure that names the step, for the dead-letter topic.
import { celEnvironment } from "../src/topology/cel.ts";
import type { CompiledStep, CompiledTopology } from "../src/topology/compile.ts";
import { celTypeOf, decodeKey, decodeValue, encodeKey, encodeValue, RecordError } from "./codec.ts";

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
  | { ok: true; out: { key?: Buffer; value?: Buffer; headers: Map<Buffer, Buffer>; timestamp: bigint }[]; filtered: number }
  | { ok: false; step: string; kind: RecordError["kind"]; error: string };

type Program = (ctx: Record<string, unknown>) => unknown;

interface Step {
  name: string;
  kind: "filter" | "map" | "flatMap";
  run: Program;
}

/** The steps before the first stateful one; the chain refuses a topology that has any. */
export function statelessSteps(steps: CompiledStep[]): { name: string; kind: "filter" | "map" | "flatMap"; expr: string }[] {
  const stateful = steps.filter((s) => s.kind !== "filter" && s.kind !== "map" && s.kind !== "flatMap");
  if (stateful.length > 0) {
    throw new Error(
      `steps ${stateful.map((s) => `"${s.name}" (${s.kind})`).join(", ")} need the stateful engine, which this runtime version does not have: refusing to run rather than skip them`,
    );
  }
  return steps as { name: string; kind: "filter" | "map" | "flatMap"; expr: string }[];
}

function headersObject(h: Map<Buffer, Buffer> | undefined): Record<string, string> {
  const o: Record<string, string> = {};
  if (h) for (const [k, v] of h) o[k.toString("utf8")] = v.toString("utf8");
  return o;
}

function evalError(err: unknown): string {
  // cel-js appends a source excerpt with a caret after the first line: the first line is the message.
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0]?.trim() ?? message;
}

export class StatelessChain {
  private readonly steps: Step[];
  private readonly sinkKey?: Program;
  private readonly topology: CompiledTopology;

  constructor(topology: CompiledTopology) {
    this.topology = topology;
    const env = celEnvironment("record");
    this.steps = statelessSteps(topology.steps).map((s) => ({ name: s.name, kind: s.kind, run: env.parse(s.expr) as unknown as Program }));
    if (topology.sink.key !== undefined) this.sinkKey = env.parse(topology.sink.key) as unknown as Program;
  }

  process(r: SourceRecord): Outcome {
    let value: unknown;
    try {
      value = decodeValue(r.value, this.topology.source.format);
    } catch (err) {
      return { ok: false, step: "source", kind: "parse", error: err instanceof Error ? err.message : String(err) };
    }
    const base = {
      key: decodeKey(r.key),
      headers: headersObject(r.headers),
      topic: r.topic,
      partition: BigInt(r.partition),
      offset: r.offset,
      timestamp: new Date(Number(r.timestamp)),
    };
    let values: unknown[] = [value];
    let filtered = 0;
    for (const step of this.steps) {
      const next: unknown[] = [];
      for (const v of values) {
        let result: unknown;
        try {
          result = step.run({ ...base, value: v });
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
        }
      }
      values = next;
    }
    const out: Extract<Outcome, { ok: true }>["out"] = [];
    for (const v of values) {
      try {
        const key = this.sinkKey ? encodeKey(this.sinkKey({ ...base, value: v })) : (r.key ?? undefined);
        out.push({ key, value: encodeValue(v, this.topology.sink.format), headers: r.headers ?? new Map(), timestamp: r.timestamp });
      } catch (err) {
        if (err instanceof RecordError) return { ok: false, step: "sink", kind: err.kind, error: err.message };
        return { ok: false, step: "sink", kind: "eval", error: evalError(err) };
      }
    }
    return { ok: true, out, filtered };
  }
}
