import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { openRocksStore } from "../store.ts";
import { StateCache } from "./cache.ts";
import { storeKey, type WindowEntry, WindowStore } from "./window-store.ts";

const dir = mkdtempSync(join(tmpdir(), "window-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const open = async (cacheBytes: number, session = false) => {
  const kv = await openRocksStore(join(dir, String(n++)), { blockCacheBytes: 8 << 20 });
  const cache = new StateCache(cacheBytes);
  return { kv, cache, store: new WindowStore(kv, cache, { session }) };
};
const entry = (k: string, start: number, end: number, c: bigint): WindowEntry => ({ key: k, keyBytes: Buffer.from(k), start, end, acc: { c }, touched: 0 });
const id = (e: WindowEntry) => storeKey(e.end, e.start, e.keyBytes).toString("latin1");

/** One batch: prefetch, then add 1 to each window's count. */
async function count(store: WindowStore, windows: [string, number, number][]): Promise<void> {
  await store.prefetch(windows.map(([k, s, e]) => id(entry(k, s, e, 0n))));
  for (const [k, s, e] of windows) {
    const i = id(entry(k, s, e, 0n));
    store.put(i, entry(k, s, e, ((store.get(i)?.acc.c as bigint | undefined) ?? 0n) + 1n));
  }
}

describe("the window store: on disk, through a bounded cache", () => {
  test("the heap holds the cache's bound, not the state: 20,000 windows through a 256 KiB cache close exact", async () => {
    const { kv, cache, store } = await open(256 * 1024);
    for (let round = 0; round < 3; round++) {
      for (let b = 0; b < 20; b++) {
        await count(
          store,
          Array.from({ length: 1_000 }, (_, i) => [`key-${b * 1_000 + i}`, 0, 60_000 + ((b * 1_000 + i) % 7)] as [string, number, number]),
        );
        await store.takeChanges().apply();
        cache.trim();
        assert.ok(cache.bytes <= cache.maxBytes, `after a batch the cache holds ${cache.bytes} bytes, bound ${cache.maxBytes}`);
      }
    }
    assert.ok(store.cached < 20_000 / 4, `${store.cached} of 20,000 windows in memory`);
    const closed = await store.closeBefore(60_007);
    assert.equal(closed.length, 20_000);
    assert.ok(
      closed.every(([, e]) => e.acc.c === 3n),
      "each window counted its three records",
    );
    const ends = closed.map(([, e]) => e.end);
    assert.deepEqual(
      ends,
      [...ends].sort((a, b) => a - b),
      "in order of end",
    );
    assert.deepEqual(await store.closeBefore(60_007), [], "closed once");
    await kv.close();
  });

  test("closing a million windows' worth goes a bounded part at a time, in order, each once, the unwritten among them", async () => {
    const { kv, store } = await open(1 << 20);
    await count(
      store,
      Array.from({ length: 2_500 }, (_, i) => [`k${i}`, 0, 1_000 + (i % 10)] as [string, number, number]),
    );
    await store.takeChanges().apply();
    await count(store, [["late-written", 0, 1_005]]); // dirty: not yet in RocksDB
    const parts: number[] = [];
    const all: string[] = [];
    let part = await store.closeBefore(2_000, 1_000);
    while (part.length > 0) {
      parts.push(part.length);
      all.push(...part.map(([id]) => id));
      assert.equal(store.closing, all.length < 2_501, "closing says whether more is to come");
      part = await store.closeBefore(2_000, 1_000);
    }
    assert.equal(all.length, 2_501, "every window once, the unwritten one too");
    assert.equal(new Set(all).size, 2_501);
    assert.deepEqual(all, [...all].sort(), "in store key order");
    assert.ok(
      parts.every((n) => n <= 1_001),
      `parts of ${parts.join(", ")}`,
    );
    await kv.close();
  });

  test("a rollback drops what was not committed, in flight or not, and opens again what it closed", async () => {
    const { kv, store } = await open(1 << 20);
    await count(store, [
      ["a", 0, 10],
      ["b", 0, 20],
    ]);
    await store.takeChanges().apply(); // committed: a=1, b=1
    const committedClose = store.closeState();
    await count(store, [["a", 0, 10]]);
    const inFlight = store.takeChanges(); // a=2, taken, never committed
    await count(store, [["b", 0, 20]]); // b=2, dirty
    assert.equal((await store.closeBefore(15)).length, 1, "a closes");
    assert.equal(inFlight.puts.length, 1);
    store.rollback(committedClose);
    const closed = await store.closeBefore(100);
    assert.deepEqual(
      closed.map(([, e]) => [e.key, e.acc.c]),
      [
        ["a", 1n],
        ["b", 1n],
      ],
      "both as committed, and a closes again",
    );
    await kv.close();
  });

  test("a window changed again while its write is in flight stays dirty, and the next write carries it", async () => {
    const { kv, store } = await open(1 << 20);
    await count(store, [["a", 0, 10]]);
    const first = store.takeChanges();
    await count(store, [["a", 0, 10]]);
    await first.apply();
    const second = store.takeChanges();
    assert.equal(second.puts.length, 1, "the second change is written too");
    await second.apply();
    assert.equal(store.takeChanges().puts.length, 0);
    assert.equal((await store.closeBefore(11))[0]?.[1].acc.c, 2n);
    await kv.close();
  });

  test("sessions: a key's sessions are found through the index, after the cache let them go", async () => {
    const { kv, cache, store } = await open(1, true);
    const s1 = entry("u", 0, 100, 1n);
    const s2 = entry("u", 500, 600, 1n);
    await store.prefetchSessions([s1.keyBytes]);
    store.put(id(s1), s1);
    store.put(id(s2), s2);
    await store.takeChanges().apply();
    cache.trim();
    assert.equal(store.cached, 0, "nothing in memory");
    await store.prefetchSessions([Buffer.from("u"), Buffer.from("v")]);
    assert.deepEqual(
      store
        .sessionsOf(Buffer.from("u"))
        .map((e) => [e.start, e.end])
        .sort((a, b) => (a[0] as number) - (b[0] as number)),
      [
        [0, 100],
        [500, 600],
      ],
    );
    assert.deepEqual(store.sessionsOf(Buffer.from("v")), []);
    store.delete(id(s1));
    await store.takeChanges().apply();
    await store.prefetchSessions([Buffer.from("u")]);
    assert.deepEqual(
      store.sessionsOf(Buffer.from("u")).map((e) => e.start),
      [500],
      "a deleted session leaves the index",
    );
    await kv.close();
  });

  test("reading a window that was not prefetched is a programming error, said as such", async () => {
    const { kv, store } = await open(1 << 20);
    assert.throws(() => store.get("nope"), /read before it was prefetched/);
    await kv.close();
  });
});
