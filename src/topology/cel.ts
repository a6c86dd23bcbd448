// CEL for pipeline steps: typed environments, structural limits, and errors with line and column.
import { Environment } from "@marcbachmann/cel-js";

/** Parse-time limits: an expression is small, shallow, and nests at most two comprehensions. */
export const CEL_LIMITS = { maxAstNodes: 512, maxDepth: 32, maxListElements: 256, maxMapEntries: 256, maxCallArguments: 16 } as const;
export const MAX_COMPREHENSION_NESTING = 2;
const COMPREHENSIONS = new Set(["all", "exists", "exists_one", "map", "filter"]);

/** What an expression may read. */
export type Scope = "record" | "eventTime" | "aggregate" | "reduce";

function environment(scope: Scope): Environment {
  const env = new Environment({ limits: CEL_LIMITS, homogeneousAggregateLiterals: false });
  if (scope === "reduce") return env.registerVariable("acc", "dyn").registerVariable("value", "dyn").registerVariable("key", "dyn");
  return env
    .registerVariable("key", "dyn")
    .registerVariable("value", "dyn")
    .registerVariable("headers", "map<string, string>")
    .registerVariable("topic", "string")
    .registerVariable("partition", "int")
    .registerVariable("offset", "int")
    .registerVariable("timestamp", "google.protobuf.Timestamp");
}

const environments = new Map<Scope, Environment>();
export function celEnvironment(scope: Scope): Environment {
  let env = environments.get(scope);
  if (!env) {
    env = environment(scope);
    environments.set(scope, env);
  }
  return env;
}

export interface CelProblem {
  message: string;
  /** 1-based */
  line: number;
  /** 1-based */
  column: number;
}

export type CelCheck = { ok: true; type: string } | { ok: false; problem: CelProblem };

function position(expr: string, pos: number): { line: number; column: number } {
  const before = expr.slice(0, Math.max(0, pos));
  const lines = before.split("\n");
  return { line: lines.length, column: (lines.at(-1)?.length ?? 0) + 1 };
}

interface AstNode {
  op: string;
  args: unknown;
  pos?: number;
}

function isNode(x: unknown): x is AstNode {
  return typeof x === "object" && x !== null && "op" in x;
}

/** The deepest nesting of comprehension macros, with the position of the deepest one. */
export function comprehensionDepth(node: unknown): { depth: number; pos: number } {
  if (Array.isArray(node)) {
    let best = { depth: 0, pos: 0 };
    for (const n of node) {
      const d = comprehensionDepth(n);
      if (d.depth > best.depth) best = d;
    }
    return best;
  }
  if (!isNode(node)) return { depth: 0, pos: 0 };
  const inner = comprehensionDepth(node.args);
  const args = node.args as unknown[];
  const isComprehension = node.op === "rcall" && Array.isArray(args) && COMPREHENSIONS.has(String(args[0])) && Array.isArray(args[2]) && args[2].length >= 2;
  return isComprehension ? { depth: inner.depth + 1, pos: inner.depth === 0 ? (node.pos ?? 0) : inner.pos } : inner;
}

function firstLine(message: string): string {
  return message.split("\n")[0]?.trim() ?? message;
}

/** Parses and type-checks an expression; a problem carries the line and column it points at. */
export function checkExpression(expr: string, scope: Scope): CelCheck {
  const env = celEnvironment(scope);
  const result = env.check(expr);
  if (!result.valid) {
    const err = result.error as Error & { node?: { pos?: number } };
    const pos = err.node?.pos ?? 0;
    return { ok: false, problem: { message: firstLine(err.message), ...position(expr, pos) } };
  }
  const depth = comprehensionDepth(env.parse(expr).ast);
  if (depth.depth > MAX_COMPREHENSION_NESTING) {
    return {
      ok: false,
      problem: { message: `comprehensions nest ${depth.depth} deep; at most ${MAX_COMPREHENSION_NESTING} are allowed`, ...position(expr, depth.pos) },
    };
  }
  return { ok: true, type: String(result.type) };
}
