// A window aggregate step over one task's keys: tumbling, hopping and session windows on event time, with
// count, sum, min, max, avg and a CEL reduce. It holds the task's open windows, closes them as the watermark
// passes their end plus grace, calls a record late when every window it belongs to has closed, and reports
// what changed so the caller can write the store and the changelog. It does no I/O.

import { type CompiledAggregation, type CompiledWindowStep, windowSpanMs } from "../src/topology/compile.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, decodeInternal, encodeInternal, RecordError } from "./codec.ts";
import { MAX_RECORD_BYTES } from "./stateless.ts";

export type WindowStep = CompiledWindowStep;
type Program = (ctx: Record<string, unknown>) => unknown;

interface Entry {
  key: string | null;
  keyBytes: Buffer;
  start: number;
  end: number;
  acc: Record<string, unknown>;
  /** processing time of the last update, for the TTL */
  touched: number;
}

/** A window's result: its key, its bounds, and the value `{key, windowStart, windowEnd, <aggregations>}`. */
export interface WindowResult {
  keyBytes: Buffer;
  start: number;
  end: number;
  value: Record<string, unknown>;
}

export interface WindowInput {
  key: string | null;
  keyBytes: Buffer;
  value: unknown;
  /** what the aggregation expressions see besides value and key */
  ctx: Record<string, unknown>;
  /** event time, ms */
  ts: number;
}

const STATE_PREFIX = 0x01;
const ORDER_SHIFT = 2n ** 63n;

/** Store keys sort by window end, then start, then key: closing windows is a scan from the front. */
export function storeKey(end: number, start: number, keyBytes: Buffer): Buffer {
  const b = Buffer.allocUnsafe(17 + keyBytes.length);
  b[0] = STATE_PREFIX;
  b.writeBigUInt64BE(BigInt(end) + ORDER_SHIFT, 1);
  b.writeBigUInt64BE(BigInt(start) + ORDER_SHIFT, 9);
  keyBytes.copy(b, 17);
  return b;
}

export const STATE_RANGE = { gte: Buffer.from([STATE_PREFIX]), lt: Buffer.from([STATE_PREFIX + 1]) };

/** The first store key of the windows that end at `end`: every key below it is a window that ends earlier. */
export function endKey(end: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b[0] = STATE_PREFIX;
  b.writeBigUInt64BE(BigInt(end) + ORDER_SHIFT, 1);
  return b;
}

/** The window end a store key holds. */
export function endOfKey(key: Buffer): number {
  return Number(key.readBigUInt64BE(1) - ORDER_SHIFT);
}

/**
 * The store's time segments: the windows whose ends fall in [k * segmentMs, (k + 1) * segmentMs) form segment
 * k, a contiguous key range, since keys sort by end. As in Kafka Streams, a segment is half the span, and at
 * least a minute, so that few segments are open at once and each is dropped whole, by one range delete.
 */
export function segmentMs(step: WindowStep): number {
  return Math.max(Math.ceil(windowSpanMs(step) / 2), 60_000);
}

/**
 * The end below which every window has closed, in whole segments: segment k is dropped once its last possible
 * window, ending at (k + 1) * segmentMs - 1, has closed (end + grace <= watermark). Undefined before the
 * watermark is known.
 */
export function droppableBefore(step: WindowStep, watermark: number): number | undefined {
  if (!Number.isFinite(watermark)) return undefined;
  const seg = segmentMs(step);
  return Math.floor((watermark - step.graceMs + 1) / seg) * seg;
}

function isNumber(x: unknown): x is bigint | number {
  return typeof x === "bigint" || typeof x === "number";
}

