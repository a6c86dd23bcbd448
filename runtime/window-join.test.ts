import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { prng } from "../test/support/prng.ts";
import type { HeldRecord, JoinOutput } from "./join.ts";
import { memoryStore } from "./state/memory-store.ts";
import type { Store } from "./store.ts";
import { lastWrites } from "./task.ts";
import { type Side, WindowJoinOperator, type WindowJoinStepLike } from "./window-join.ts";

const inner: WindowJoinStepLike = { name: "with-click", as: "click", type: "inner", withinMs: 10, graceMs: 0 };
const left: WindowJoinStepLike = { ...inner, type: "left" };
const outer: WindowJoinStepLike = { ...inner, type: "outer" };

let offsets = 0n;
function rec(k: string, eventTime: number, value: unknown, index = 0): HeldRecord {
  return { keyBytes: Buffer.from(k), eventTime, offset: offsets++, index, value, headers: [["h", "1"]], timestamp: BigInt(eventTime) };
}
const view = (k: string, t: number, n: number): HeldRecord => rec(k, t, { view: n });
const click = (k: string, t: number, n: number): HeldRecord => rec(k, t, { click: n });

type Input = [Side, HeldRecord];

/** One batch as the worker runs it: the records in order, then the watermark, then the commit. */
async function batch(op: WindowJoinOperator, inputs: Input[], watermark?: number, changelog?: { key: Buffer; value?: Buffer | null }[]): Promise<JoinOutput[]> {
  const late: HeldRecord[] = [];
  for (const [side, r] of inputs) if ((side === 0 ? op.stream(r) : op.other(r)).late) late.push(r);
  assert.deepEqual(late, [], "no record late");
  const out = watermark === undefined ? [] : await op.advance(watermark);
  const c = op.takeChanges();
  changelog?.push(...c.deletes.map((key) => ({ key, value: null })), ...c.puts.map(([key, value]) => ({ key, value })));
  await c.apply();
  return out;
}

type Row = [string, number, unknown];
const rows = (out: JoinOutput[]): Row[] =>
  out.map((o) => (!o.ok ? ["error", 0, o.error] : "value" in o ? [o.record.keyBytes.toString(), o.record.eventTime, o.value] : ["deleted", 0, o.last]));
const sorted = (r: Row[]) => [...r].sort((x, y) => x[1] - y[1] || JSON.stringify(x[2]).localeCompare(JSON.stringify(y[2])));

