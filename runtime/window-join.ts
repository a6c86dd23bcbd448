// The windowed stream-stream join on event time (issue 18, item 4), one task's part: a record of the stream and
// a record of the join's input, with the same key, join when their event times are at most `within` apart
// (Kafka Streams' JoinWindows, both bounds inclusive; Flink's interval join). Both sides are held until the
// watermark passes their event time, then taken in one order, by event time, then repartition offset, then the
// index of the value within its record: each record meets the other side's records before it in that order and
// no later than `within` behind it. So each pair is joined exactly once, when its later record is taken, and its
// event time is that record's (the later of the two, as Kafka Streams stamps a join result); which topic was read
// first changes neither the pairs nor their times.
//
// A record is kept until the watermark is `within` past it: a record still to come is above the watermark, so
// further than `within` from it. Then it goes, and for a left (or outer) join a stream record (or an input record)
// that met none is emitted alone, with null (or nothing) on the other side, at its own event time, which is below
// the watermark by then: the task forwards its watermark less `within` (as Flink holds back an interval join's
// watermark), so no window after the join takes such a result for late. `grace` lets records that far behind
// the watermark still join: the join works `grace` behind the task's watermark.
//
// State, in the task's store (written after a commit, as join.ts's):
// - by time (0x13): event time, offset, index -> the side and key, to take records in order and find the ones to drop;
// - by key (0x14): side, key, event time, offset, index -> the record, and whether it met one (left and outer).
import { celTypeOf, decodeInternal, encodeInternal } from "./codec.ts";
import { type HeldRecord, type JoinChanges, type JoinOutput, META_RELEASED } from "./join.ts";
import type { Store } from "./store.ts";

const TIME_PREFIX = 0x13;
const KEY_PREFIX = 0x14;
const ORDER_SHIFT = 2n ** 63n;
const TIME_RANGE_END = Buffer.from([TIME_PREFIX + 1]);

export interface WindowJoinStepLike {
  name: string;
  as: string;
  type: "inner" | "left" | "outer";
  withinMs: number;
  graceMs: number;
}

/** The two sides: the stream that reached the join step (0), and the join's input (1). */
export type Side = 0 | 1;

/** A kept record, as the by-key entry holds it. */
export interface Kept {
  r: HeldRecord;
  side: Side;
  matched: boolean;
}

/** Event time, offset and index, each as an ordered 8, 8 and 4 bytes: the order records are taken in. */
function order(r: { eventTime: number; offset: bigint; index: number }): Buffer {
  const b = Buffer.allocUnsafe(20);
  b.writeBigUInt64BE(BigInt(r.eventTime) + ORDER_SHIFT, 0);
  b.writeBigUInt64BE(r.offset + ORDER_SHIFT, 8);
  b.writeUInt32BE(r.index, 16);
  return b;
}

function timeFrom(t: number): Buffer {
  if (t === Number.POSITIVE_INFINITY) return TIME_RANGE_END;
  const b = Buffer.alloc(9);
  b[0] = TIME_PREFIX;
  if (t === Number.NEGATIVE_INFINITY) return b.subarray(0, 1);
  b.writeBigUInt64BE(BigInt(t) + ORDER_SHIFT, 1);
  return b;
}

/** The by-key entries of a side and key: the side, the key's length and the key, then the order. */
export function keyPrefix(side: Side, keyBytes: Buffer): Buffer {
  const b = Buffer.allocUnsafe(6 + keyBytes.length);
  b[0] = KEY_PREFIX;
  b[1] = side;
  b.writeUInt32BE(keyBytes.length, 2);
  keyBytes.copy(b, 6);
  return b;
}

function byKey(side: Side, r: HeldRecord): Buffer {
  return Buffer.concat([keyPrefix(side, r.keyBytes), order(r)]);
}

