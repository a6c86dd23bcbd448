// A task's window store: its open windows on disk (RocksDB), read and written through the worker's state cache
// (cache.ts). The JS heap holds what the cache holds, whatever the number of keys or windows.
//
// Store keys sort by window end, then start, then key: the windows that end in one interval are a contiguous key
// range, so closing windows is one iterator over the range that the watermark has passed since the last close,
// and a time segment is dropped whole by one range delete. Session windows have an index besides, by key
// (0x03, written to RocksDB only, rebuilt on restore), to find a key's sessions.
//
// The store never reads in the middle of a batch: the batch's windows are prefetched (one multi-get), then the
// window operator processes the batch's records synchronously against the cache.
import { decodeInternal, encodeInternal } from "../codec.ts";
import type { Store } from "../store.ts";
import type { Slot, StateCache } from "./cache.ts";

export interface WindowEntry {
  key: string | null;
  keyBytes: Buffer;
  start: number;
  end: number;
  acc: Record<string, unknown>;
  /** processing time of the last update, for the TTL */
  touched: number;
  /** a table's key: the greatest event time folded into it, which its results carry on */
  ev?: number;
}

const STATE_PREFIX = 0x01;
const SESSION_INDEX_PREFIX = 0x03;
const ORDER_SHIFT = 2n ** 63n;
/** Keys whose session index a store keeps in memory, past which those fully written are forgotten. */
const MAX_INDEXED_KEYS = 20_000;

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
  if (end === Number.NEGATIVE_INFINITY) return STATE_RANGE.gte;
  if (end === Number.POSITIVE_INFINITY) return STATE_RANGE.lt;
  const b = Buffer.allocUnsafe(9);
  b[0] = STATE_PREFIX;
  b.writeBigUInt64BE(BigInt(end) + ORDER_SHIFT, 1);
  return b;
}

/** The window end a store key holds. */
export function endOfKey(key: Buffer): number {
  return Number(key.readBigUInt64BE(1) - ORDER_SHIFT);
}

/** True for a store key of a window (not the watermark table or an index). */
export function isWindowKey(key: Buffer): boolean {
  return key[0] === STATE_PREFIX;
}

/** A stored window: its key and value as the store and the changelog hold them. */
export function decodeEntry(key: Buffer, value: Buffer): WindowEntry {
  const v = decodeInternal(value) as { k: string | null; a: Record<string, unknown>; t: bigint | number; e?: bigint | number };
  return {
    key: v.k,
    keyBytes: key.subarray(17),
    start: Number(key.readBigUInt64BE(9) - ORDER_SHIFT),
    end: endOfKey(key),
    acc: v.a,
    touched: Number(v.t),
    ...(v.e !== undefined ? { ev: Number(v.e) } : {}),
  };
}

export function encodeEntry(e: WindowEntry): Buffer {
  return encodeInternal(e.ev === undefined ? { k: e.key, a: e.acc, t: e.touched } : { k: e.key, a: e.acc, t: e.touched, e: e.ev });
}

/** The session index's prefix of one key: its sessions' index keys follow it, by end and start. */
function sessionPrefix(keyBytes: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + keyBytes.length);
  b[0] = SESSION_INDEX_PREFIX;
  b.writeUInt32BE(keyBytes.length, 1);
  keyBytes.copy(b, 5);
  return b;
}

/** The index key of a session window's store key. */
export function sessionIndexKey(key: Buffer): Buffer {
  const keyBytes = key.subarray(17);
  return Buffer.concat([sessionPrefix(keyBytes), key.subarray(1, 17)]);
}

/** The store key a session index key points at. */
function fromIndexKey(index: Buffer): Buffer {
  const len = index.readUInt32BE(1);
  const keyBytes = index.subarray(5, 5 + len);
  const endStart = index.subarray(5 + len);
  return Buffer.concat([Buffer.from([STATE_PREFIX]), endStart, keyBytes]);
}

/** The first key after every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] as number) < 0xff) {
      b[i] = (b[i] as number) + 1;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]);
}

/** The store writes that go with a batch of window puts and deletes: the session index's, for a session store. */
export function withSessionIndex(puts: [Buffer, Buffer][], deletes: Buffer[]): { puts: [Buffer, Buffer][]; deletes: Buffer[] } {
  const empty = Buffer.alloc(0);
  return {
    puts: [...puts, ...puts.filter(([k]) => isWindowKey(k)).map(([k]) => [sessionIndexKey(k), empty] as [Buffer, Buffer])],
    deletes: [...deletes, ...deletes.filter(isWindowKey).map(sessionIndexKey)],
  };
}

