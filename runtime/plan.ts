// A compiled topology cut where records cross the network: the source stage runs the steps up to and including
// keyBy (which writes the repartition topic); the keyed stage reads the repartition topic back and runs the
// rest: stateless steps, the window, and the stateless steps after it. Without a keyBy, everything runs in the
// source stage.
import type { CompiledStep, CompiledTopology } from "../src/topology/compile.ts";
import type { StatelessStepSpec } from "./stateless.ts";
import type { WindowStep } from "./window.ts";

export type KeyByStep = Extract<CompiledStep, { kind: "keyBy" }>;

export interface Plan {
  /** stateless steps before the keyBy; every step when there is none */
  pre: StatelessStepSpec[];
  keyBy?: KeyByStep;
  /** stateless steps after the keyBy and before the window */
  mid: StatelessStepSpec[];
  window?: WindowStep;
  /** stateless steps after the window */
  post: StatelessStepSpec[];
}

export function planOf(t: CompiledTopology): Plan {
  const plan: Plan = { pre: [], mid: [], post: [] };
  for (const s of t.steps) {
    if (s.kind === "keyBy") {
      if (plan.keyBy) throw new Error(`step "${s.name}": this runtime runs one keyBy step per pipeline`);
      plan.keyBy = s;
    } else if (s.kind === "window") {
      if (plan.window) throw new Error(`step "${s.name}": this runtime runs one window step per pipeline`);
      if (!plan.keyBy) throw new Error(`step "${s.name}": a window needs a keyBy before it`);
      plan.window = s;
    } else (plan.window ? plan.post : plan.keyBy ? plan.mid : plan.pre).push(s);
  }
  return plan;
}
