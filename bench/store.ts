// npm run bench:store: the two maintained RocksDB bindings that load on Node 24, side by side in one run, on
// the window store's access pattern: per batch of records, a multi-get of the windows they touch, then one
// write batch of the updated aggregates; then a range scan of a closed segment and its deletion.
// The store uses @nxtedition/rocksdb; rocksdb-native is not a dependency: `npm install --no-save rocksdb-native@3.18.1`
// first, or the bench says it skipped it.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const RECORDS = Number(process.env.BENCH_RECORDS ?? 500_000);
const BATCH = 1000;
const KEYS = 20_000;
const VALUE = Buffer.alloc(64, 7);

interface Binding {
  name: string;
  open(path: string): Promise<void>;
  getMany(keys: Buffer[]): Promise<(Buffer | undefined | null)[]>;
  writeBatch(puts: [Buffer, Buffer][]): Promise<void>;
  scan(gte: Buffer, lt: Buffer): Promise<number>;
  deleteRange(gte: Buffer, lt: Buffer): Promise<void>;
  close(): Promise<void>;
}

function rocksdbNative(): Binding {
  const RocksDB = require("rocksdb-native");
  let db: any;
  return {
    name: "rocksdb-native",
    async open(path) {
      db = new RocksDB(path);
      await db.ready();
    },
    async getMany(keys) {
      // Batches are reusable handles: one not destroyed keeps close() waiting forever.
      const r = db.read({ autoDestroy: true });
      const ps = keys.map((k) => r.get(k));
      r.tryFlush();
      return Promise.all(ps);
    },
    async writeBatch(puts) {
      const w = db.write({ autoDestroy: true });
      for (const [k, v] of puts) w.put(k, v);
      await w.flush();
    },
    async scan(gte, lt) {
      let n = 0;
      for await (const _ of db.iterator({ gte, lt })) n++;
      return n;
    },
    async deleteRange(gte, lt) {
      const w = db.write({ autoDestroy: true });
      w.deleteRange(gte, lt);
      await w.flush();
    },
    close: () => db.close(),
  };
}

function nxtedition(): Binding {
  const { RocksLevel } = require("@nxtedition/rocksdb");
  let db: any;
  return {
    name: "@nxtedition/rocksdb",
    async open(path) {
      db = new RocksLevel(path, { keyEncoding: "buffer", valueEncoding: "buffer" });
      await db.open();
    },
    getMany: (keys) => db.getMany(keys),
    async writeBatch(puts) {
      const b = db.batch();
      for (const [k, v] of puts) b.put(k, v);
      await b.write();
    },
    async scan(gte, lt) {
      let n = 0;
      for await (const _ of db.iterator({ gte, lt })) n++;
      return n;
    },
    async deleteRange(gte, lt) {
      await db.clear({ gte, lt });
    },
    close: () => db.close(),
  };
}

function key(segment: number, k: number, windowStart: number): Buffer {
  const b = Buffer.alloc(4 + 8 + 8);
  b.writeUInt32BE(segment, 0);
  b.writeBigUInt64BE(BigInt(k), 4);
  b.writeBigUInt64BE(BigInt(windowStart), 12);
  return b;
}

async function run(b: Binding): Promise<Record<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), "bench-store-"));
  try {
    await b.open(dir);
    let seed = 42;
    const rand = () => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) >>> 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    };
    const t0 = performance.now();
    for (let i = 0; i < RECORDS; i += BATCH) {
      const segment = Math.floor(i / (RECORDS / 5)); // five time segments over the run
      const keys = Array.from({ length: BATCH }, () => key(segment, rand() % KEYS, segment * 60_000));
      const current = await b.getMany(keys);
      await b.writeBatch(keys.map((k, j) => [k, current[j] ? VALUE : VALUE]));
    }
    const updateMs = performance.now() - t0;
    const t1 = performance.now();
    const scanned = await b.scan(key(0, 0, 0), key(1, 0, 0));
    const scanMs = performance.now() - t1;
    const t2 = performance.now();
    await b.deleteRange(key(0, 0, 0), key(1, 0, 0));
    const dropMs = performance.now() - t2;
    const left = await b.scan(key(0, 0, 0), key(1, 0, 0));
    if (left !== 0) throw new Error(`${b.name}: ${left} keys left after dropping the segment`);
    await b.close();
    return { updatesPerSec: Math.round(RECORDS / (updateMs / 1000)), scanned, scanPerSec: Math.round(scanned / (scanMs / 1000)), dropMs: Math.round(dropMs) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Record<string, Record<string, number>> = {};
for (const make of [rocksdbNative, nxtedition]) {
  let b: Binding;
  try {
    b = make();
  } catch (err) {
    process.stdout.write(`skipped ${make.name}: ${(err as Error).message.split("\n")[0]}\n`);
    continue;
  }
  // Two rounds each, alternating would be fairer still; the second round is the one reported.
  await run(b);
  results[b.name] = await run(make());
  process.stdout.write(`${b.name}: ${JSON.stringify(results[b.name])}\n`);
}
const [x, y] = Object.values(results);
if (x && y)
  process.stdout.write(`ratio rocksdb-native / @nxtedition/rocksdb, read-modify-write: ${((x.updatesPerSec ?? 0) / (y.updatesPerSec ?? 1)).toFixed(2)}\n`);