function add(a: bigint | number, b: bigint | number): bigint | number {
  if (typeof a === "bigint" && typeof b === "bigint") return a + b;
  return Number(a) + Number(b); // int and double together: the sum is a double
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** A reduce result larger than this, as the changelog stores it, is refused: it would outgrow a Kafka record. */
export const MAX_AGGREGATE_BYTES = 256 * 1024;

/**
 * Why a number cannot be an aggregate's value, or undefined: a double that is not finite (a sum restarting
 * after a reload, a min or max stuck at NaN), or an int outside int64 (CEL's int). Lists and maps are walked,
 * to a depth where a reduce's accumulator would be absurd anyway.
 */
export function numberProblem(v: unknown, depth = 0): string | undefined {
  if (typeof v === "number") return Number.isFinite(v) ? undefined : `${v} is not a finite number`;
  if (typeof v === "bigint") return v < INT64_MIN || v > INT64_MAX ? `${v} overflows int64` : undefined;
  if (depth > 32 || v === null || typeof v !== "object" || v instanceof Uint8Array || v instanceof Date) return undefined;
  const items = Array.isArray(v) ? v : v instanceof Map ? [...v.values()] : Object.values(v);
  for (const x of items) {
    const p = numberProblem(x, depth + 1);
    if (p) return p;
  }
  return undefined;
}

export class WindowOperator {
  readonly step: WindowStep;
  private readonly entries = new Map<string, Entry>();
  /** session windows: the open sessions of each key */
  private readonly byKey = new Map<string, Set<string>>();
  private readonly dirty = new Set<string>();
  private readonly removed = new Set<string>();
  /** the end below which the store's segments were dropped (or are to be, at the next takeChanges) */
  private dropped = Number.NEGATIVE_INFINITY;
  private dropPending = false;
  private readonly programs = new Map<string, Program>();
  private readonly hasReduce: boolean;
  private readonly ttlMs?: number;
  private readonly now: () => number;
  watermark = Number.NEGATIVE_INFINITY;

  constructor(step: WindowStep, opts: { ttlMs?: number; now?: () => number } = {}) {
    this.step = step;
    this.ttlMs = opts.ttlMs;
    this.now = opts.now ?? Date.now;
    this.hasReduce = Object.values(step.aggregate).some((a) => a.fn === "reduce");
    for (const [name, a] of Object.entries(step.aggregate)) {
      if (a.fn === "count") continue;
      if (a.fn === "reduce") {
        this.programs.set(`${name}.init`, runtimeProgram("reduce", a.init));
        this.programs.set(name, runtimeProgram("reduce", a.expr));
      } else this.programs.set(name, runtimeProgram("record", a.expr));
    }
    if (step.window.type === "session" && Object.values(step.aggregate).some((a) => a.fn === "reduce"))
      throw new Error(`step "${step.name}": a session window cannot use reduce, because sessions merge and a reduce has no merge`);
  }

  /** Open windows held, for metrics and tests. */
  get size(): number {
    return this.entries.size;
  }

  private closed(end: number): boolean {
    return end + this.step.graceMs <= this.watermark;
  }

  private expired(e: Entry, now: number): boolean {
    return this.ttlMs !== undefined && now - e.touched > this.ttlMs;
  }

  /** The windows a timestamp falls in (tumbling and hopping). */
  private windowsOf(ts: number): [number, number][] {
    const w = this.step.window;
    if (w.type === "tumbling") {
      const start = Math.floor(ts / w.sizeMs) * w.sizeMs;
      return [[start, start + w.sizeMs]];
    }
    if (w.type === "hopping") {
      const out: [number, number][] = [];
      const last = Math.floor(ts / w.advanceMs) * w.advanceMs;
      for (let start = last; start > ts - w.sizeMs; start -= w.advanceMs) out.push([start, start + w.sizeMs]);
      return out.reverse();
    }
    return [[ts, ts + w.gapMs]];
  }

  /** What one record adds to each aggregation; evaluated once, before any window changes. */
  private contributions(input: WindowInput): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const ctx = { ...input.ctx, key: input.key, value: input.value };
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      if (a.fn === "count" || a.fn === "reduce") continue;
      let x: unknown;
      try {
        x = this.programs.get(name)?.(ctx);
      } catch (err) {
        throw new RecordError("eval", `aggregate ${name} (${a.fn}): ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}`);
      }
      if (!isNumber(x)) throw new RecordError("eval", `aggregate ${name} (${a.fn}) needs a number, got ${celTypeOf(x)}`);
      const bad = numberProblem(x);
      if (bad) throw new RecordError("eval", `aggregate ${name} (${a.fn}): the record's value ${bad}`);
      out[name] = x;
    }
    return out;
  }

  private fold(acc: Record<string, unknown>, contrib: Record<string, unknown>, input: WindowInput): Record<string, unknown> {
    const next: Record<string, unknown> = { ...acc };
    for (const [name, a] of Object.entries(this.step.aggregate) as [string, CompiledAggregation][]) {
      const cur = acc[name];
      const x = contrib[name] as bigint | number;
      switch (a.fn) {
        case "count":
          next[name] = ((cur as bigint | undefined) ?? 0n) + 1n;
          break;
        case "sum":
          next[name] = cur === undefined ? x : add(cur as bigint | number, x);
          break;
        case "min":
          next[name] = cur === undefined || x < (cur as bigint | number) ? x : cur;
          break;
        case "max":
          next[name] = cur === undefined || x > (cur as bigint | number) ? x : cur;
          break;
        case "avg": {
          const [s, c] = (cur as [number, bigint] | undefined) ?? [0, 0n];
          next[name] = [s + Number(x), c + 1n];
          break;
        }
        case "reduce": {
          const scope = { key: input.key, value: input.value };
          try {
            const start = cur === undefined ? this.programs.get(`${name}.init`)?.({ ...scope, acc: null }) : cur;
            next[name] = this.programs.get(name)?.({ ...scope, acc: start });
          } catch (err) {
            throw new RecordError("eval", `aggregate ${name} (reduce): ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}`);
          }
          const size = encodeInternal(next[name]).length;
          if (size > MAX_AGGREGATE_BYTES)
            throw new RecordError(
              "eval",
              `aggregate ${name} (reduce): the result would be ${size} bytes, over the ${MAX_AGGREGATE_BYTES} a window's state may hold`,
            );
          break;
        }
      }
    }
    return this.checked(next);
  }

  /**
   * The aggregates, once each is one a reload gives back unchanged and the sink can write: a record whose
   * contribution would make one infinite, NaN or an int past int64 is refused (kind eval), and its windows keep
   * their values.
   */
  private checked(acc: Record<string, unknown>): Record<string, unknown> {
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      const v = acc[name];
      const bad = numberProblem(a.fn === "avg" && Array.isArray(v) ? v[0] : v);
      if (bad) throw new RecordError("eval", `aggregate ${name} (${a.fn}): the result ${bad}`);
    }
    return acc;
  }

  private merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [name, agg] of Object.entries(this.step.aggregate)) {
      const x = a[name];
      const y = b[name];
      if (x === undefined || y === undefined) {
        out[name] = x ?? y;
        continue;
      }
      switch (agg.fn) {
        case "count":
        case "sum":
          out[name] = add(x as bigint | number, y as bigint | number);
          break;
        case "min":
          out[name] = (y as bigint | number) < (x as bigint | number) ? y : x;
          break;
        case "max":
          out[name] = (y as bigint | number) > (x as bigint | number) ? y : x;
          break;
        case "avg": {
          const [s1, c1] = x as [number, bigint];
          const [s2, c2] = y as [number, bigint];
          out[name] = [s1 + s2, c1 + c2];
          break;
        }
        case "reduce":
          throw new Error("unreachable: session windows refuse reduce");
      }
    }
    return this.checked(out);
  }

  private result(e: Entry): WindowResult {
    const value: Record<string, unknown> = { key: e.key, windowStart: BigInt(e.start), windowEnd: BigInt(e.end) };
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      const v = e.acc[name];
      value[name] = a.fn === "avg" ? (v as [number, bigint])[0] / Number((v as [number, bigint])[1]) : v;
    }
    return { keyBytes: e.keyBytes, start: e.start, end: e.end, value };
  }

  private put(id: string, e: Entry): void {
    this.entries.set(id, e);
    this.dirty.add(id);
    this.removed.delete(id);
    if (this.step.window.type === "session") {
      const k = e.keyBytes.toString("latin1");
      let set = this.byKey.get(k);
      if (!set) {
        set = new Set();
        this.byKey.set(k, set);
      }
      set.add(id);
    }
  }

  /** Removes a window whose record must go: a delete, and a tombstone in the changelog. */
  private remove(id: string): void {
    if (!this.forget(id)) return;
    this.removed.add(id);
  }

  /**
   * Removes a window from memory only: a closed one, which goes from the store with its segment and from the
   * changelog with its retention. An update of it not yet written is not written at all.
   */
  private forget(id: string): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    this.dirty.delete(id);
    if (this.step.window.type === "session") {
      const k = e.keyBytes.toString("latin1");
      const set = this.byKey.get(k);
      set?.delete(id);
      if (set?.size === 0) this.byKey.delete(k);
    }
    return true;
  }

  /**
   * Adds a record. It is late when every window it falls in has closed; otherwise it updates the open ones,
   * and with emit onUpdate their new results come back. A RecordError means the record cannot be aggregated
   * (a failing or non-numeric expression), and nothing changed.
   */
  process(input: WindowInput): { late: boolean; results: WindowResult[] } {
    const now = this.now();
    const windows = this.windowsOf(input.ts).filter(([, end]) => !this.closed(end));
    if (windows.length === 0) return { late: true, results: [] };
    const contrib = this.contributions(input);
    const results: WindowResult[] = [];
    if (this.step.window.type === "session") {
      let [start, end] = windows[0] as [number, number];
      let acc: Record<string, unknown> = {};
      const merged: string[] = [];
      for (const id of this.byKey.get(input.keyBytes.toString("latin1")) ?? []) {
        const s = this.entries.get(id) as Entry;
        if (this.expired(s, now)) continue; // never read; the sweeper removes it
        if (s.start < end && start < s.end) merged.push(id);
      }
      for (const id of merged) {
        const s = this.entries.get(id) as Entry;
        start = Math.min(start, s.start);
        end = Math.max(end, s.end);
        acc = this.merge(acc, s.acc);
      }
      acc = this.fold(acc, contrib, input);
      const e: Entry = { key: input.key, keyBytes: input.keyBytes, start, end, acc, touched: now };
      this.fitsChangelog(e);
      for (const id of merged) this.remove(id);
      this.put(storeKey(end, start, input.keyBytes).toString("latin1"), e);
      if (this.step.emit === "onUpdate") results.push(this.result(e));
      return { late: false, results };
    }
    const updated: [string, Entry][] = [];
    for (const [start, end] of windows) {
      const id = storeKey(end, start, input.keyBytes).toString("latin1");
      const cur = this.entries.get(id);
      const base = cur && !this.expired(cur, now) ? cur.acc : {};
      const e: Entry = { key: input.key, keyBytes: input.keyBytes, start, end, acc: this.fold(base, contrib, input), touched: now };
      this.fitsChangelog(e);
      updated.push([id, e]);
    }
    for (const [id, e] of updated) {
      this.put(id, e);
      if (this.step.emit === "onUpdate") results.push(this.result(e));
    }
    return { late: false, results };
  }

  /**
   * Refuses (kind encode) a window whose changelog record would be larger than a broker takes: the write would
   * fail the whole batch, and the batch would fail the same way at every retry. Without a reduce the value is a
   * few numbers and the key twice, so the estimate needs no encoding.
   */
  private fitsChangelog(e: Entry): void {
    const keyBytes = e.keyBytes.length + 17;
    const size = this.hasReduce
      ? keyBytes + encodeInternal({ k: e.key, a: e.acc, t: e.touched }).length
      : keyBytes + Buffer.byteLength(e.key ?? "") + 64 * (Object.keys(this.step.aggregate).length + 1);
    if (size > MAX_RECORD_BYTES)
      throw new RecordError("encode", `the window's state record would be ${size} bytes, over the ${MAX_RECORD_BYTES}-byte limit for one changelog record`);
  }

  /**
   * Moves the watermark forward (never back) and closes what it passed; on-close results come back in order.
   * A closed window leaves memory with no delete of its own: its segment is dropped whole once every window
   * in it has closed (takeChanges says where).
   */
  advance(watermark: number): WindowResult[] {
    if (!(watermark > this.watermark)) return [];
    this.watermark = watermark;
    const closing = [...this.entries].filter(([, e]) => this.closed(e.end)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const now = this.now();
    const out: WindowResult[] = [];
    for (const [id, e] of closing) {
      if (this.step.emit === "onWindowClose" && !this.expired(e, now)) out.push(this.result(e));
      this.forget(id);
    }
    const before = droppableBefore(this.step, watermark);
    if (before !== undefined && before > this.dropped) {
      this.dropped = before;
      this.dropPending = true;
    }
    return out;
  }

  /** Removes entries idle for longer than the TTL; their tombstones go out with the next changes. */
  sweep(): number {
    if (this.ttlMs === undefined) return 0;
    const now = this.now();
    let n = 0;
    for (const [id, e] of [...this.entries]) {
      if (this.expired(e, now)) {
        this.remove(id);
        n++;
      }
    }
    return n;
  }

  /**
   * What changed since the last call: store puts and deletes, in the store's key encoding, and `dropBefore`
   * when more segments have closed: every stored window that ends before it goes, by one range delete.
   */
  takeChanges(): { puts: [Buffer, Buffer][]; deletes: Buffer[]; dropBefore?: number } {
    const puts: [Buffer, Buffer][] = [];
    for (const id of this.dirty) {
      const e = this.entries.get(id) as Entry;
      puts.push([Buffer.from(id, "latin1"), encodeInternal({ k: e.key, a: e.acc, t: e.touched })]);
    }
    const deletes = [...this.removed].map((id) => Buffer.from(id, "latin1"));
    this.dirty.clear();
    this.removed.clear();
    const drop = this.dropPending ? { dropBefore: this.dropped } : {};
    this.dropPending = false;
    return { puts, deletes, ...drop };
  }

  /**
   * Loads one stored window (a restore); it is not a change. A window the watermark has closed stays out: it
   * waits in the store for its segment to be dropped.
   */
  load(key: Buffer, value: Buffer): void {
    const end = endOfKey(key);
    if (this.closed(end)) return;
    const start = Number(key.readBigUInt64BE(9) - ORDER_SHIFT);
    const v = decodeInternal(value) as { k: string | null; a: Record<string, unknown>; t: bigint | number };
    const id = key.toString("latin1");
    this.put(id, { key: v.k, keyBytes: key.subarray(17), start, end, acc: v.a, touched: Number(v.t) });
    this.dirty.delete(id);
  }
}
