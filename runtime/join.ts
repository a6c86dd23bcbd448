// The stream-table join on event time (issue 18, item 4), one task's part: a stream record meets the table's
// value as it stood at the record's event time, whatever order the two topics were read in. Kafka Streams'
// KStream-KTable join looks the table up as it stands when the record is processed, so its result changes with
// read order; Flink's event-time temporal join holds the stream side until the watermark passes, and so does this.
//
// State, in the task's store:
// - per table key, its versions: a short list of (event time, value or deletion), oldest first, and when the key
//   was last updated (processing time, for state.ttl). A version is kept while some stream record may still need
//   it: the newest one at or below the watermark, and every one after. Older ones go each time the key is
//   updated; with state.ttl, a key not updated for that long goes whole (as a table's key does);
// - the held stream records, by event time, then the repartition offset and the index of the value within the
//   record (a flatMap before the join may give several): released, in that order, once the watermark passes
//   their event time, each joined with the versions as they stand then.
// The store is written only after a commit, as the window store is: the batch's changes wait in memory, go to the
// changelog first (takeChanges), and reach the store once the changelog has them. A rollback drops them.
import { celTypeOf, decodeInternal, encodeInternal } from "./codec.ts";
import type { Store } from "./store.ts";

/** The watermark the held records were released up to, beside the state (the task's metadata is 0x02 ...). */
export const META_RELEASED = Buffer.from([0x02, 0x6a]);
const VERSIONS_PREFIX = 0x10;
const HELD_PREFIX = 0x11;
const VERSIONS_RANGE = { gte: Buffer.from([VERSIONS_PREFIX]), lt: Buffer.from([VERSIONS_PREFIX + 1]) };
/** Version lists a TTL sweep reads at most per call: a large table is swept a part at a time. */
const SWEEP_BUDGET = 10_000;
const ORDER_SHIFT = 2n ** 63n;
/**
 * The most versions a key keeps. More come only while the watermark stands still and the key changes more
 * often than that in between: the oldest go, and a stream record that needed one meets the oldest kept.
 */
export const MAX_VERSIONS = 1_000;

export interface JoinStepLike {
  name: string;
  /** the name the table's value goes by in the joined record: `value.<as>` */
  as: string;
  /** inner: a record with no table value gives nothing; left: it goes on with `<as>` null */
  type: "inner" | "left";
}

/** A table key's versions, and when (processing time, ms) the key was last updated. */
interface Entry {
  v: Version[];
  at: number;
}

/** A version of a table key: its value from `t` on, or its deletion (`d`). */
interface Version {
  t: number;
  v?: unknown;
  d?: true;
}

/** A stream record waiting for the watermark, as held in the store. */
export interface HeldRecord {
  keyBytes: Buffer;
  eventTime: number;
  /** its offset in the task's repartition partition, and the index of this value among the record's */
  offset: bigint;
  index: number;
  value: unknown;
  /** the source record's headers (each name and value in base64: headers are bytes), and its Kafka timestamp */
  headers: [string, string][];
  timestamp: bigint;
}

/** Headers as a held record keeps them: each name and value in base64. */
export function headerPairs(headers: Map<Buffer, Buffer>): [string, string][] {
  return [...headers].map(([k, v]) => [k.toString("base64"), v.toString("base64")]);
}

export function headerMap(pairs: [string, string][]): Map<Buffer, Buffer> {
  return new Map(pairs.map(([k, v]) => [Buffer.from(k, "base64"), Buffer.from(v, "base64")]));
}

/** A released stream record, joined: `value` is the stream value with the table's under `as`. */
export type JoinOutput =
  | { ok: true; record: HeldRecord; value: Record<string, unknown> }
  /** a table-table join's result that a change ended (table-join.ts): `last` is what it was */
  | { ok: true; record: HeldRecord; deleted: true; last: Record<string, unknown> }
  | { ok: false; record: HeldRecord; error: string };

/** The store key of a table key's versions. */
export function versionsKey(keyBytes: Buffer): Buffer {
  const b = Buffer.allocUnsafe(1 + keyBytes.length);
  b[0] = VERSIONS_PREFIX;
  keyBytes.copy(b, 1);
  return b;
}