/**
 * A slot's cost in the cache: the key twice (the id and keyBytes), the key string, and the aggregates: a few
 * numbers each, or, for aggregates that hold records' values (a reduce, latest, topN), three times their encoded
 * size (`encoded`), which is what such objects take in the heap.
 */
function entryBytes(id: string, e: WindowEntry | null, encoded?: number): number {
  if (!e) return id.length;
  const acc = encoded !== undefined ? 3 * encoded : 48 * (Object.keys(e.acc).length + 2);
  return id.length + e.keyBytes.length + (e.key?.length ?? 0) * 2 + acc;
}

/** Where closing stands: the end windows close below, and the key below which they have come out. */
export interface CloseState {
  target: number;
  cursor: string;
}

export interface TakenChanges {
  puts: [Buffer, Buffer][];
  deletes: Buffer[];
  /** once the changes are committed: writes them to RocksDB and marks their slots clean */
  apply: () => Promise<void>;
}

export class WindowStore {
  private readonly store: Store;
  private readonly cache: StateCache;
  private readonly session: boolean;
  /** whether windows hold records' values (a reduce, latest, topN): the cache counts them by their encoded size */
  private readonly valueSized: boolean;
  private readonly slots = new Map<string, Slot<WindowEntry>>();
  /** slots changed and not yet written to RocksDB: dirty (not yet taken) or pending (taken, not yet applied) */
  private readonly unflushed = new Set<Slot<WindowEntry>>();
  /** session stores: the sessions of each key whose index was read, by store id */
  private readonly sessionsByKey = new Map<string, Set<string>>();
  /** windows that end before this are closed (by the watermark): never read or changed again */
  private target = Number.NEGATIVE_INFINITY;
  /** the store key (latin1) below which every closed window has come out: closing goes on from here */
  private cursor = STATE_RANGE.gte.toString("latin1");
  /** where the last sweep stopped: the next goes on from there */
  private sweepFrom: Buffer | undefined;

  constructor(store: Store, cache: StateCache, opts: { session: boolean; valueSized?: boolean }) {
    this.store = store;
    this.cache = cache;
    this.session = opts.session;
    this.valueSized = opts.valueSized ?? false;
  }

  /** Where closing stands, for a rollback to put back. */
  closeState(): CloseState {
    return { target: this.target, cursor: this.cursor };
  }

  /** True while windows the watermark has closed have not all come out (closeBefore was given a bound). */
  get closing(): boolean {
    return this.cursor < endKey(this.target).toString("latin1");
  }

  /** Loads the windows with these ids into the cache (one multi-get for those not there), for the next get. */
  async prefetch(ids: Iterable<string>): Promise<void> {
    const missing: string[] = [];
    const seen = new Set<string>();
    for (const id of ids) {
      if (seen.has(id)) continue;
      seen.add(id);
      const slot = this.slots.get(id);
      if (slot) this.cache.touch(slot as Slot<unknown>);
      else missing.push(id);
    }
    if (missing.length === 0) return;
    const values = await this.store.getMany(missing.map((id) => Buffer.from(id, "latin1")));
    missing.forEach((id, i) => {
      if (this.slots.has(id)) return; // a write while the read was out wins
      const v = values[i];
      const e = v ? decodeEntry(Buffer.from(id, "latin1"), v) : null;
      this.cache.add(this.slots, id, e, entryBytes(id, e, this.valueSized ? v?.length : undefined), "clean");
    });
  }

  /** Loads every session of these keys into the cache: the index, then the windows it names. */
  async prefetchSessions(keys: Iterable<Buffer>): Promise<void> {
    if (this.sessionsByKey.size > MAX_INDEXED_KEYS) this.forgetIndex();
    const ids: string[] = [];
    for (const keyBytes of keys) {
      const k = keyBytes.toString("latin1");
      if (this.sessionsByKey.has(k)) {
        for (const id of this.sessionsByKey.get(k) ?? []) ids.push(id);
        continue;
      }
      const found = new Set<string>();
      const prefix = sessionPrefix(keyBytes);
      // A key whose index is not in memory has no session that RocksDB lacks: a session is made only after its
      // key's index was read, and that index stays while the session is unwritten (forgetIndex).
      for await (const [index] of this.store.range(prefix, prefixEnd(prefix))) found.add(fromIndexKey(index).toString("latin1"));
      this.sessionsByKey.set(k, found);
      for (const id of found) ids.push(id);
    }
    await this.prefetch(ids);
  }

