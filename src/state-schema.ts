// State-schema compatibility between the topology a pipeline ran and the one its spec now asks for. A window
// step's state (its changelog topic and its stores) is laid out by its window shape, aggregations, key and
// format; the compiler hashes those. A step whose hash changed cannot read the state it left, so the change is
// refused until the user asks for a reset, as Flink refuses a savepoint whose state it cannot map.
import { type CompiledTopology, statefulSteps } from "./topology/compile.ts";

export interface StateSchemaChange {
  step: string;
  from: string;
  to: string;
  changelogTopic: string;
}

/** The state-schema hash of each window, table and join step. */
export function stateSchemasOf(t: CompiledTopology): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of statefulSteps(t)) out[s.name] = s.stateSchemaHash;
  return out;
}

/** The stateful steps whose state, as last accepted, the topology cannot read. Nothing accepted yet: none. */
export function incompatibleSteps(accepted: Record<string, string> | undefined, t: CompiledTopology): StateSchemaChange[] {
  const out: StateSchemaChange[] = [];
  for (const s of statefulSteps(t)) {
    const from = accepted?.[s.name];
    if (from !== undefined && from !== s.stateSchemaHash) out.push({ step: s.name, from, to: s.stateSchemaHash, changelogTopic: s.changelogTopic });
  }
  return out;
}

/**
 * What the status keeps: the hashes of today's steps over those accepted before. A removed step keeps its
 * entry, because its changelog topic keeps its state: bringing the step back changed is still a change.
 */
export function acceptedSchemas(accepted: Record<string, string> | undefined, t: CompiledTopology): Record<string, string> {
  return { ...accepted, ...stateSchemasOf(t) };
}

/** A reset is asked for when the spec carries a token that no reset has used yet. */
export function resetRequested(specToken: string | undefined, doneToken: string | undefined): boolean {
  return specToken !== undefined && specToken !== "" && specToken !== doneToken;
}