function encodeKept(k: Kept): Buffer {
  const r = k.r;
  return encodeInternal({ k: r.keyBytes.toString("base64"), v: r.value, h: r.headers, ts: r.timestamp, s: k.side, m: k.matched });
}

function decodeKept(key: Buffer, raw: Buffer): Kept {
  const o = decodeInternal(raw) as { k: string; v: unknown; h: [string, string][]; ts: bigint | number; s: number; m: boolean };
  const at = key.length - 20;
  return {
    r: {
      keyBytes: Buffer.from(o.k, "base64"),
      eventTime: Number(key.readBigUInt64BE(at) - ORDER_SHIFT),
      offset: key.readBigUInt64BE(at + 8) - ORDER_SHIFT,
      index: key.readUInt32BE(at + 16),
      value: o.v,
      headers: o.h,
      timestamp: BigInt(o.ts),
    },
    side: o.s === 1 ? 1 : 0,
    matched: o.m,
  };
}

/** The by-time entry's value: the side, then the key. */
function timeValue(side: Side, keyBytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([side]), keyBytes]);
}

export function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
}

const byId = ([a]: [string, unknown], [b]: [string, unknown]) => (a < b ? -1 : a > b ? 1 : 0);

/** A held record's by-key entry, from its by-time entry: the side and key, then the order. */
function byKeyOf(timeKey: Buffer, timeVal: Buffer): Buffer {
  return Buffer.concat([keyPrefix(timeVal[0] === 1 ? 1 : 0, timeVal.subarray(1)), timeKey.subarray(1)]);
}

/** The group of a by-key entry in the overlay: its side and key. */
export function groupOf(k: Buffer): string {
  return k.subarray(0, 6 + k.readUInt32BE(2)).toString("latin1");
}

/**
 * What the windowed and the table-table joins share: both sides' records held in the task's store until the
 * watermark passes them, then taken in one order; the watermark they were taken up to beside the state; writes
 * kept in an overlay until the changelog has them.
 */
export abstract class HeldJoin {
  abstract readonly step: { name: string };
  protected readonly store: Store;
  /** the watermark records were taken up to */
  protected wm = Number.NEGATIVE_INFINITY;
  private committedWm = Number.NEGATIVE_INFINITY;
  /** the writes since the last takeChanges, read over the store */
  protected readonly pending: Overlay;

  constructor(store: Store) {
    this.store = store;
    this.pending = new Overlay(store);
  }

  /** The watermark records were taken up to: one at or below it is late. */
  get watermark(): number {
    return this.wm;
  }

  async resume(): Promise<void> {
    const [saved] = await this.store.getMany([META_RELEASED]);
    if (saved) this.wm = this.committedWm = Number(decodeInternal(saved));
  }

  /** Nothing to read ahead: the records are read by range when the watermark takes them. */
  async prefetch(_keys: Buffer[]): Promise<void> {}

  /** Nothing expires by processing time. */
  async sweep(): Promise<number> {
    return 0;
  }

  protected hold(side: Side, r: HeldRecord): { late: boolean } {
    if (r.eventTime <= this.wm) return { late: true };
    this.pending.put("t", Buffer.concat([Buffer.from([TIME_PREFIX]), order(r)]), timeValue(side, r.keyBytes));
    this.pending.put(keyPrefix(side, r.keyBytes).toString("latin1"), byKey(side, r), encodeKept({ r, side, matched: false }));
    return { late: false };
  }

  /** A record of the stream that reached the join step. */
  stream(r: HeldRecord): { late: boolean } {
    return this.hold(0, r);
  }

  /** A record of the join's input. */
  other(r: HeldRecord): { late: boolean } {
    return this.hold(1, r);
  }