/** The store key of a held record: by event time, then offset, then index, so a range scan releases in order. */
export function heldKey(eventTime: number, offset: bigint, index: number): Buffer {
  const b = Buffer.allocUnsafe(21);
  b[0] = HELD_PREFIX;
  b.writeBigUInt64BE(BigInt(eventTime) + ORDER_SHIFT, 1);
  b.writeBigUInt64BE(offset + ORDER_SHIFT, 9);
  b.writeUInt32BE(index, 17);
  return b;
}

/** The first held key of event time `t`: every held key below it is of an earlier time. */
function heldFrom(t: number): Buffer {
  const b = Buffer.alloc(9);
  b[0] = HELD_PREFIX;
  if (t === Number.POSITIVE_INFINITY) return Buffer.from([HELD_PREFIX + 1]);
  b.writeBigUInt64BE(BigInt(t) + ORDER_SHIFT, 1);
  return b;
}

const HELD_RANGE = { gte: Buffer.from([HELD_PREFIX]), lt: Buffer.from([HELD_PREFIX + 1]) };

function decodeEntry(raw: Buffer): Entry {
  const e = decodeInternal(raw) as { v: Version[]; at: number | bigint };
  return { v: e.v.map((x) => ({ ...x, t: Number(x.t) })), at: Number(e.at) };
}

function encodeHeld(r: HeldRecord): Buffer {
  return encodeInternal({ k: r.keyBytes.toString("base64"), v: r.value, h: r.headers, ts: r.timestamp });
}

function decodeHeld(key: Buffer, raw: Buffer): HeldRecord {
  const o = decodeInternal(raw) as { k: string; v: unknown; h: [string, string][]; ts: bigint | number };
  return {
    keyBytes: Buffer.from(o.k, "base64"),
    eventTime: Number(key.readBigUInt64BE(1) - ORDER_SHIFT),
    offset: key.readBigUInt64BE(9) - ORDER_SHIFT,
    index: key.readUInt32BE(17),
    value: o.v,
    headers: o.h,
    timestamp: BigInt(o.ts),
  };
}

/** The version valid at `t`: the latest at or before it; undefined when none is, or the key was deleted by then. */
export function versionAt(versions: readonly Version[], t: number): Version | undefined {
  let found: Version | undefined;
  for (const v of versions) {
    if (v.t > t) break;
    found = v;
  }
  return found?.d ? undefined : found;
}

/** Two versions at the same event time: the deletion, else the greater encoding, so that read order never decides. */
function wins(a: Version, b: Version): Version {
  if (a.d || b.d) return a.d ? a : b;
  return Buffer.compare(encodeInternal(a.v), encodeInternal(b.v)) >= 0 ? a : b;
}

/**
 * A key's versions with `x` in its place, then without those no stream record can need any more: every one
 * before the newest at or below `watermark`; a list that is then a single deletion is no list at all.
 */
export function withVersion(versions: readonly Version[], x: Version, watermark: number): { versions: Version[]; dropped: number; overflowed: number } {
  const out: Version[] = [];
  let placed = false;
  for (const v of versions) {
    if (!placed && v.t === x.t) {
      out.push(wins(v, x));
      placed = true;
    } else {
      if (!placed && v.t > x.t) {
        out.push(x);
        placed = true;
      }
      out.push(v);
    }
  }
  if (!placed) out.push(x);
  let newestBelow = -1;
  for (let i = 0; i < out.length; i++) if ((out[i] as Version).t <= watermark) newestBelow = i;
  let kept = newestBelow > 0 ? out.slice(newestBelow) : out;
  let dropped = out.length - kept.length;
  const overflowed = Math.max(0, kept.length - MAX_VERSIONS);
  if (overflowed > 0) {
    dropped += overflowed;
    kept = kept.slice(overflowed);
  }
  if (kept.length === 1 && kept[0]?.d && kept[0].t <= watermark) return { versions: [], dropped: dropped + 1, overflowed };
  return { versions: kept, dropped, overflowed };
}

export interface JoinChanges {
  puts: [Buffer, Buffer][];
  deletes: Buffer[];
  /** versions dropped past MAX_VERSIONS (a record that needed one meets the oldest kept instead) */
  overflowed: number;
  /** writes them to the store: once the changelog has them */
  apply: () => Promise<void>;
}

