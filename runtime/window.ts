// A window aggregate step over one task's keys: tumbling, hopping and session windows on event time, and the
// global window of a table (an aggregate step without a window: one window per key that never closes), with
// count, sum, min, max, avg, a CEL reduce, latest and topN. A table emits each key a batch changed once, with its
// value at the batch's end (takeUpdates), and may emit a tombstone for a key the TTL expires. Its open windows
// are in the task's window store (on disk, read through the worker's bounded cache: state/window-store.ts). It
// closes them as the watermark passes their end plus grace, calls a record late when every window it belongs to
// has closed, and reports what changed so the caller can write the changelog and then the store. A batch's
// windows are prefetched first (prefetch); then its records are processed synchronously; closing windows and
// sweeping expired ones read the store.

import { type CompiledAggregation, type CompiledWindowStep, windowSpanMs } from "../src/topology/compile.ts";
import { runtimeProgram } from "./cel-budget.ts";
import { celTypeOf, encodeInternal, RecordError } from "./codec.ts";
import { greater, insertTop, orderProblem, type Ranked } from "./order.ts";
import { type CloseState, endKey, endOfKey, STATE_RANGE, storeKey, type TakenChanges, type WindowEntry, type WindowStore } from "./state/window-store.ts";
import { MAX_RECORD_BYTES } from "./stateless.ts";

export { endKey, endOfKey, STATE_RANGE, storeKey };

export type WindowStep = CompiledWindowStep;
type Program = (ctx: Record<string, unknown>) => unknown;

type Entry = WindowEntry;

/**
 * A window's result: its key, its bounds, and the value `{key, windowStart, windowEnd, <aggregations>}`; a
 * table's, `{key, <aggregations>}`, with the greatest event time the key has seen.
 */
export interface WindowResult {
  keyBytes: Buffer;
  start: number;
  end: number;
  value: Record<string, unknown>;
  /** a table's result: the event time it carries on (a window's is its end - 1) */
  eventTime?: number;
}

/** The end of a table's one window per key: past every event time, so the watermark never closes it. */
export const GLOBAL_END = Number.MAX_SAFE_INTEGER;

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
  if (!Number.isFinite(watermark) || step.window.type === "global") return undefined;
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