  /**
   * The held records with event times in [from, until), in the order they are taken: each with its by-time
   * key and its by-key key. `withValues: false` reads only the by-time index.
   */
  protected async held(from: number, until: number, withValues = true): Promise<{ timeKey: Buffer; key: Buffer; kept?: Kept }[]> {
    const found = await this.pending.range("t", timeFrom(from), timeFrom(until));
    const keys = found.map(([tk, tv]) => byKeyOf(tk, tv));
    const values = withValues ? await this.pending.getMany(groupOf, keys) : [];
    return found.map(([timeKey], i) => {
      const key = keys[i] as Buffer;
      if (!withValues) return { timeKey, key };
      const raw = values[i];
      if (!raw) throw new Error(`join "${this.step.name}": a held record's entry is missing from the store`);
      return { timeKey, key, kept: decodeKept(key, raw) };
    });
  }

  /** The records from just past the watermark taken up to, to `wm` (inclusive). */
  protected due(wm: number): Promise<{ timeKey: Buffer; key: Buffer; kept?: Kept }[]> {
    return this.held(this.wm === Number.NEGATIVE_INFINITY ? this.wm : this.wm + 1, wm === Number.POSITIVE_INFINITY ? wm : wm + 1);
  }

  /** The changes since the last call, for the changelog; `apply` writes them to the store once it has them. */
  takeChanges(): JoinChanges {
    const { puts, deletes } = this.pending.take();
    if (this.wm !== this.committedWm && Number.isFinite(this.wm)) puts.push([META_RELEASED, encodeInternal(this.wm)]);
    const wm = this.wm;
    return {
      puts,
      deletes,
      overflowed: 0,
      apply: async () => {
        await this.store.write(puts, deletes);
        this.committedWm = wm;
      },
    };
  }

  /** Drops what the batches not committed did: their records will be read again. */
  rollback(): void {
    this.pending.clear();
    this.wm = this.committedWm;
  }
}

export class WindowJoinOperator extends HeldJoin {
  readonly step: WindowJoinStepLike;

  constructor(step: WindowJoinStepLike, store: Store) {
    super(store);
    this.step = step;
  }

  /** What the task forwards: a left or outer join's unmatched records still to come are at most `within` below it. */
  get forwardable(): number {
    return this.step.type === "inner" ? this.wm : this.wm - this.step.withinMs;
  }

  /**
   * Why a stream value cannot be joined: it is not a map. Checked as it comes, before any of its record's values
   * is held, so that the record goes to the DLQ once, not once per pair.
   */
  refuses(value: unknown): string | undefined {
    if (isMap(value)) return undefined;
    return `join "${this.step.name}" adds the input's value to the record's as ${this.step.as}, so it must be a map, not ${celTypeOf(value)}`;
  }

  /**
   * The task's watermark moves: the records it passed (less grace) are taken in order, each joined with the
   * other side's records before it and within `within`; then the records it passed by `within` go, the
   * unmatched ones of a left or outer join emitted alone.
   */
  async advance(taskWatermark: number): Promise<JoinOutput[]> {
    const wm = taskWatermark - this.step.graceMs;
    if (wm <= this.wm) return [];
    const out: JoinOutput[] = [];
    const { withinMs, type } = this.step;
    for (const { key: k, kept } of await this.due(wm)) {
      const x = kept as Kept;
      const otherSide: Side = x.side === 0 ? 1 : 0;
      const prefix = keyPrefix(otherSide, x.r.keyBytes);
      const lower = Number.isFinite(x.r.eventTime - withinMs) ? x.r.eventTime - withinMs : x.r.eventTime;
      // the other side's records before x in the order, at most `within` earlier
      const met = await this.pending.range(
        prefix.toString("latin1"),
        Buffer.concat([prefix, order({ eventTime: lower, offset: -ORDER_SHIFT, index: 0 })]),
        Buffer.concat([prefix, order(x.r)]),
      );
      for (const [yk, yraw] of met) {
        const y = decodeKept(yk, yraw);
        const [main, input] = x.side === 0 ? [x, y] : [y, x];
        out.push(this.joined(main.r, input.r.value, x.r.eventTime));
        if (type !== "inner" && !y.matched) {
          y.matched = true;
          this.pending.put(prefix.toString("latin1"), yk, encodeKept(y));
        }
      }
      if (type !== "inner" && met.length > 0 && !x.matched) {
        x.matched = true;
        this.pending.put(groupOf(k), k, encodeKept(x));
      }
    }
    // the records no later one can meet any more: `within` and more below the watermark
    for (const { timeKey, key: k, kept: y } of await this.held(Number.NEGATIVE_INFINITY, Number.isFinite(wm) ? wm - withinMs + 1 : wm, type !== "inner")) {
      this.pending.put("t", timeKey, null);
      this.pending.put(groupOf(k), k, null);
      if (!y || y.matched) continue;
      if (y.side === 0) out.push(this.joined(y.r, null, y.r.eventTime));
      else if (type === "outer") out.push({ ok: true, record: y.r, value: { [this.step.as]: y.r.value } });
    }
    this.wm = wm;
    return out;
  }

