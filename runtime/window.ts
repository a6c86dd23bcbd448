// A window aggregate step over one task's keys: tumbling, hopping and session windows on event time, with
// count, sum, min, max, avg and a CEL reduce. Its open windows are in the task's window store (on disk, read
// through the worker's bounded cache: state/window-store.ts). It closes them as the watermark passes their end
// plus grace, calls a record late when every window it belongs to has closed, and reports what changed so the
// caller can write the changelog and then the store. A batch's windows are prefetched first (prefetch); then
// its records are processed synchronously; closing windows and sweeping expired ones read the store.

import { type CompiledAggregation, type CompiledWindowStep, windowSpanMs } from "../src/topology/compile.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, encodeInternal, RecordError } from "./codec.ts";
import { type CloseState, endKey, endOfKey, STATE_RANGE, storeKey, type TakenChanges, type WindowEntry, type WindowStore } from "./state/window-store.ts";
import { MAX_RECORD_BYTES } from "./stateless.ts";

export { endKey, endOfKey, STATE_RANGE, storeKey };

export type WindowStep = CompiledWindowStep;
type Program = (ctx: Record<string, unknown>) => unknown;

type Entry = WindowEntry;

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

/** Open windows a sweep reads at most per call: a sweep of a large store goes a part at a time. */
export const SWEEP_BUDGET = 10_000;

/** Window results one call of advance or closeMore gives at most: a watermark that closes millions of windows
 * closes them over many batches, in bounded memory. */
export const CLOSE_BATCH = 5_000;

/** What a commit established: a discarded batch goes back to it. */
interface Committed {
  watermark: number;
  dropped: number;
  close: CloseState;
}

export class WindowOperator {
  readonly step: WindowStep;
  private readonly store: WindowStore;
  /** the end below which the store's segments were dropped (or are to be, once the changes are committed) */
  private dropped = Number.NEGATIVE_INFINITY;
  private committed: Committed;
  private readonly programs = new Map<string, Program>();
  private readonly hasReduce: boolean;
  private readonly ttlMs?: number;
  private readonly now: () => number;
  watermark = Number.NEGATIVE_INFINITY;