/** Whether a step's windows hold records' values (a reduce, latest, topN), not a few numbers. */
export function holdsValues(step: WindowStep): boolean {
  return Object.values(step.aggregate).some((a) => a.fn === "reduce" || a.fn === "latest" || a.fn === "topN");
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
  /** whether a key's state holds values of the records (reduce, latest, topN): its size is measured, not guessed */
  private readonly holdsValues: boolean;
  private readonly table: boolean;
  /** a table's keys (store ids) changed since the last takeUpdates */
  private readonly changed = new Set<string>();
  private readonly ttlMs?: number;
  private readonly now: () => number;
  watermark = Number.NEGATIVE_INFINITY;

  constructor(step: WindowStep, store: WindowStore, opts: { ttlMs?: number; now?: () => number } = {}) {
    this.step = step;
    this.store = store;
    this.ttlMs = opts.ttlMs;
    this.now = opts.now ?? Date.now;
    this.committed = { watermark: this.watermark, dropped: this.dropped, close: store.closeState() };
    this.holdsValues = holdsValues(step);
    this.table = step.window.type === "global";
    for (const [name, a] of Object.entries(step.aggregate)) {
      if (a.fn === "count") continue;
      if (a.fn === "reduce") {
        this.programs.set(`${name}.init`, runtimeProgram("reduce", a.init));
        this.programs.set(name, runtimeProgram("reduce", a.expr));
      } else if (a.fn === "latest" || a.fn === "topN") {
        if (a.value !== undefined) this.programs.set(name, runtimeProgram("record", a.value));
        if (a.by !== undefined) this.programs.set(`${name}.by`, runtimeProgram("record", a.by));
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
    return !this.table && end + this.step.graceMs <= this.watermark;
  }

  private expired(e: Entry, now: number): boolean {
    return this.ttlMs !== undefined && now - e.touched > this.ttlMs;
  }

  /** The windows a timestamp falls in (tumbling and hopping). */
  private windowsOf(ts: number): [number, number][] {
    const w = this.step.window;
    if (w.type === "global") return [[0, GLOBAL_END]];
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
      if (a.fn === "latest" || a.fn === "topN") {
        out[name] = this.ranked(name, a.fn, input, ctx);
        continue;
      }
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

  /** A latest's or topN's [by, value] for one record: `by` defaults to its event time, a topN's value to the record's. */
  private ranked(name: string, fn: "latest" | "topN", input: WindowInput, ctx: Record<string, unknown>): Ranked {
    const run = (suffix: string, what: string): unknown => {
      try {
        return this.programs.get(`${name}${suffix}`)?.(ctx);
      } catch (err) {
        throw new RecordError("eval", `aggregate ${name} (${fn}) ${what}: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}`);
      }
    };
    const by = this.programs.has(`${name}.by`) ? run(".by", "by") : BigInt(input.ts);
    const value = this.programs.has(name) ? run("", "value") : input.value;
    const bad = orderProblem(by) ?? numberProblem(by);
    if (bad) throw new RecordError("eval", `aggregate ${name} (${fn}): ${bad}`);
    const badValue = numberProblem(value);
    if (badValue) throw new RecordError("eval", `aggregate ${name} (${fn}): the value ${badValue}`);
    return [by, value];
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
          break; // its size is checked with the window's (fitsChangelog)
        }
        case "latest":
          next[name] = greater(cur as Ranked | undefined, contrib[name] as Ranked);
          break;
        case "topN":
          next[name] = insertTop((cur as Ranked[] | undefined) ?? [], contrib[name] as Ranked, a.n);
          break;
      }
    }
    return this.checked(next);
  }

  /**
   * Refuses (kind eval) an aggregate that holds records' values and would outgrow MAX_AGGREGATE_BYTES. Called only
   * when the window's whole state is larger than that: one encoding of the window per record checks the rest.
   */
  private fitsAggregates(acc: Record<string, unknown>): void {
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      if (a.fn !== "reduce" && a.fn !== "latest" && a.fn !== "topN") continue;
      const size = encodeInternal(acc[name]).length;
      if (size > MAX_AGGREGATE_BYTES)
        throw new RecordError(
          "eval",
          `aggregate ${name} (${a.fn}): the result would be ${size} bytes, over the ${MAX_AGGREGATE_BYTES} a window's state may hold`,
        );
    }
  }

  /**
   * The aggregates, once each is one a reload gives back unchanged and the sink can write: a record whose
   * contribution would make one infinite, NaN or an int past int64 is refused (kind eval), and its windows keep
   * their values.
   */
  private checked(acc: Record<string, unknown>): Record<string, unknown> {
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      const v = acc[name];
      if (a.fn === "latest" || a.fn === "topN") continue; // checked as each record's part came in
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
        case "latest":
          out[name] = greater(x as Ranked, y as Ranked);
          break;
        case "topN": {
          let top = x as Ranked[];
          for (const r of y as Ranked[]) top = insertTop(top, r, agg.n);
          out[name] = top;
          break;
        }
        case "reduce":
          throw new Error("unreachable: session windows refuse reduce");
      }
    }
    return this.checked(out);
  }

  private result(e: Entry): WindowResult {
    const value: Record<string, unknown> = this.table ? { key: e.key } : { key: e.key, windowStart: BigInt(e.start), windowEnd: BigInt(e.end) };
    for (const [name, a] of Object.entries(this.step.aggregate)) {
      const v = e.acc[name];
      if (a.fn === "avg") value[name] = (v as [number, bigint])[0] / Number((v as [number, bigint])[1]);
      else if (a.fn === "latest") value[name] = (v as Ranked)[1];
      else if (a.fn === "topN") value[name] = (v as Ranked[]).map((r) => r[1]);
      else value[name] = v;
    }
    return { keyBytes: e.keyBytes, start: e.start, end: e.end, value, ...(this.table ? { eventTime: e.ev ?? 0 } : {}) };
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
      const size = this.fitsChangelog(e);
      const id = storeKey(end, start, input.keyBytes).toString("latin1");
      for (const s of merged) {
        const old = storeKey(s.end, s.start, s.keyBytes).toString("latin1");
        if (old !== id) this.store.delete(old);
      }
      this.store.put(id, e, size);
      if (this.step.emit === "onUpdate") results.push(this.result(e));
      return { late: false, results };
    }
    const updated: [string, Entry, number | undefined, boolean][] = [];
    for (const [start, end] of windows) {
      const id = storeKey(end, start, input.keyBytes).toString("latin1");
      const cur = this.store.get(id);
      const live = cur && !this.expired(cur, now) ? cur : undefined;
      const e: Entry = { key: input.key, keyBytes: input.keyBytes, start, end, acc: this.fold(live?.acc ?? {}, contrib, input), touched: now };
      if (this.table) e.ev = Math.max(live?.ev ?? input.ts, input.ts);
      updated.push([id, e, this.fitsChangelog(e), live !== undefined && this.sameValues(live.acc, e.acc)]);
    }
    for (const [id, e, size, same] of updated) {
      this.store.put(id, e, size);
      if (this.step.emit === "onUpdate") results.push(this.result(e));
      else if (this.step.emit === "onChange" && !same) this.changed.add(id);
    }
    return { late: false, results };
  }

  /**
   * Whether a record left every aggregate as it was: a max below the max, a bid outside a topN, a sum of 0. A
   * table's key then has no change to emit (it is still written, as updated now, for its TTL). A latest or
   * topN that did not change is the same object; numbers compare by value.
   */
  private sameValues(before: Record<string, unknown>, after: Record<string, unknown>): boolean {
    for (const name in this.step.aggregate) if (before[name] !== after[name]) return false;
    return true;
  }

  /**
   * Refuses (kind encode) a window whose changelog record would be larger than a broker takes: the write would
   * fail the whole batch, and the batch would fail the same way at every retry. Without a reduce, latest or
   * topN the value is a few numbers and the key twice, so the estimate needs no encoding; with one, gives the
   * encoded size, which the cache counts the window by, and refuses first (kind eval) an aggregate over
   * MAX_AGGREGATE_BYTES.
   */
  private fitsChangelog(e: Entry): number | undefined {
    const keyBytes = e.keyBytes.length + 17;
    const encoded = this.holdsValues ? encodeInternal({ k: e.key, a: e.acc, t: e.touched }).length : undefined;
    if (encoded !== undefined && encoded > MAX_AGGREGATE_BYTES) this.fitsAggregates(e.acc);
    const size = encoded !== undefined ? keyBytes + encoded : keyBytes + Buffer.byteLength(e.key ?? "") + 64 * (Object.keys(this.step.aggregate).length + 1);
    if (size > MAX_RECORD_BYTES)
      throw new RecordError("encode", `the window's state record would be ${size} bytes, over the ${MAX_RECORD_BYTES}-byte limit for one changelog record`);
    return encoded;
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
    if (this.table) return []; // a table's windows never close
    return this.close(this.closeLimit(watermark), max);
  }

  /**
   * A table's keys that changed since the last call, once each, with their values now: the batch's updates
   * de-duplicated, as Kafka Streams' cache flushes a KTable's on commit. A key the TTL expired meanwhile is left
   * out (its tombstone, if asked for, comes from sweep).
   */
  takeUpdates(): WindowResult[] {
    if (this.changed.size === 0) return [];
    const now = this.now();
    const out: WindowResult[] = [];
    for (const id of this.changed) {
      const e = this.store.get(id);
      if (e && !this.expired(e, now)) out.push(this.result(e));
    }
    this.changed.clear();
    return out;
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
   * Deletes windows (or a table's keys) idle for longer than the TTL, a part of the store per call
   * (SWEEP_BUDGET); their changelog tombstones go out with the next changes. An expired window is never read
   * meanwhile. Gives how many it deleted, and, when the step writes tombstones to the sink, the results of the
   * keys it deleted as they last were.
   */
  async sweep(): Promise<{ deleted: number; tombstones: WindowResult[] }> {
    if (this.ttlMs === undefined) return { deleted: 0, tombstones: [] };
    const now = this.now();
    const expired = await this.store.sweep((e) => this.expired(e, now), SWEEP_BUDGET);
    return { deleted: expired.length, tombstones: this.step.emitTombstones ? expired.map((e) => this.result(e)) : [] };
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
    this.changed.clear();
    this.watermark = this.committed.watermark;
    this.dropped = this.committed.dropped;
    this.store.rollback(this.committed.close);
  }
}