  /** The stream record's value (a map) with the input's value under `as`, at the pair's event time. */
  private joined(main: HeldRecord, other: unknown, eventTime: number): JoinOutput {
    const record = eventTime === main.eventTime ? main : { ...main, eventTime };
    // a stream record is a map: refuses() let no other in
    return { ok: true, record, value: { ...(main.value as Record<string, unknown>), [this.step.as]: other } };
  }
}

/**
 * A task's writes since its last changes were taken (null: a delete), by group (an index, or one side and key of
 * one), read over the store until the changelog has them and they reach it.
 */
export class Overlay {
  private readonly store: Store;
  private readonly pending = new Map<string, Map<string, Buffer | null>>();

  constructor(store: Store) {
    this.store = store;
  }

  put(group: string, key: Buffer, value: Buffer | null): void {
    let g = this.pending.get(group);
    if (!g) {
      g = new Map();
      this.pending.set(group, g);
    }
    g.set(key.toString("latin1"), value);
  }

  /** The store's entries in [gte, lt), with the pending writes of `group` over them, in key order. */
  async range(group: string, gte: Buffer, lt: Buffer): Promise<[Buffer, Buffer][]> {
    const found = new Map<string, Buffer>();
    for await (const [k, v] of this.store.range(gte, lt)) found.set(k.toString("latin1"), v);
    const from = gte.toString("latin1");
    const until = lt.toString("latin1");
    for (const [id, v] of this.pending.get(group) ?? []) {
      if (id < from || id >= until) continue;
      if (v === null) found.delete(id);
      else found.set(id, v);
    }
    return [...found].sort(byId).map(([id, v]) => [Buffer.from(id, "latin1"), v]);
  }

  /** The values of `keys`, pending writes first; `group` gives each key's group. */
  async getMany(group: (k: Buffer) => string, keys: Buffer[]): Promise<(Buffer | undefined)[]> {
    const out: (Buffer | undefined)[] = [];
    const missing: number[] = [];
    for (const [i, k] of keys.entries()) {
      const p = this.pending.get(group(k))?.get(k.toString("latin1"));
      if (p === undefined) missing.push(i);
      out.push(p ?? undefined);
    }
    const read = await this.store.getMany(missing.map((i) => keys[i] as Buffer));
    missing.forEach((i, n) => {
      out[i] = read[n];
    });
    return out;
  }

  /** The writes, for the changelog and the store; the overlay is empty after. */
  take(): { puts: [Buffer, Buffer][]; deletes: Buffer[] } {
    const puts: [Buffer, Buffer][] = [];
    const deletes: Buffer[] = [];
    for (const g of this.pending.values())
      for (const [id, v] of g) {
        if (v === null) deletes.push(Buffer.from(id, "latin1"));
        else puts.push([Buffer.from(id, "latin1"), v]);
      }
    this.pending.clear();
    return { puts, deletes };
  }

  clear(): void {
    this.pending.clear();
  }
}