  constructor(step: WindowStep, store: WindowStore, opts: { ttlMs?: number; now?: () => number } = {}) {
    this.step = step;
    this.store = store;
    this.ttlMs = opts.ttlMs;
    this.now = opts.now ?? Date.now;
    this.committed = { watermark: this.watermark, dropped: this.dropped, close: store.closeState() };
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

  /** Open windows in the cache, for tests. */
  get cached(): number {
    return this.store.cached;
  }

  /** The end below which windows are closed at watermark `wm`: those that end at or before wm - grace. */
  private closeLimit(wm: number): number {
    return wm === Number.NEGATIVE_INFINITY ? wm : wm - this.step.graceMs + 1;
  }

  /**
   * Starts from a watermark that a restore read: the windows it closed are closed (their results went out
   * before) and stay in the store only until their segment goes.
   */
  resume(watermark: number, closingFrom?: string): void {
    this.watermark = watermark;
    this.store.resume(this.closeLimit(watermark), closingFrom);
    this.committed = { watermark, dropped: this.dropped, close: this.store.closeState() };
  }

  /** True while windows the watermark closed have yet to come out (closeMore). */
  get closing(): boolean {
    return this.store.closing;
  }

  /** While closing: the store key it has got to (saved with the changes, so that a restart goes on from it). */
  get closingFrom(): string | undefined {
    return this.store.closingFrom;
  }

  /** Reads into the cache every window these records may update: before process, once per batch. */
  async prefetch(inputs: { keyBytes: Buffer; ts: number }[]): Promise<void> {
    if (this.step.window.type === "session") {
      await this.store.prefetchSessions(inputs.map((i) => i.keyBytes));
      return;
    }
    const ids: string[] = [];
    for (const i of inputs)
      for (const [start, end] of this.windowsOf(i.ts)) if (!this.closed(end)) ids.push(storeKey(end, start, i.keyBytes).toString("latin1"));
    await this.store.prefetch(ids);
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
      const merged: Entry[] = [];
      for (const s of this.store.sessionsOf(input.keyBytes)) {
        if (this.expired(s, now) || this.closed(s.end)) continue; // never read; the sweeper removes it
        if (s.start < end && start < s.end) merged.push(s);
      }
      merged.sort((a, b) => a.end - b.end || a.start - b.start);
      for (const s of merged) {
        start = Math.min(start, s.start);
        end = Math.max(end, s.end);
        acc = this.merge(acc, s.acc);
      }
      acc = this.fold(acc, contrib, input);
      const e: Entry = { key: input.key, keyBytes: input.keyBytes, start, end, acc, touched: now };
      this.fitsChangelog(e);
      const id = storeKey(end, start, input.keyBytes).toString("latin1");
      for (const s of merged) {
        const old = storeKey(s.end, s.start, s.keyBytes).toString("latin1");
        if (old !== id) this.store.delete(old);
      }
      this.store.put(id, e);
      if (this.step.emit === "onUpdate") results.push(this.result(e));
      return { late: false, results };
    }
    const updated: [string, Entry][] = [];
    for (const [start, end] of windows) {
      const id = storeKey(end, start, input.keyBytes).toString("latin1");
      const cur = this.store.get(id);
      const base = cur && !this.expired(cur, now) ? cur.acc : {};
      const e: Entry = { key: input.key, keyBytes: input.keyBytes, start, end, acc: this.fold(base, contrib, input), touched: now };
      this.fitsChangelog(e);
      updated.push([id, e]);
    }
    for (const [id, e] of updated) {
      this.store.put(id, e);
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
   * Moves the watermark forward (never back) and closes what it passed: on-close results come back in order,
   * at most `max` (CLOSE_BATCH) per call; closeMore gives the rest. A closed window leaves the cache with no
   * delete of its own: its segment is dropped whole once every window in it has closed and come out
   * (takeChanges says where).
   */
  async advance(watermark: number, max = CLOSE_BATCH): Promise<WindowResult[]> {
    if (!(watermark > this.watermark)) return this.closeMore(max);
    this.watermark = watermark;
    return this.close(this.closeLimit(watermark), max);
  }

  /** The next windows that the watermark closed and that have not come out yet: at most `max`. */
  closeMore(max = CLOSE_BATCH): Promise<WindowResult[]> {
    return this.closing ? this.close(this.closeLimit(this.watermark), max) : Promise.resolve([]);
  }

  private async close(limit: number, max: number): Promise<WindowResult[]> {
    const closing = await this.store.closeBefore(limit, max);
    if (this.step.emit !== "onWindowClose") return [];
    const now = this.now();
    const out: WindowResult[] = [];
    for (const [, e] of closing) if (!this.expired(e, now)) out.push(this.result(e));
    return out;
  }

  /**
   * Deletes windows idle for longer than the TTL, a part of the store per call (SWEEP_BUDGET); their tombstones
   * go out with the next changes. An expired window is never read meanwhile.
   */
  async sweep(): Promise<number> {
    if (this.ttlMs === undefined) return 0;
    const now = this.now();
    return this.store.sweep((e) => this.expired(e, now), SWEEP_BUDGET);
  }

  /**
   * What changed since the last call: store puts and deletes, in the store's key encoding (the changelog's
   * records), `dropBefore` when more segments have closed (every stored window that ends before it goes, by one
   * range delete), and `apply`, which writes the changes to the store once they are committed.
   */
  takeChanges(): TakenChanges & { dropBefore?: number } {
    const taken = this.store.takeChanges();
    // a segment goes once its windows have all come out, not only closed
    const before = this.closing ? undefined : droppableBefore(this.step, this.watermark);
    const drop = before !== undefined && before > this.dropped ? { dropBefore: before } : {};
    if (drop.dropBefore !== undefined) this.dropped = drop.dropBefore;
    const committed = { watermark: this.watermark, dropped: this.dropped, close: this.store.closeState() };
    return {
      ...taken,
      ...drop,
      apply: async () => {
        await taken.apply();
        this.committed = committed;
      },
    };
  }

  /**
   * Drops what the batches since the last commit did: their changes, their watermark, the windows they closed
   * (open again, to be closed again when the batches are read again).
   */
  rollback(): void {
    this.watermark = this.committed.watermark;
    this.dropped = this.committed.dropped;
    this.store.rollback(this.committed.close);
  }
}
