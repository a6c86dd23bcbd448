// CEL evaluation is synchronous and the library has no cost budget: an expression that nests comprehensions
// over a record's lists (`value.items.all(a, value.items.all(b, a != b))` over 100,000 items) would run for
// minutes, block the event loop, stop the heartbeats, and move the partition to the next worker, which would
// block on the same record. An expression with a comprehension therefore sees the record through a meter: every
// list element and map entry it reads counts, and past the budget the evaluation stops with an error, so the
// record goes to the DLQ (kind eval) and the worker goes on. Expressions without a comprehension read each
// part of a record a bounded number of times (the AST is bounded at parse time) and run unmetered.
import { celEnvironment, comprehensionDepth, type Scope } from "../src/topology/cel.ts";
import { RecordError } from "./codec.ts";

/** List elements and map entries one evaluation may read; a nested comprehension over 1,000 items reads 10^6. */
export const CEL_READ_BUDGET = 2_000_000;

export type Program = (ctx: Record<string, unknown>) => unknown;

class Meter {
  left = CEL_READ_BUDGET;
  /** the proxies made, with what each stands for */
  readonly targets = new WeakMap<object, object>();
  private on = true;
  stop(): void {
    this.on = false;
  }
  spend(n = 1): void {
    if (!this.on) return;
    this.left -= n;
    if (this.left < 0)
      throw new RecordError("eval", `the expression read more than ${CEL_READ_BUDGET} list elements and map entries of one record: over its evaluation budget`);
  }
}

const INDEX = /^(?:0|[1-9]\d*)$/;

function metered(v: unknown, meter: Meter, seen: WeakMap<object, unknown>): unknown {
  if (v === null || typeof v !== "object") return v;
  const known = seen.get(v);
  if (known) return known;
  let proxy: unknown;
  if (Array.isArray(v)) {
    proxy = new Proxy(v, {
      get(target, p, receiver) {
        if (typeof p === "string" && INDEX.test(p)) {
          meter.spend();
          return metered(target[Number(p)], meter, seen);
        }
        return Reflect.get(target, p, receiver);
      },
    });
  } else if (Object.getPrototypeOf(v) === Object.prototype) {
    proxy = new Proxy(v as Record<string, unknown>, {
      get(target, p, receiver) {
        if (typeof p === "string" && Object.hasOwn(target, p)) {
          meter.spend();
          return metered(target[p], meter, seen);
        }
        return Reflect.get(target, p, receiver);
      },
      ownKeys(target) {
        const keys = Reflect.ownKeys(target);
        meter.spend(keys.length);
        return keys;
      },
    });
  } else if (v instanceof Map) {
    // a Map's entries are read through its methods: its size is what an iteration costs
    meter.spend(v.size);
    return v;
  } else return v; // bytes, timestamps
  seen.set(v, proxy);
  meter.targets.set(proxy as object, v);
  return proxy;
}

/**
 * The result without the meter's proxies: the values they stand for, so that nothing downstream (the sink's
 * encoding, a reduce's accumulator in the next evaluation) reads through them. Copies only what holds one.
 */
function unmetered(v: unknown, meter: Meter, depth = 0): unknown {
  if (v === null || typeof v !== "object") return v;
  const target = meter.targets.get(v);
  if (target) return target;
  if (depth > 64) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const x = unmetered(v[i], meter, depth + 1);
      if (x !== v[i]) out ??= v.slice();
      if (out) out[i] = x;
    }
    return out ?? v;
  }
  if (Object.getPrototypeOf(v) === Object.prototype) {
    let out: Record<string, unknown> | undefined;
    for (const [k, x] of Object.entries(v)) {
      const y = unmetered(x, meter, depth + 1);
      if (y !== x) out ??= { ...(v as Record<string, unknown>) };
      if (out) out[k] = y;
    }
    return out ?? v;
  }
  return v;
}

/**
 * Parses an expression for the runtime. One with a comprehension is metered: each call starts a fresh budget and
 * reads the context through it.
 */
export function runtimeProgram(scope: Scope, expr: string): Program {
  const parsed = celEnvironment(scope).parse(expr) as unknown as Program & { ast: unknown };
  if (comprehensionDepth(parsed.ast).depth === 0) return parsed;
  return (ctx) => {
    const meter = new Meter();
    const seen = new WeakMap<object, unknown>();
    const view: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(ctx)) view[k] = metered(v, meter, seen);
    let result: unknown;
    try {
      result = parsed(view);
    } finally {
      meter.stop();
    }
    return unmetered(result, meter);
  };
}

/**
 * The variables an expression reads: the identifiers in its syntax tree. A comprehension's own variable is among
 * them too, which is harmless: the set says which of the scope's fields a record must be given.
 */
export function namesIn(scope: Scope, expr: string): Set<string> {
  const names = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n);
      return;
    }
    if (typeof node !== "object" || node === null || !("op" in node)) return;
    const { op, args } = node as { op: unknown; args: unknown };
    if (op === "id" && typeof args === "string") names.add(args);
    else walk(args);
  };
  walk((celEnvironment(scope).parse(expr) as unknown as { ast: unknown }).ast);
  return names;
}