describe("windowed stream-stream join on event time", () => {
  test("a pair at most within apart joins once, at the later one's time, whichever side came first; one further apart does not", async () => {
    for (const order of ["views first", "clicks first"]) {
      const op = new WindowJoinOperator(inner, memoryStore());
      const views: Input[] = [
        [0, view("a", 100, 1)],
        [0, view("b", 100, 2)],
      ];
      // a: 10 after (the bound is inclusive) and 5 before; b: 11 after, too far
      const clicks: Input[] = [
        [1, click("a", 110, 1)],
        [1, click("a", 95, 2)],
        [1, click("b", 111, 3)],
      ];
      const out = await batch(op, order === "views first" ? [...views, ...clicks] : [...clicks, ...views], 200);
      assert.deepEqual(
        sorted(rows(out)),
        [
          ["a", 100, { view: 1, click: { click: 2 } }],
          ["a", 110, { view: 1, click: { click: 1 } }],
        ],
        order,
      );
      assert.deepEqual(await op.advance(1_000), [], "joined once");
    }
  });

  test("records are held until the watermark passes them: a record of a later batch still meets one held", async () => {
    const op = new WindowJoinOperator(inner, memoryStore());
    assert.deepEqual(await batch(op, [[0, view("a", 100, 1)]], 99), []);
    assert.deepEqual(rows(await batch(op, [[1, click("a", 104, 7)]], 120)), [["a", 104, { view: 1, click: { click: 7 } }]]);
  });

  test("left: a view that met no click comes out alone, with null, once the watermark is within past it; outer: a click too", async () => {
    const op = new WindowJoinOperator(left, memoryStore());
    assert.equal(op.forwardable, Number.NEGATIVE_INFINITY);
    await batch(op, [
      [0, view("a", 100, 1)],
      [0, view("b", 100, 2)],
      [1, click("a", 105, 3)],
      [1, click("c", 100, 4)],
    ]);
    assert.deepEqual(rows(await op.advance(105)), [["a", 105, { view: 1, click: { click: 3 } }]], "b's may still meet a click up to 110");
    assert.equal(op.forwardable, 95, "a left join forwards its watermark less within: b's result comes at 100");
    assert.deepEqual(rows(await op.advance(110)), [["b", 100, { view: 2, click: null }]], "a met one; c's click is not a view");
    const o = new WindowJoinOperator(outer, memoryStore());
    await batch(o, [
      [0, view("b", 100, 2)],
      [1, click("c", 100, 4)],
    ]);
    assert.deepEqual(sorted(rows(await o.advance(200))), [
      ["c", 100, { click: { click: 4 } }],
      ["b", 100, { view: 2, click: null }],
    ]);
    const i = new WindowJoinOperator(inner, memoryStore());
    await batch(i, [[0, view("b", 100, 2)]], 200);
    assert.equal(i.forwardable, 200, "an inner join forwards its watermark as it stands");
  });

  test("a record at or below the watermark is late; grace takes records that far behind it, and holds the results as long", async () => {
    const op = new WindowJoinOperator(inner, memoryStore());
    await batch(op, [[0, view("a", 100, 1)]], 100);
    assert.equal(op.other(click("a", 100, 1)).late, true);
    assert.equal(op.stream(view("a", 90, 2)).late, true);
    const g = new WindowJoinOperator({ ...inner, graceMs: 50 }, memoryStore());
    await batch(g, [[0, view("a", 100, 1)]], 140);
    assert.equal(g.watermark, 90, "taken up to the task's watermark less grace");
    assert.deepEqual(rows(await batch(g, [[1, click("a", 95, 5)]], 160)), [["a", 100, { view: 1, click: { click: 5 } }]], "95 is not late under grace");
  });

  test("a stream value that is not a map is refused as it comes; the input's values may be anything", () => {
    const op = new WindowJoinOperator(inner, memoryStore());
    assert.match(op.refuses([1, 2]) ?? "", /must be a map, not list/);
    assert.equal(op.refuses({ a: 1 }), undefined);
  });

  test("state goes once the watermark is within past it: the store ends empty but for where it released up to", async () => {
    const store = memoryStore();
    const op = new WindowJoinOperator(left, store);
    await batch(op, [
      [0, view("a", 100, 1)],
      [1, click("a", 101, 1)],
      [0, view("b", 100, 2)],
    ]);
    await batch(op, [], 105);
    assert.ok(store.entries.size > 3, "held and kept");
    await batch(op, [], 111);
    assert.equal(store.entries.size, 1, "only the released watermark");
  });

  test("a rollback drops the batch's records and watermark; read again, the batch gives the same", async () => {
    const op = new WindowJoinOperator(inner, memoryStore());
    await batch(op, [[0, view("a", 100, 1)]], 50);
    op.other(click("a", 102, 9));
    assert.equal((await op.advance(200)).length, 1);
    op.takeChanges(); // written to the changelog, but the commit failed: never applied
    op.rollback();
    assert.equal(op.watermark, 50);
    assert.deepEqual(rows(await batch(op, [], 200)), [], "the click is gone with the batch");
    assert.deepEqual(await op.advance(300), []);
  });

  test("any read order of the two sides, restored from the changelog now and then, gives the batch's join: inner, left and outer", async () => {
    const random = prng(20261206);
    const keys = ["a", "b", "c", "d", "e"];
    const outOfOrder = 40;
    const within = 15;
    const views = Array.from({ length: 300 }, (_, i) => ({
      k: keys[Math.floor(random() * keys.length)] as string,
      t: i * 4 + Math.floor(random() * outOfOrder),
      n: i,
    }));
    const clicks = Array.from({ length: 200 }, (_, i) => ({
      k: keys[Math.floor(random() * keys.length)] as string,
      t: i * 6 + Math.floor(random() * outOfOrder),
      n: i,
    }));
    for (const type of ["inner", "left", "outer"] as const) {
      // the batch computation
      const expected: Row[] = [];
      const matchedClicks = new Set<number>();
      for (const v of views) {
        let met = false;
        for (const c of clicks)
          if (c.k === v.k && Math.abs(c.t - v.t) <= within) {
            met = true;
            matchedClicks.add(c.n);
            expected.push([v.k, Math.max(v.t, c.t), { view: v.n, click: { click: c.n } }]);
          }
        if (!met && type !== "inner") expected.push([v.k, v.t, { view: v.n, click: null }]);
      }
      if (type === "outer") for (const c of clicks) if (!matchedClicks.has(c.n)) expected.push([c.k, c.t, { click: { click: c.n } }]);
      for (let run = 0; run < 4; run++) {
        let store: Store = memoryStore();
        const changelog: { key: Buffer; value?: Buffer | null }[] = [];
        let op = new WindowJoinOperator({ ...inner, type, withinMs: within }, store);
        const queue: Input[] = [];
        let vi = 0;
        let ci = 0;
        offsets = 0n;
        while (vi < views.length || ci < clicks.length) {
          if (vi >= views.length || (ci < clicks.length && random() < 0.4)) {
            const c = clicks[ci++] as (typeof clicks)[number];
            queue.push([1, click(c.k, c.t, c.n)]);
          } else {
            const v = views[vi++] as (typeof views)[number];
            queue.push([0, view(v.k, v.t, v.n)]);
          }
        }
        const out: JoinOutput[] = [];
        let maxView = Number.NEGATIVE_INFINITY;
        let maxClick = Number.NEGATIVE_INFINITY;
        while (queue.length > 0) {
          const b = queue.splice(0, 1 + Math.floor(random() * 25));
          for (const [side, r] of b) {
            if (side === 0) maxView = Math.max(maxView, r.eventTime);
            else maxClick = Math.max(maxClick, r.eventTime);
          }
          const done = queue.length === 0;
          out.push(...(await batch(op, b, done ? Number.POSITIVE_INFINITY : Math.min(maxView, maxClick) - outOfOrder - 1, changelog)));
          if (random() < 0.2) {
            // the task moves: a new store, rebuilt from the changelog alone
            const { puts, deletes } = lastWrites(changelog);
            store = memoryStore();
            await store.write(puts, deletes);
            op = new WindowJoinOperator({ ...inner, type, withinMs: within }, store);
            await op.resume();
          }
        }
        assert.deepEqual(sorted(rows(out)), sorted(expected), `${type}, run ${run}`);
      }
      assert.ok(expected.length > 150, `${type}: the data joins`);
    }
  });
});
