// The state store interface, and its RocksDB implementation on @nxtedition/rocksdb (chosen over rocksdb-native
// by `npm run bench:store`: faster on the window store's read-modify-write and scans; figures in the README).
// One store per stateful step and task, in its own directory on the pod's state volume.
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";

export interface Store {
  /** values for keys, undefined where there is none */
  getMany(keys: Buffer[]): Promise<(Buffer | undefined)[]>;
  /** one atomic write of puts and deletes */
  write(puts: [Buffer, Buffer][], deletes?: Buffer[]): Promise<void>;
  /** entries with gte <= key < lt, in key order */
  range(gte: Buffer, lt: Buffer): AsyncIterable<[Buffer, Buffer]>;
  /** removes every key with gte <= key < lt */
  deleteRange(gte: Buffer, lt: Buffer): Promise<void>;
  /** bytes on disk and in memtables, as RocksDB estimates them */
  sizeBytes(): number;
  /** bytes in memtables: the writes not yet flushed to disk, in native memory (MEMTABLE_BUDGET_BYTES) */
  memtableBytes(): number;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** the block cache, in bytes (state.blockCacheSize) */
  blockCacheBytes: number;
}

interface RocksLevelLike {
  open(): Promise<void>;
  close(): Promise<void>;
  getMany(keys: Buffer[]): Promise<(Buffer | undefined)[]>;
  batch(): { put(k: Buffer, v: Buffer): void; del(k: Buffer): void; write(): Promise<void> };
  iterator(range: { gte: Buffer; lt: Buffer }): AsyncIterable<[Buffer, Buffer]>;
  clear(range: { gte: Buffer; lt: Buffer }): Promise<void>;
  getProperty(name: string): string;
}

/**
 * What a store's memtables may take: RocksDB's "level" preset gives each memtable a quarter of it and allows six,
 * so at most 1.5 times this, and a flush to disk at each quarter. RocksDB's own default (two memtables of 64 MiB)
 * let a store's unflushed writes take 128 MiB of native memory, outside the heap and the block cache: a worker
 * holding six tasks could go past a 1 GiB limit on memtables alone. Kafka Streams' default is three of 16 MiB.
 */
export const MEMTABLE_BUDGET_BYTES = 16 * 1024 * 1024;

const require = createRequire(import.meta.url);
const { RocksLevel } = require("@nxtedition/rocksdb") as {
  RocksLevel: new (location: string, options: { keyEncoding: "buffer"; valueEncoding: "buffer" }) => RocksLevelLike;
};

export async function openRocksStore(dir: string, opts: StoreOptions): Promise<Store> {
  mkdirSync(dir, { recursive: true });
  const db = new RocksLevel(dir, { keyEncoding: "buffer", valueEncoding: "buffer" });
  // abstract-level passes open() options to the binding: the block cache and the memtables are set here.
  await (db.open as (o?: object) => Promise<void>)({
    cacheSize: opts.blockCacheBytes,
    compaction: "level",
    memtableMemoryBudget: MEMTABLE_BUDGET_BYTES,
    createIfMissing: true,
  });
  return {
    getMany: (keys) => (keys.length === 0 ? Promise.resolve([]) : db.getMany(keys)),
    async write(puts, deletes = []) {
      if (puts.length === 0 && deletes.length === 0) return;
      const b = db.batch();
      for (const k of deletes) b.del(k);
      for (const [k, v] of puts) b.put(k, v);
      await b.write();
    },
    range: (gte, lt) => db.iterator({ gte, lt }),
    deleteRange: (gte, lt) => db.clear({ gte, lt }),
    sizeBytes: () => Number(db.getProperty("rocksdb.total-sst-files-size")) + Number(db.getProperty("rocksdb.cur-size-all-mem-tables")),
    memtableBytes: () => Number(db.getProperty("rocksdb.cur-size-all-mem-tables")),
    close: () => db.close(),
  };
}
