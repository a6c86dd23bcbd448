// A Store in memory, in key order: for the unit tests of what runs on a store (the window operator, the window
// store), so that they run without a volume. The runtime itself always uses RocksDB (store.ts).
import type { Store } from "../store.ts";

export function memoryStore(): Store & { entries: Map<string, Buffer> } {
  const entries = new Map<string, Buffer>();
  const sorted = () => [...entries.keys()].sort();
  const s = {
    entries,
    async getMany(keys: Buffer[]) {
      return keys.map((k) => entries.get(k.toString("latin1")));
    },
    async write(puts: [Buffer, Buffer][], deletes: Buffer[] = []) {
      for (const k of deletes) entries.delete(k.toString("latin1"));
      for (const [k, v] of puts) entries.set(k.toString("latin1"), v);
    },
    async *range(gte: Buffer, lt: Buffer): AsyncIterable<[Buffer, Buffer]> {
      const lo = gte.toString("latin1");
      const hi = lt.toString("latin1");
      for (const k of sorted()) if (k >= lo && k < hi) yield [Buffer.from(k, "latin1"), entries.get(k) as Buffer];
    },
    async deleteRange(gte: Buffer, lt: Buffer) {
      const lo = gte.toString("latin1");
      const hi = lt.toString("latin1");
      for (const k of sorted()) if (k >= lo && k < hi) entries.delete(k);
    },
    sizeBytes: () => [...entries].reduce((n, [k, v]) => n + k.length + v.length, 0),
    memtableBytes: () => 0, // all of it is in the heap: no memtables
    close: async () => {},
  };
  return s;
}
