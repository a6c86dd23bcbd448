import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepSpec } from "../src/api-types.gen.ts";
import { compile } from "../src/topology/compile.ts";
import { StateCache } from "./state/cache.ts";
import { memoryStore } from "./state/memory-store.ts";
import { WindowStore } from "./state/window-store.ts";
import { droppableBefore, endKey, endOfKey, segmentMs, storeKey, type WindowInput, WindowOperator, type WindowStep } from "./window.ts";

function step(window: NonNullable<StepSpec["window"]>, aggregate: NonNullable<StepSpec["aggregate"]>, over: Partial<StepSpec> = {}): WindowStep {
  const r = compile(
    {
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in"] },
      steps: [
        { name: "by", keyBy: "value.k" },
        { name: "w", window, aggregate, ...over },
      ],
      sink: { topic: "out" },
    },
    { namespace: "ns", name: "p" },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.topology.steps[1] as WindowStep;
}

/** An operator on a store in memory, as a task runs it: each record prefetched, then processed; commit takes the
 * changes and writes them to the store. */
class Harness {
  readonly kv: ReturnType<typeof memoryStore>;
  readonly op: WindowOperator;
  constructor(s: WindowStep, opts: { ttlMs?: number; now?: () => number } = {}, kv = memoryStore()) {
    this.kv = kv;
    this.op = new WindowOperator(s, new WindowStore(kv, new StateCache(1 << 20), { session: s.window.type === "session" }), opts);
  }
  get step(): WindowStep {
    return this.op.step;
  }
  get watermark(): number {
    return this.op.watermark;
  }
  get cached(): number {
    return this.op.cached;
  }
  async process(r: WindowInput) {
    await this.op.prefetch([r]);
    return this.op.process(r);
  }
  advance(wm: number) {
    return this.op.advance(wm);
  }
  sweep() {
    return this.op.sweep();
  }
  async commit(): Promise<{ puts: [Buffer, Buffer][]; deletes: Buffer[]; dropBefore?: number }> {
    const c = this.op.takeChanges();
    await c.apply();
    return { puts: c.puts, deletes: c.deletes, ...(c.dropBefore !== undefined ? { dropBefore: c.dropBefore } : {}) };
  }
}

const rec = (k: string, ts: number, value: unknown = { n: 1n }): WindowInput => ({ key: k, keyBytes: Buffer.from(k), value, ctx: {}, ts });
const view = (rs: { value: Record<string, unknown> }[]) =>
  rs.map((r) => Object.fromEntries(Object.entries(r.value).map(([k, v]) => [k, typeof v === "bigint" ? Number(v) : v])));

describe("window aggregates", () => {
  test("tumbling: count, sum, min, max and avg per key and window, emitted once on close, in order", async () => {
    const op = new Harness(
      step({ tumbling: "10s" }, { c: { count: {} }, s: { sum: "value.n" }, lo: { min: "value.n" }, hi: { max: "value.n" }, mean: { avg: "value.n" } }),
    );
    for (const [k, ts, n] of [
      ["a", 1_000, 2n],
      ["a", 9_999, 4n],
      ["b", 5_000, 10n],
      ["a", 10_000, 1n],
    ] as const)
      assert.deepEqual(await op.process(rec(k, ts, { n })), { late: false, results: [] });
    assert.deepEqual(await op.advance(9_999), [], "a window [0,10s) is still open at watermark 9,999");
    assert.deepEqual(view(await op.advance(10_000)), [
      { key: "a", windowStart: 0, windowEnd: 10_000, c: 2, s: 6, lo: 2, hi: 4, mean: 3 },
      { key: "b", windowStart: 0, windowEnd: 10_000, c: 1, s: 10, lo: 10, hi: 10, mean: 10 },
    ]);
    assert.equal(op.cached, 1, "only [10s,20s) of a remains");
    assert.deepEqual(await op.process(rec("a", 9_000)), { late: true, results: [] }, "its window has closed: late");
  });

  test("grace keeps a window open past its end; the watermark never goes back", async () => {
    const op = new Harness(step({ tumbling: "10s", grace: "5s" }, { c: { count: {} } }));
    await op.process(rec("a", 1_000));
    assert.deepEqual(await op.advance(14_999), []);
    assert.equal((await op.process(rec("a", 2_000))).late, false, "inside the grace period");
    assert.deepEqual(await op.advance(3_000), [], "a lower watermark is ignored");
    assert.equal(op.watermark, 14_999);
    assert.deepEqual(view(await op.advance(15_000)), [{ key: "a", windowStart: 0, windowEnd: 10_000, c: 2 }]);
  });

  test("hopping: a record counts in every window that covers it; late only when all have closed", async () => {
    const op = new Harness(step({ hopping: { size: "10s", advance: "5s" } }, { c: { count: {} } }));
    await op.process(rec("a", 7_000)); // in [0,10) and [5,15)
    assert.deepEqual(view(await op.advance(10_000)), [{ key: "a", windowStart: 0, windowEnd: 10_000, c: 1 }]);
    assert.equal((await op.process(rec("a", 8_000))).late, false, "[5,15) is still open");
    assert.deepEqual(view(await op.advance(15_000)), [{ key: "a", windowStart: 5_000, windowEnd: 15_000, c: 2 }]);
    assert.equal((await op.process(rec("a", 8_000))).late, true);
  });

  test("sessions merge across a gap and split beyond it; emit on update gives each new result", async () => {
    const op = new Harness(step({ session: { gap: "5s" } }, { c: { count: {} }, s: { sum: "value.n" } }, { emit: "onUpdate" }));
    assert.deepEqual(view((await op.process(rec("a", 1_000))).results), [{ key: "a", windowStart: 1_000, windowEnd: 6_000, c: 1, s: 1 }]);
    assert.deepEqual(view((await op.process(rec("a", 12_000))).results), [{ key: "a", windowStart: 12_000, windowEnd: 17_000, c: 1, s: 1 }]);
    // 6,500 joins neither ([1,6) ends at 6,000)... 5,500 bridges [1,6) and nothing else
    assert.deepEqual(view((await op.process(rec("a", 5_500))).results), [{ key: "a", windowStart: 1_000, windowEnd: 10_500, c: 2, s: 2 }]);
    // 8,000 bridges [1,10.5) and [12,17): one session of four
    assert.deepEqual(view((await op.process(rec("a", 8_000))).results), [{ key: "a", windowStart: 1_000, windowEnd: 17_000, c: 4, s: 4 }]);
    assert.equal(op.cached, 1);
    const changes = await op.commit();
    assert.equal(changes.puts.length, 1, "one live session is written");
    assert.equal(changes.deletes.length, 3, "the merged-away sessions become tombstones");
  });

  test("reduce folds with a CEL accumulator; session windows refuse it", async () => {
    const op = new Harness(step({ tumbling: "1m" }, { names: { reduce: { init: "[]", expr: "acc + [value.name]" } } }));
    await op.process(rec("a", 1, { name: "x" }));
    await op.process(rec("a", 2, { name: "y" }));
    assert.deepEqual(view(await op.advance(60_000)), [{ key: "a", windowStart: 0, windowEnd: 60_000, names: ["x", "y"] }]);
    assert.throws(
      () => new Harness(step({ session: { gap: "1m" } }, { names: { reduce: { init: "[]", expr: "acc + [value.name]" } } })),
      /a session window cannot use reduce/,
    );
  });

  test("a record an aggregation cannot read is refused whole, and changes nothing", async () => {
    const op = new Harness(step({ tumbling: "10s" }, { c: { count: {} }, s: { sum: "value.n" } }));
    await op.process(rec("a", 1_000, { n: 1n }));
    await op.commit();
    await assert.rejects(op.process(rec("a", 2_000, { n: "many" })), /aggregate s \(sum\) needs a number, got string/);
    await assert.rejects(op.process(rec("a", 2_000, { m: 1n })), /aggregate s \(sum\): No such key: n/);
    assert.deepEqual(await op.commit(), { puts: [], deletes: [] });
    assert.deepEqual(view(await op.advance(10_000)), [{ key: "a", windowStart: 0, windowEnd: 10_000, c: 1, s: 1 }]);
  });

  test("state round-trips through the store encoding, and a restored operator carries on", async () => {
    const a = new Harness(step({ tumbling: "10s" }, { c: { count: {} }, mean: { avg: "value.n" } }));
    await a.process(rec("k", 1_000, { n: 2n }));
    await a.process(rec("k", 2_000, { n: 3.5 }));
    await a.commit();
    // a restore writes the changelog's records to a store; an operator opened on it reads them back
    const b = new Harness(a.step, {}, a.kv);
    b.op.resume(Number.NEGATIVE_INFINITY);
    assert.deepEqual(await b.commit(), { puts: [], deletes: [] }, "opening is not a change");
    await b.process(rec("k", 3_000, { n: 0.5 }));
    assert.deepEqual(view(await b.advance(10_000)), [{ key: "k", windowStart: 0, windowEnd: 10_000, c: 3, mean: 2 }]);
  });

  test("TTL: an entry idle past it is never read again, and the sweeper turns it into a tombstone", async () => {
    let now = 0;
    const op = new Harness(step({ tumbling: "1h" }, { c: { count: {} } }, { emit: "onUpdate" }), { ttlMs: 2_000, now: () => now });
    await op.process(rec("a", 1_000));
    await op.process(rec("b", 1_000));
    now = 1_000;
    assert.deepEqual(view((await op.process(rec("a", 1_000))).results), [{ key: "a", windowStart: 0, windowEnd: 3_600_000, c: 2 }]);
    await op.commit();
    now = 3_500; // b idle 3.5 s, a idle 2.5 s
    assert.equal((await op.sweep()).deleted, 2);
    assert.equal((await op.commit()).deletes.length, 2, "tombstones for both");
    assert.deepEqual(view((await op.process(rec("a", 2_000))).results), [{ key: "a", windowStart: 0, windowEnd: 3_600_000, c: 1 }], "a starts over");
  });

  test("segments: half the span and at least a minute; dropped once their last possible window has closed", async () => {
    const minute = step({ tumbling: "1m" }, { c: { count: {} } });
    assert.equal(segmentMs(minute), 60_000, "a 1m window: a minute, the least");
    const hour = step({ tumbling: "1h", grace: "10m" }, { c: { count: {} } });
    assert.equal(segmentMs(hour), 35 * 60_000, "half of 1h plus 10m of grace");
    assert.equal(segmentMs(step({ session: { gap: "4m" } }, { c: { count: {} } })), 120_000, "a session: half its gap");
    assert.equal(droppableBefore(minute, Number.NEGATIVE_INFINITY), undefined, "no watermark yet: nothing to drop");
    // ends in [0, 60s) are segment 0; its last possible window ends at 59,999 and closes at watermark 59,999
    assert.equal(droppableBefore(minute, 59_998), 0);
    assert.equal(droppableBefore(minute, 59_999), 60_000);
    // grace delays it: with 10m of grace, segment [0, 35m) closes once the watermark reaches 45m - 1 ms
    assert.equal(droppableBefore(hour, 45 * 60_000 - 2), 0);
    assert.equal(droppableBefore(hour, 45 * 60_000 - 1), 35 * 60_000);
  });

  test("store keys: every window that ends before an end sorts below its endKey, and the end reads back", async () => {
    const k = Buffer.from("zz");
    assert.ok(storeKey(59_999, 0, k).compare(endKey(60_000)) < 0);
    assert.ok(storeKey(60_000, -1_000_000, Buffer.alloc(0)).compare(endKey(60_000)) > 0);
    assert.ok(storeKey(-5, -10, k).compare(endKey(0)) < 0, "negative times sort first");
    assert.equal(endOfKey(storeKey(123_456, 0, k)), 123_456);
  });

  test("closing: no delete and no tombstone per window; takeChanges names the end below which segments go", async () => {
    const op = new Harness(step({ tumbling: "10s" }, { c: { count: {} } }));
    await op.process(rec("a", 1_000));
    await op.process(rec("b", 2_000));
    await op.commit();
    await op.process(rec("a", 3_000)); // updated, then closed before it was written
    await op.process(rec("a", 75_000));
    assert.equal((await op.advance(10_000)).length, 2);
    let changes = await op.commit();
    assert.deepEqual(changes.deletes, [], "closed windows are not deleted one by one");
    assert.deepEqual(
      changes.puts.map(([key]) => endOfKey(key)),
      [80_000],
      "the update of a window closed in the same batch is not written; the open one is",
    );
    assert.equal(changes.dropBefore, 0, "the segments before [0, 60s), which may still get windows ending up to 59,999");
    await op.advance(60_000);
    changes = await op.commit();
    assert.equal(changes.dropBefore, 60_000, "every window ending before 60s has closed: that segment goes");
    assert.equal((await op.commit()).dropBefore, undefined, "said once");
    await op.advance(61_000);
    assert.equal((await op.commit()).dropBefore, undefined, "no further segment has closed");
  });

  test("a restore leaves closed what the watermark had closed: nothing is emitted twice", async () => {
    const s = step({ tumbling: "10s" }, { c: { count: {} } });
    const before = new Harness(s);
    await before.process(rec("a", 1_000));
    await before.process(rec("a", 15_000));
    await before.commit();
    const after = new Harness(s, {}, before.kv);
    after.op.resume(10_000);
    assert.deepEqual(view(await after.advance(20_000)), [{ key: "a", windowStart: 10_000, windowEnd: 20_000, c: 1 }], "[0, 10s) had closed");
  });
});

describe("defect 9: numbers an aggregate cannot hold go to the DLQ, and a reload never changes a value", () => {
  const agg = { s: { sum: "value.n" }, lo: { min: "value.n" }, hi: { max: "value.n" }, mean: { avg: "value.n" } };
  const refused = (op: Harness, r: WindowInput, why: RegExp) =>
    assert.rejects(op.process(r), (err: Error & { kind?: string }) => err.kind === "eval" && why.test(err.message));

  test("Infinity (1e400 in JSON), -Infinity and NaN are refused as eval; the window keeps its values", async () => {
    const op = new Harness(step({ tumbling: "10s" }, agg));
    await op.process(rec("a", 1_000, { n: 2.5 }));
    for (const n of [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN]) await refused(op, rec("a", 2_000, { n }), /not a finite number/);
    assert.deepEqual(view(await op.advance(10_000)), [{ key: "a", windowStart: 0, windowEnd: 10_000, s: 2.5, lo: 2.5, hi: 2.5, mean: 2.5 }]);
  });

  test("a double sum that overflows to Infinity, and an int sum past int64, are refused", async () => {
    const op = new Harness(step({ tumbling: "10s" }, { s: { sum: "value.n" } }));
    await op.process(rec("a", 1_000, { n: 1.7e308 }));
    await refused(op, rec("a", 2_000, { n: 1.7e308 }), /the result Infinity is not a finite number/);
    await op.process(rec("b", 1_000, { n: 2n ** 63n - 1n }));
    await refused(op, rec("b", 2_000, { n: 1n }), /overflows int64/);
    await refused(op, rec("c", 2_000, { n: 2n ** 64n }), /overflows int64/);
    assert.deepEqual(
      (await op.advance(10_000)).map((r) => r.value.s),
      [1.7e308, 2n ** 63n - 1n],
    );
  });

  test("a hopping record refused in its second window changes neither", async () => {
    const op = new Harness(step({ hopping: { size: "10s", advance: "5s" } }, { s: { sum: "value.n" } }));
    await op.process(rec("a", 7_000, { n: 1 })); // in [0,10s) and [5s,15s)
    await op.process(rec("a", 12_000, { n: 1.7e308 })); // in [5s,15s) and [10s,20s)
    // fine in [0,10s), infinite in [5s,15s): refused, and [0,10s) is not updated either
    await refused(op, rec("a", 8_000, { n: 1.7e308 }), /not a finite number/);
    assert.deepEqual(
      (await op.advance(20_000)).map((r) => r.value.s),
      [1, 1.7e308, 1.7e308],
    );
  });

  test("a reduce whose result grows past the state's bound is refused", async () => {
    const op = new Harness(step({ tumbling: "10s" }, { all: { reduce: { init: "''", expr: "acc + value.s" } } }));
    const chunk = "x".repeat(100_000);
    await op.process(rec("a", 1_000, { s: chunk }));
    await op.process(rec("a", 2_000, { s: chunk }));
    await refused(op, rec("a", 3_000, { s: chunk }), /over the 262144 a window's state may hold/);
  });

  test("a stored aggregate comes back as it went: doubles that are integral or not finite too", async () => {
    const a = new Harness(step({ tumbling: "10s" }, { all: { reduce: { init: "[]", expr: "acc + [value.n]" } } }));
    await a.process(rec("a", 1_000, { n: 3.0 }));
    await a.process(rec("a", 2_000, { n: 0.5 }));
    await a.process(rec("a", 3_000, { n: 2n ** 62n }));
    await a.commit();
    const b = new Harness(a.step, {}, a.kv);
    b.op.resume(Number.NEGATIVE_INFINITY);
    assert.deepEqual(
      (await b.advance(10_000)).map((r) => r.value.all),
      [[3, 0.5, 2n ** 62n]],
    );
  });
});

test("defect 5: a window whose changelog record would outgrow a broker's limit is refused (encode), and nothing changes", async () => {
  const op = new Harness(step({ tumbling: "10s" }, { c: { count: {} } }));
  const big = "k".repeat(600_000); // the key goes into the changelog record twice: in its key and in its value
  await assert.rejects(op.process(rec(big, 1_000)), (err: Error & { kind?: string }) => err.kind === "encode" && /changelog record/.test(err.message));
  assert.equal(op.cached, 0);
  await op.process(rec("small", 1_000));
  assert.equal(op.cached, 1);
});

/** A table step (an aggregate without a window) after a keyBy, compiled as a pipeline would have it. */
function tableStep(aggregate: NonNullable<StepSpec["aggregate"]>, over: Partial<StepSpec> = {}, ttl?: string): WindowStep {
  const r = compile(
    {
      kafka: { bootstrapServers: ["k:9092"] },
      source: { topics: ["in"] },
      steps: [
        { name: "by", keyBy: "value.k" },
        { name: "t", aggregate, ...over },
      ],
      sink: { topic: "out" },
      ...(ttl ? { state: { ttl } } : {}),
    },
    { namespace: "ns", name: "p" },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.topology.steps[1] as WindowStep;
}

/** Every order of a list (for a handful of items). */
function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest]));
}

