import assert from "node:assert/strict";
import { test } from "node:test";
import { SLOT_OVERHEAD_BYTES, type Slot, StateCache } from "./cache.ts";

test("the cache evicts clean slots only, least recently used first, and only when trimmed", () => {
  const cache = new StateCache(3 * (100 + SLOT_OVERHEAD_BYTES));
  const home = new Map<string, Slot<string>>();
  for (const id of ["a", "b", "c", "d", "e"]) cache.add(home, id, id, 100, "clean");
  assert.equal(cache.size, 5, "nothing goes before a trim: a batch's prefetched slots stay while it runs");
  const c = home.get("c") as Slot<string>;
  cache.change(c, "c2", 100); // dirty: never evicted
  cache.touch(home.get("a") as Slot<unknown>); // a is now the most recently used
  assert.equal(cache.trim(), 2);
  assert.deepEqual([...home.keys()].sort(), ["a", "c", "e"], "b and d went: the oldest clean ones");
  assert.equal(cache.bytes, 3 * (100 + SLOT_OVERHEAD_BYTES));
});

test("when only dirty slots are left the cache stays over its bound until they are written", () => {
  const cache = new StateCache(100);
  const home = new Map<string, Slot<string>>();
  const slots = ["a", "b"].map((id) => cache.add(home, id, null, 0, "clean"));
  for (const s of slots) cache.change(s, "x".repeat(200), 200);
  assert.equal(cache.trim(), 0);
  assert.equal(home.size, 2);
  for (const s of slots) s.state = "clean"; // written
  assert.equal(cache.trim(), 2);
  assert.equal(cache.bytes, 0);
});