export class JoinOperator {
  readonly step: JoinStepLike;
  private readonly store: Store;
  /** the watermark the held records were released up to */
  private wm = Number.NEGATIVE_INFINITY;
  private committedWm = Number.NEGATIVE_INFINITY;
  /** versions as the store holds them, read for this batch (prefetch) */
  private readonly stored = new Map<string, Entry>();
  /** versions the batches since the last takeChanges changed: an empty list deletes the key */
  private readonly changed = new Map<string, Entry>();
  /** held records not yet in the store, and held records of the store released since the last takeChanges */
  private readonly heldNew = new Map<string, Buffer>();
  private readonly released = new Set<string>();
  /** versions dropped past MAX_VERSIONS since the last takeChanges */
  private overflowed = 0;
  /** state.ttl: a key not updated for this long (processing time) is gone */
  private readonly ttlMs: number | undefined;
  private readonly now: () => number;
  /** where the next TTL sweep reads from; undefined: the start */
  private sweepFrom: Buffer | undefined;

  constructor(step: JoinStepLike, store: Store, opts: { ttlMs?: number; now?: () => number } = {}) {
    this.step = step;
    this.store = store;
    this.ttlMs = opts.ttlMs;
    this.now = opts.now ?? Date.now;
  }

  get watermark(): number {
    return this.wm;
  }

  /** What the task forwards: every record still to come out is above the watermark it released up to. */
  get forwardable(): number {
    return this.wm;
  }

  /** Where a restored task had released up to (META_RELEASED in its store): held records at or below it were. */
  async resume(): Promise<void> {
    const [saved] = await this.store.getMany([META_RELEASED]);
    if (saved) this.wm = this.committedWm = Number(decodeInternal(saved));
  }

  /** Reads the versions of these table keys (the batch's table records and the records it may release) into memory. */
  async prefetch(keys: Buffer[]): Promise<void> {
    const wanted = keys.filter((k) => {
      const id = k.toString("latin1");
      return !this.changed.has(id) && !this.stored.has(id);
    });
    if (wanted.length === 0) return;
    const values = await this.store.getMany(wanted.map(versionsKey));
    wanted.forEach((k, i) => {
      const raw = values[i];
      this.stored.set(k.toString("latin1"), raw ? decodeEntry(raw) : { v: [], at: 0 });
    });
  }

  private expired(e: Entry, now: number): boolean {
    return this.ttlMs !== undefined && e.v.length > 0 && now - e.at > this.ttlMs;
  }

  /** A key's versions; none once state.ttl expired them, whether or not a sweep has deleted them yet. */
  private versions(keyBytes: Buffer): Version[] {
    const id = keyBytes.toString("latin1");
    const e = this.changed.get(id) ?? this.stored.get(id);
    if (e === undefined) throw new Error(`join "${this.step.name}": the versions of a key were not read before its record (prefetch)`);
    return this.expired(e, this.now()) ? [] : e.v;
  }

  /** A table record: the key's value from `eventTime` on, or (value undefined) its deletion from then. */
  table(keyBytes: Buffer, eventTime: number, value: unknown): void {
    const x: Version = value === undefined ? { t: eventTime, d: true } : { t: eventTime, v: value };
    const next = withVersion(this.versions(keyBytes), x, this.wm);
    this.overflowed += next.overflowed;
    this.changed.set(keyBytes.toString("latin1"), { v: next.versions, at: this.now() });
  }

  /**
   * With state.ttl: deletes the keys not updated for that long, reading at most SWEEP_BUDGET of them from where
   * the last sweep stopped. Their deletes go out with the next changes. Returns how many it deleted.
   */
  async sweep(): Promise<number> {
    if (this.ttlMs === undefined) return 0;
    const now = this.now();
    let read = 0;
    let deleted = 0;
    let last: Buffer | undefined;
    for await (const [k, raw] of this.store.range(this.sweepFrom ?? VERSIONS_RANGE.gte, VERSIONS_RANGE.lt)) {
      if (read++ >= SWEEP_BUDGET) break;
      last = k;
      const id = k.subarray(1).toString("latin1");
      if (this.changed.has(id)) continue; // updated since the store had it
      if (!this.expired(decodeEntry(raw), now)) continue;
      this.changed.set(id, { v: [], at: now });
      this.stored.delete(id);
      deleted++;
    }
    // the next sweep goes on after the last key read, or from the start once this one reached the end
    this.sweepFrom = read > SWEEP_BUDGET && last ? Buffer.concat([last, Buffer.from([0])]) : undefined;
    return deleted;
  }