describe("tables: aggregate steps without a window", () => {
  const refused = (op: Harness, r: WindowInput, why: RegExp) =>
    assert.rejects(op.process(r), (err: Error & { kind?: string }) => err.kind === "eval" && why.test(err.message));

  test("one running value per key; each key a batch changed comes out once, with its value at the batch's end", async () => {
    const op = new Harness(tableStep({ n: { count: {} }, total: { sum: "value.n" } }));
    for (const [k, n] of [
      ["a", 1n],
      ["b", 5n],
      ["a", 2n],
      ["a", 3n],
    ] as const)
      assert.deepEqual((await op.process(rec(k, 1_000, { n }))).results, [], "nothing per record");
    assert.deepEqual(
      view(op.op.takeUpdates()).sort((x, y) => String(x.key).localeCompare(String(y.key))),
      [
        { key: "a", n: 3, total: 6 },
        { key: "b", n: 1, total: 5 },
      ],
    );
    assert.deepEqual(op.op.takeUpdates(), [], "taken once");
    await op.commit();
    await op.process(rec("a", 500, { n: 10n }));
    assert.deepEqual(view(op.op.takeUpdates()), [{ key: "a", n: 4, total: 16 }], "the next batch goes on from the value, late or not");
  });

  test("a watermark closes nothing and drops no segment; a table's result carries the greatest event time of its key", async () => {
    const op = new Harness(tableStep({ n: { count: {} } }));
    await op.process(rec("a", 5_000));
    await op.process(rec("a", 3_000));
    assert.deepEqual(await op.advance(1e13), []);
    const [r] = op.op.takeUpdates();
    assert.equal(r?.eventTime, 5_000);
    const changes = await op.commit();
    assert.equal(changes.dropBefore, undefined);
    assert.equal(changes.puts.length, 1);
    assert.equal((await op.process(rec("a", 4_000))).late, false, "a table takes every record");
  });

  test("latest: the greatest `by` wins, equal `by` the greater value, whatever the order the records come in", async () => {
    const s = tableStep({ last: { latest: { value: "value.v", by: "[value.t, value.p]" } } });
    const records = [
      rec("a", 0, { t: 2n, p: 1n, v: "x" }),
      rec("a", 0, { t: 2n, p: 7n, v: "y" }),
      rec("a", 0, { t: 1n, p: 99n, v: "z" }),
      rec("a", 0, { t: 2n, p: 7n, v: "w" }),
    ];
    const seen = new Set<string>();
    for (const order of permutations(records)) {
      const op = new Harness(s);
      for (const r of order) await op.process(r);
      seen.add(String(op.op.takeUpdates()[0]?.value.last));
    }
    assert.deepEqual([...seen], ["y"], "t 2, p 7 twice: the greater value of the two");
  });

  test("latest without `by` follows event time", async () => {
    const op = new Harness(tableStep({ last: { latest: { value: "value.v" } } }));
    await op.process(rec("a", 2_000, { v: "late-in-time" }));
    await op.process(rec("a", 1_000, { v: "earlier" }));
    assert.equal(op.op.takeUpdates()[0]?.value.last, "late-in-time");
  });

  test("topN: the n greatest by `by`, greatest first, ties by value, duplicates kept, in any read order", async () => {
    const s = tableStep({ top: { topN: { limit: 3, by: "value.price", value: "value.id" } } });
    const records = [5n, 9n, 1n, 9n, 7n].map((price, i) => rec("a", i, { price, id: `b${i}` }));
    const seen = new Set<string>();
    for (const order of permutations(records)) {
      const op = new Harness(s);
      for (const r of order) await op.process(r);
      seen.add(JSON.stringify(op.op.takeUpdates()[0]?.value.top));
    }
    assert.deepEqual([...seen], [JSON.stringify(["b3", "b1", "b4"])]);
    const dup = new Harness(tableStep({ top: { topN: { limit: 2, by: "value.price" } } }));
    await dup.process(rec("a", 0, { price: 3n }));
    await dup.process(rec("a", 0, { price: 3n }));
    assert.deepEqual(dup.op.takeUpdates()[0]?.value.top, [{ price: 3n }, { price: 3n }]);
  });

  test("latest and topN come back from the store as they went, and go on", async () => {
    const a = new Harness(tableStep({ last: { latest: { value: "value", by: "value.t" } }, top: { topN: { limit: 2, by: "value.t" } } }));
    await a.process(rec("a", 7_000, { t: new Date(5), b: new Uint8Array([1, 2]) }));
    await a.process(rec("a", 9_000, { t: new Date(9), b: new Uint8Array([3]) }));
    await a.commit();
    const b = new Harness(a.step, {}, a.kv);
    b.op.resume(Number.NEGATIVE_INFINITY);
    await b.process(rec("a", 8_000, { t: new Date(7), b: new Uint8Array([4]) }));
    const [r] = b.op.takeUpdates();
    assert.deepEqual(r?.value.last, { t: new Date(9), b: new Uint8Array([3]) });
    assert.deepEqual(
      (r?.value.top as { t: Date }[]).map((x) => x.t.getTime()),
      [9, 7],
    );
    assert.equal(r?.eventTime, 9_000, "the greatest event time, kept in the store");
  });

  test("a `by` of another kind than the ones before, or NaN, is the record's error (eval), and the key keeps its value", async () => {
    const op = new Harness(tableStep({ last: { latest: { value: "value.v", by: "value.by" } } }));
    await op.process(rec("a", 0, { by: 1n, v: "one" }));
    await refused(op, rec("a", 0, { by: "x", v: "two" }), /cannot be ordered/);
    await refused(op, rec("a", 0, { by: Number.NaN, v: "three" }), /NaN/);
    assert.equal(op.op.takeUpdates()[0]?.value.last, "one");
  });

  test("TTL: an idle key expires; with emitTombstones its last result comes back for a tombstone, without only the count", async () => {
    let now = 0;
    const clock = { ttlMs: 2_000, now: () => now };
    const quiet = new Harness(tableStep({ n: { count: {} } }, {}, "2s"), clock);
    const loud = new Harness(tableStep({ n: { count: {} } }, { emitTombstones: true }, "2s"), clock);
    for (const op of [quiet, loud]) {
      await op.process(rec("a", 0));
      await op.process(rec("b", 0));
      op.op.takeUpdates();
      await op.commit();
    }
    now = 1_500;
    for (const op of [quiet, loud]) {
      await op.process(rec("b", 0));
      op.op.takeUpdates();
    }
    now = 3_000;
    assert.deepEqual(await quiet.sweep(), { deleted: 1, tombstones: [] });
    const swept = await loud.sweep();
    assert.equal(swept.deleted, 1);
    assert.deepEqual(view(swept.tombstones), [{ key: "a", n: 1 }]);
    assert.equal((await loud.commit()).deletes.length, 1, "and a changelog tombstone");
    await loud.process(rec("a", 0));
    assert.deepEqual(view(loud.op.takeUpdates()), [{ key: "a", n: 1 }], "a starts over");
  });

  test("a record that leaves every aggregate as it was is no change to emit, but is still written (its TTL)", async () => {
    const op = new Harness(tableStep({ hi: { max: "value.n" }, top: { topN: { limit: 2, by: "value.n" } } }));
    await op.process(rec("a", 0, { n: 5n }));
    await op.process(rec("a", 0, { n: 9n }));
    op.op.takeUpdates();
    await op.commit();
    await op.process(rec("a", 1, { n: 1n }));
    assert.deepEqual(op.op.takeUpdates(), [], "below the max and outside the top 2");
    assert.equal((await op.commit()).puts.length, 1, "the key is written, as updated now");
    await op.process(rec("a", 2, { n: 7n }));
    assert.deepEqual(
      view(op.op.takeUpdates()).map((r) => [r.hi, (r.top as { n: bigint }[]).map((x) => Number(x.n))]),
      [[9, [9, 7]]],
      "into the top 2: a change",
    );
  });

  test("a rollback forgets the changed keys of the batches it drops", async () => {
    const op = new Harness(tableStep({ n: { count: {} } }));
    await op.process(rec("a", 0));
    op.op.rollback();
    assert.deepEqual(op.op.takeUpdates(), []);
  });
});
