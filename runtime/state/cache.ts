// The state cache: one per worker, shared by its tasks' stores, bounded in bytes (spec.state.cacheSize), as Kafka
// Streams' record cache (statestore.cache.max.bytes). The stores read through it (a miss reads RocksDB) and write
// back through it: a window changed by a batch stays in the cache, dirty, until the batch's changelog records are
// taken (pending), and is written to RocksDB once they are committed (clean). Only clean slots are evicted, the
// least recently used first, and only when the worker says (trim, between batches): a batch's slots stay while it
// runs, so that what a batch prefetched is there when it is processed. A discarded batch rolls back by dropping
// its dirty and pending slots: RocksDB holds what was committed.

export type SlotState = "clean" | "dirty" | "pending";

export interface Slot<V> {
  readonly id: string;
  /** null: the store holds nothing under the id (a miss, or a delete not yet written) */
  value: V | null;
  bytes: number;
  state: SlotState;
  /** bumped on every change: a write that was taken before a later change does not make the slot clean */
  version: number;
  /** the store's own map of its slots, which eviction removes the slot from */
  readonly home: Map<string, Slot<V>>;
}

/** Bytes a slot costs beyond its value's estimate: the Map entries, the slot object, the id string. */
export const SLOT_OVERHEAD_BYTES = 160;

export class StateCache {
  readonly maxBytes: number;
  private used = 0;
  /** every slot of every store, least recently used first */
  private readonly lru = new Set<Slot<unknown>>();

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** Bytes held, by the estimate of each slot. */
  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.lru.size;
  }

  /** A new slot in `home`, replacing any slot of that id there. */
  add<V>(home: Map<string, Slot<V>>, id: string, value: V | null, bytes: number, state: SlotState): Slot<V> {
    const old = home.get(id);
    if (old) this.remove(old);
    const slot: Slot<V> = { id, value, bytes: bytes + SLOT_OVERHEAD_BYTES, state, version: 0, home };
    home.set(id, slot);
    this.lru.add(slot as Slot<unknown>);
    this.used += slot.bytes;
    return slot;
  }

  /** Marks a slot used now: it is the last to go. */
  touch(slot: Slot<unknown>): void {
    this.lru.delete(slot);
    this.lru.add(slot);
  }

  /** A slot's new value: it is dirty until its change is taken. */
  change<V>(slot: Slot<V>, value: V | null, bytes: number): void {
    this.used += bytes + SLOT_OVERHEAD_BYTES - slot.bytes;
    slot.value = value;
    slot.bytes = bytes + SLOT_OVERHEAD_BYTES;
    slot.state = "dirty";
    slot.version++;
    this.touch(slot as Slot<unknown>);
  }

  /** Takes a slot out of the cache and of its store's map, whatever its state. */
  remove(slot: Slot<unknown>): void {
    if (!this.lru.delete(slot)) return;
    this.used -= slot.bytes;
    if (slot.home.get(slot.id) === slot) slot.home.delete(slot.id);
  }

  /**
   * Evicts clean slots, the least recently used first, until the cache is within its bound or only dirty and
   * pending slots are left. Returns how many went.
   */
  trim(): number {
    if (this.used <= this.maxBytes) return 0;
    let n = 0;
    for (const slot of this.lru) {
      if (this.used <= this.maxBytes) break;
      if (slot.state !== "clean") continue;
      this.remove(slot);
      n++;
    }
    return n;
  }

  /** Drops every slot of one store (its task closed). */
  dropAll(home: Map<string, Slot<unknown>>): void {
    for (const slot of [...home.values()]) this.remove(slot);
  }
}
