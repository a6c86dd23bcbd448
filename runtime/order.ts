// The order of `latest` and `topN` (window.ts): records are ranked by a `by` value (a number, string, bytes,
// timestamp or bool, or a list of those compared in turn, as SQL orders by several columns), and records of
// equal `by` by their values' internal encoding. So the value kept never depends on the order records are read
// in: a replayed backlog, read in another interleaving of its source partitions, keeps the same one.
import { celTypeOf, encodeInternal, RecordError } from "./codec.ts";

/** A `by` and the value it ranks, as a latest or topN keeps them. */
export type Ranked = [by: unknown, value: unknown];

function kindOf(v: unknown): string {
  const t = celTypeOf(v);
  return t === "int" || t === "double" ? "number" : t;
}

/** Why a `by` cannot rank records, or undefined: a map, a null, a NaN, or a list holding one. */
export function orderProblem(by: unknown, depth = 0): string | undefined {
  const kind = kindOf(by);
  if (kind === "null" || kind === "map") return `\`by\` gave a ${kind}, which has no order`;
  if (typeof by === "number" && Number.isNaN(by)) return "`by` gave NaN, which has no order";
  if (Array.isArray(by)) {
    if (depth > 0) return "`by` gave a list inside a list";
    for (const x of by) {
      const p = orderProblem(x, depth + 1);
      if (p) return p;
    }
  }
  return undefined;
}

/**
 * Compares two `by` values: numbers by value (an int and a double too), strings by UTF-16 code unit, bytes
 * bytewise, timestamps by time, false before true, lists element by element (a shorter one that is a prefix
 * first). Two of different kinds cannot be ranked: a RecordError (eval), so the record goes to the dead letters.
 */
export function compareBy(a: unknown, b: unknown): number {
  const ka = kindOf(a);
  const kb = kindOf(b);
  if (ka !== kb) throw new RecordError("eval", `\`by\` gave a ${celTypeOf(b)} where another record's gave a ${celTypeOf(a)}: they cannot be ordered`);
  switch (ka) {
    case "number": {
      if (typeof a === "bigint" && typeof b === "bigint") return a < b ? -1 : a > b ? 1 : 0;
      const x = Number(a);
      const y = Number(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case "string":
      return (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0;
    case "bytes":
      return Buffer.compare(a as Uint8Array, b as Uint8Array);
    case "timestamp":
      return (a as Date).getTime() - (b as Date).getTime();
    case "bool":
      return Number(a) - Number(b);
    case "list": {
      const x = a as unknown[];
      const y = b as unknown[];
      for (let i = 0; i < Math.min(x.length, y.length); i++) {
        const c = compareBy(x[i], y[i]);
        if (c !== 0) return c;
      }
      return x.length - y.length;
    }
    default:
      throw new RecordError("eval", `\`by\` gave a ${ka}, which has no order`);
  }
}

/** Compares ranked values: by `by`, then, for equal `by`, by the values' internal encoding, bytewise. */
export function compareRanked(a: Ranked, b: Ranked): number {
  const c = compareBy(a[0], b[0]);
  if (c !== 0) return c;
  return Buffer.compare(encodeInternal(a[1]), encodeInternal(b[1]));
}

/** The greater of two ranked values (latest). */
export function greater(a: Ranked | undefined, b: Ranked): Ranked {
  return a === undefined || compareRanked(b, a) > 0 ? b : a;
}

/** `top` (greatest first, at most n) with `x` in its place, the smallest dropped past n: a new list. */
export function insertTop(top: readonly Ranked[], x: Ranked, n: number): Ranked[] {
  let i = top.length;
  while (i > 0 && compareRanked(x, top[i - 1] as Ranked) > 0) i--;
  if (i >= n) return top as Ranked[];
  const out = [...top.slice(0, i), x, ...top.slice(i)];
  if (out.length > n) out.length = n;
  return out;
}