  /** Nothing is refused as it comes: a value that is not a map goes to the DLQ when released (advance). */
  refuses(_value: unknown): string | undefined {
    return undefined;
  }

  /**
   * A stream record: held until the watermark passes its event time. One at or below the watermark already is
   * late: the versions it would need may be gone, and the caller treats it as a window treats a late record.
   */
  stream(r: HeldRecord): { late: boolean } {
    if (r.eventTime <= this.wm) return { late: true };
    this.heldNew.set(heldKey(r.eventTime, r.offset, r.index).toString("latin1"), encodeHeld(r));
    return { late: false };
  }

  /**
   * The watermark moves to `watermark`: every held record at or below it is released, in event-time order (then
   * offset and index), each joined with its key's version at its event time.
   */
  async advance(watermark: number): Promise<JoinOutput[]> {
    if (watermark <= this.wm) return [];
    const due: [string, Buffer][] = [];
    const until = heldFrom(watermark === Number.POSITIVE_INFINITY ? watermark : watermark + 1);
    for await (const [k, v] of this.store.range(HELD_RANGE.gte, until)) {
      const id = k.toString("latin1");
      if (!this.released.has(id)) due.push([id, v]);
    }
    const untilId = until.toString("latin1");
    for (const [id, v] of this.heldNew) if (id < untilId) due.push([id, v]);
    due.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const records = due.map(([id, v]) => decodeHeld(Buffer.from(id, "latin1"), v));
    await this.prefetch(records.map((r) => r.keyBytes));
    const out: JoinOutput[] = [];
    for (const [i, r] of records.entries()) {
      const id = (due[i] as [string, Buffer])[0];
      if (this.heldNew.has(id)) this.heldNew.delete(id);
      else this.released.add(id);
      const found = versionAt(this.versions(r.keyBytes), r.eventTime);
      if (found === undefined && this.step.type === "inner") continue;
      const v = r.value;
      if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array || v instanceof Date) {
        out.push({
          ok: false,
          record: r,
          error: `join "${this.step.name}" adds the table's value to the record's as ${this.step.as}, so it must be a map, not ${celTypeOf(v)}`,
        });
        continue;
      }
      out.push({ ok: true, record: r, value: { ...(v as Record<string, unknown>), [this.step.as]: found ? found.v : null } });
    }
    this.wm = watermark;
    return out;
  }

  /**
   * The changes since the last call, for the changelog; `apply` writes them to the store once it has them. The
   * worker applies them before the next batch's records reach the operator (its flushes run one after another).
   */
  takeChanges(): JoinChanges {
    const puts: [Buffer, Buffer][] = [];
    const deletes: Buffer[] = [];
    for (const [id, e] of this.changed) {
      const k = versionsKey(Buffer.from(id, "latin1"));
      if (e.v.length === 0) deletes.push(k);
      else puts.push([k, encodeInternal(e)]);
    }
    for (const [id, v] of this.heldNew) puts.push([Buffer.from(id, "latin1"), v]);
    for (const id of this.released) deletes.push(Buffer.from(id, "latin1"));
    if (this.wm !== this.committedWm && Number.isFinite(this.wm)) puts.push([META_RELEASED, encodeInternal(this.wm)]);
    this.changed.clear();
    this.heldNew.clear();
    this.released.clear();
    const wm = this.wm;
    const overflowed = this.overflowed;
    this.overflowed = 0;
    return {
      puts,
      deletes,
      overflowed,
      apply: async () => {
        await this.store.write(puts, deletes);
        this.committedWm = wm;
        // the store has them now: the next batches read what they need again
        this.stored.clear();
      },
    };
  }

  /** Drops what the batches not committed did: their records will be read again. */
  rollback(): void {
    this.changed.clear();
    this.heldNew.clear();
    this.released.clear();
    this.stored.clear();
    this.overflowed = 0;
    this.wm = this.committedWm;
  }
}