  /** Forgets the index of every key none of whose sessions is waiting to be written: RocksDB has it. */
  private forgetIndex(): void {
    for (const [k, ids] of this.sessionsByKey) {
      let unwritten = false;
      for (const id of ids) if ((this.slots.get(id)?.state ?? "clean") !== "clean") unwritten = true;
      if (!unwritten) this.sessionsByKey.delete(k);
    }
  }

  /** The sessions of a key (prefetchSessions first), open or expired; closed ones are left out by the caller. */
  sessionsOf(keyBytes: Buffer): WindowEntry[] {
    const ids = this.sessionsByKey.get(keyBytes.toString("latin1"));
    if (!ids) throw new Error("the sessions of a key were read before they were prefetched");
    const out: WindowEntry[] = [];
    for (const id of ids) {
      const e = this.get(id);
      if (e && e.end >= this.target) out.push(e);
    }
    return out;
  }

  /** A window by id (prefetch first): undefined when there is none. */
  get(id: string): WindowEntry | undefined {
    const slot = this.slots.get(id);
    if (!slot) throw new Error("a window was read before it was prefetched");
    return slot.value ?? undefined;
  }

  /**
   * Stores a window: written to the changelog with the batch, and to RocksDB once that commits. `encoded`: its
   * encoded size, when its aggregates hold records' values (the cache counts them by it).
   */
  put(id: string, e: WindowEntry, encoded?: number): void {
    this.set(id, e, encoded);
    if (this.session) this.sessionsByKey.get(e.keyBytes.toString("latin1"))?.add(id);
  }

  /** Deletes a window: a tombstone in the changelog, a delete in RocksDB. */
  delete(id: string): void {
    const e = this.slots.get(id)?.value;
    this.set(id, null);
    if (this.session && e) this.sessionsByKey.get(e.keyBytes.toString("latin1"))?.delete(id);
  }

  private set(id: string, e: WindowEntry | null, encoded?: number): void {
    const slot = this.slots.get(id) ?? this.cache.add(this.slots, id, null, 0, "clean");
    this.cache.change(slot, e, entryBytes(id, e, encoded));
    this.unflushed.add(slot);
  }

  /**
   * Forgets a closed window: out of the cache, with no write. It stays in RocksDB until its segment is dropped,
   * and is never read again (it ends before the close target). A change to it not yet taken is never written.
   */
  private forget(slot: Slot<WindowEntry>): void {
    if (slot.state === "dirty") this.unflushed.delete(slot);
    this.cache.remove(slot as Slot<unknown>);
    if (this.session && slot.value) {
      const k = slot.value.keyBytes.toString("latin1");
      this.sessionsByKey.get(k)?.delete(slot.id);
    }
  }

  /**
   * Closes the windows that end before `limit`: they come out once each, in store key order (end, start, key), at
   * most `max` per call (closing goes on at the next call, `closing` says so), and leave the cache. Those in
   * RocksDB are read by one iterator from where closing stands; those changed and not yet written come from the
   * cache.
   */
  async closeBefore(limit: number, max = Number.POSITIVE_INFINITY): Promise<[string, WindowEntry][]> {
    if (limit > this.target) this.target = limit;
    const hi = endKey(this.target);
    const hiId = hi.toString("latin1");
    if (this.cursor >= hiId) return [];
    const found = new Map<string, WindowEntry>();
    let bound = hiId;
    let n = 0;
    for await (const [k, v] of this.store.range(Buffer.from(this.cursor, "latin1"), hi)) {
      const id = k.toString("latin1");
      if (n >= max) {
        bound = id; // the first key not taken: the next call starts there
        break;
      }
      n++;
      const slot = this.slots.get(id);
      if (slot) {
        if (slot.value) found.set(id, slot.value);
      } else found.set(id, decodeEntry(k, v));
    }
    for (const slot of this.unflushed) if (slot.value && slot.id >= this.cursor && slot.id < bound) found.set(slot.id, slot.value);
    this.cursor = bound;
    const out = [...found].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [id] of out) {
      const slot = this.slots.get(id);
      if (slot) this.forget(slot);
    }
    return out;
  }

  /**
   * Up to `budget` open windows, from where the last sweep stopped, that `expired` says to delete: each is
   * deleted (a tombstone). An expired window is never read meanwhile (the operator checks), so a sweep only
   * frees the space, a part of the store at a time. Gives the windows it deleted, as they were.
   */
  async sweep(expired: (e: WindowEntry) => boolean, budget: number): Promise<WindowEntry[]> {
    const open = endKey(this.target);
    const from = this.sweepFrom && Buffer.compare(this.sweepFrom, open) > 0 ? this.sweepFrom : open;
    const doomed: string[] = [];
    let read = 0;
    this.sweepFrom = undefined;
    for await (const [k, v] of this.store.range(from, STATE_RANGE.lt)) {
      if (read++ >= budget) {
        this.sweepFrom = k;
        break;
      }
      const id = k.toString("latin1");
      const slot = this.slots.get(id);
      const e = slot ? slot.value : decodeEntry(k, v);
      if (e && expired(e)) doomed.push(id);
    }
    for (const slot of this.unflushed) if (slot.value && slot.value.end >= this.target && expired(slot.value)) doomed.push(slot.id);
    const unique = [...new Set(doomed)];
    await this.prefetch(unique);
    const deleted: WindowEntry[] = [];
    for (const id of unique) {
      const e = this.get(id);
      if (e) deleted.push(e);
      this.delete(id);
    }
    return deleted;
  }

  /**
   * The changes since the last call, as store puts and deletes (the changelog's records), and the write that
   * makes them durable in RocksDB once they are committed.
   */
  takeChanges(): TakenChanges {
    const puts: [Buffer, Buffer][] = [];
    const deletes: Buffer[] = [];
    const taken: [Slot<WindowEntry>, number][] = [];
    for (const slot of this.unflushed) {
      if (slot.state !== "dirty") continue;
      const key = Buffer.from(slot.id, "latin1");
      if (slot.value) puts.push([key, encodeEntry(slot.value)]);
      else deletes.push(key);
      slot.state = "pending";
      taken.push([slot, slot.version]);
    }
    return {
      puts,
      deletes,
      apply: async () => {
        const w = this.session ? withSessionIndex(puts, deletes) : { puts, deletes };
        await this.store.write(w.puts, w.deletes);
        for (const [slot, version] of taken) {
          if (slot.version !== version) continue; // changed again since: still dirty
          slot.state = "clean";
          this.unflushed.delete(slot);
        }
      },
    };
  }

  /**
   * Drops what the batches not committed did: their dirty and pending slots go (RocksDB holds what was
   * committed), and closing goes back to where it stood at the commit: windows they closed are open again, or
   * come out again, as the batches are read again. A restored store starts from `resume(limit)`.
   */
  rollback(state: CloseState): void {
    for (const slot of this.unflushed) this.cache.remove(slot as Slot<unknown>);
    this.unflushed.clear();
    if (this.session) this.sessionsByKey.clear();
    this.target = state.target;
    this.cursor = state.cursor;
  }

  /**
   * Starts a store opened from disk: the windows that end before `limit` had closed, and come out from `cursor`
   * on (where a close cut short had got to) or had all come out.
   */
  resume(limit: number, cursor?: string): void {
    const done = endKey(limit).toString("latin1");
    this.rollback({ target: limit, cursor: cursor !== undefined && cursor < done ? cursor : done });
  }

  /** While closing: the key closing has got to, which a restart goes on from. */
  get closingFrom(): string | undefined {
    return this.closing ? this.cursor : undefined;
  }

  /** Drops this store's slots from the cache: its task closes. */
  close(): void {
    this.cache.dropAll(this.slots as Map<string, Slot<unknown>>);
    this.unflushed.clear();
    this.sessionsByKey.clear();
  }

  /** Open windows in the cache: for tests and metrics. */
  get cached(): number {
    let n = 0;
    for (const slot of this.slots.values()) if (slot.value) n++;
    return n;
  }
}
