import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { prng } from "../test/support/prng.ts";
import { type HeldRecord, JoinOperator, type JoinOutput, type JoinStepLike, MAX_VERSIONS, versionAt, versionsKey, withVersion } from "./join.ts";
import { memoryStore } from "./state/memory-store.ts";
import { lastWrites } from "./task.ts";

const inner: JoinStepLike = { name: "with-auction", as: "auction", type: "inner" };
const left: JoinStepLike = { ...inner, type: "left" };
const key = (k: string) => Buffer.from(k);

let offsets = 0n;
function rec(k: string, eventTime: number, value: unknown = { bid: eventTime }, index = 0): HeldRecord {
  return { keyBytes: key(k), eventTime, offset: offsets++, index, value, headers: [["h", "1"]], timestamp: BigInt(eventTime) };
}

/** One batch as the worker runs it: prefetch, the records in order, then the watermark, then the commit. */
type Input = { table: [string, number, unknown] } | { stream: HeldRecord };

async function batch(op: JoinOperator, inputs: Input[], watermark?: number): Promise<JoinOutput[]> {
  await op.prefetch(inputs.map((i) => ("table" in i ? key(i.table[0]) : i.stream.keyBytes)));
  const late: HeldRecord[] = [];
  for (const i of inputs) {
    if ("table" in i) op.table(key(i.table[0]), i.table[1], i.table[2]);
    else if (op.stream(i.stream).late) late.push(i.stream);
  }
  assert.deepEqual(late, [], "no record late");
  const out = watermark === undefined ? [] : await op.advance(watermark);
  await op.takeChanges().apply();
  return out;
}

const joined = (out: JoinOutput[]) =>
  out.map((o) => (!o.ok ? ["error", o.error] : "value" in o ? [o.record.keyBytes.toString(), o.record.eventTime, o.value] : ["deleted", o.last]));

describe("stream-table join on event time", () => {
  test("a record meets the version valid at its event time, whether the table's came before it or after", async () => {
    for (const order of ["table first", "stream first"]) {
      const op = new JoinOperator(inner, memoryStore());
      const table: Input[] = [{ table: ["a1", 90, { cat: 10 }] }, { table: ["a1", 110, { cat: 11 }] }];
      const stream: Input[] = [{ stream: rec("a1", 100) }, { stream: rec("a1", 110) }];
      const out = await batch(op, order === "table first" ? [...table, ...stream] : [...stream, ...table], 200);
      assert.deepEqual(
        joined(out),
        [
          ["a1", 100, { bid: 100, auction: { cat: 10 } }],
          ["a1", 110, { bid: 110, auction: { cat: 11 } }],
        ],
        order,
      );
    }
  });

  test("a record is held until the watermark passes its event time: a version that comes in a later batch still counts", async () => {
    const op = new JoinOperator(inner, memoryStore());
    assert.deepEqual(await batch(op, [{ stream: rec("a1", 100) }], 99), [], "held: the watermark is below it");
    const out = await batch(op, [{ table: ["a1", 95, { cat: 10 }] }], 100);
    assert.deepEqual(joined(out), [["a1", 100, { bid: 100, auction: { cat: 10 } }]]);
    assert.deepEqual(await op.advance(500), [], "released once");
  });

  test("inner drops a record with no version by its time, or whose key was deleted by then; left gives it with null", async () => {
    for (const step of [inner, left]) {
      const op = new JoinOperator(step, memoryStore());
      const out = await batch(
        op,
        [
          { table: ["a1", 50, { cat: 10 }] },
          { table: ["a1", 80, undefined] },
          { table: ["a2", 150, { cat: 12 }] },
          { stream: rec("a1", 60) },
          { stream: rec("a1", 90) },
          { stream: rec("a2", 100) },
          { stream: rec("a3", 100) },
        ],
        1000,
      );
      const rows = joined(out);
      if (step.type === "inner") assert.deepEqual(rows, [["a1", 60, { bid: 60, auction: { cat: 10 } }]]);
      else
        assert.deepEqual(rows, [
          ["a1", 60, { bid: 60, auction: { cat: 10 } }],
          ["a1", 90, { bid: 90, auction: null }],
          ["a2", 100, { bid: 100, auction: null }],
          ["a3", 100, { bid: 100, auction: null }],
        ]);
    }
  });

  test("a table record at or below the watermark still counts, from its time on, for the records not yet joined; the joined keep theirs", async () => {
    const op = new JoinOperator(left, memoryStore());
    const first = await batch(op, [{ table: ["a1", 50, { cat: 10 }] }, { stream: rec("a1", 100) }, { stream: rec("a1", 200) }], 150);
    assert.deepEqual(joined(first), [["a1", 100, { bid: 100, auction: { cat: 10 } }]]);
    // a deletion at 120, read when the watermark is 150 already: late for the record at 100, in time for the one at 200
    const second = await batch(op, [{ table: ["a1", 120, undefined] }], 300);
    assert.deepEqual(joined(second), [["a1", 200, { bid: 200, auction: null }]]);
  });

  test("released in event-time order, then offset, then index", async () => {
    const op = new JoinOperator(left, memoryStore());
    const a = rec("k", 300);
    const b = rec("k", 100, { bid: 1 }, 1);
    const c = { ...b, index: 0, value: { bid: 0 } };
    const out = await batch(op, [{ stream: a }, { stream: b }, { stream: c }], 1000);
    assert.deepEqual(
      out.map((o) => [o.record.eventTime, o.record.index]),
      [
        [100, 0],
        [100, 1],
        [300, 0],
      ],
    );
  });

  test("a record at or below the watermark is late; a value that is not a map is an error, not a crash", async () => {
    const op = new JoinOperator(left, memoryStore());
    await batch(op, [], 100);
    assert.deepEqual(op.stream(rec("k", 100)), { late: true });
    assert.deepEqual(op.stream(rec("k", 101, "text")), { late: false });
    const out = await op.advance(200);
    assert.equal(out.length, 1);
    assert.ok(!out[0]?.ok);
    assert.match(out[0]?.ok === false ? out[0].error : "", /must be a map, not string/);
  });

  test("versions: each update drops those no record can need (before the newest at or below the watermark); a lone deletion goes", () => {
    const v = (t: number, x?: unknown) => (x === undefined ? { t, d: true as const } : { t, v: x });
    assert.deepEqual(withVersion([v(10, "a"), v(20, "b")], v(30, "c"), 25), { versions: [v(20, "b"), v(30, "c")], dropped: 1, overflowed: 0 });
    assert.deepEqual(withVersion([v(10, "a"), v(30, "c")], v(20, "b"), 5), { versions: [v(10, "a"), v(20, "b"), v(30, "c")], dropped: 0, overflowed: 0 });
    assert.deepEqual(withVersion([v(10, "a")], v(20), 25), { versions: [], dropped: 2, overflowed: 0 });
    assert.deepEqual(withVersion([v(10, "a")], v(20), 15).versions, [v(10, "a"), v(20)]);
    // the same time twice: the deletion wins, else the greater encoding, whichever came first
    assert.deepEqual(withVersion([v(10, "b")], v(10, "a"), 0).versions, [v(10, "b")]);
    assert.deepEqual(withVersion([v(10, "a")], v(10, "b"), 0).versions, [v(10, "b")]);
    assert.deepEqual(withVersion([v(10, "a")], v(10), 0).versions, [v(10)]);
    assert.equal(versionAt([v(10, "a"), v(20), v(30, "c")], 25), undefined);
    assert.deepEqual(versionAt([v(10, "a"), v(20), v(30, "c")], 30), v(30, "c"));
    const many = Array.from({ length: MAX_VERSIONS }, (_, i) => v(100 + i, i));
    const capped = withVersion(many, v(100 + MAX_VERSIONS, "last"), 0);
    assert.equal(capped.versions.length, MAX_VERSIONS);
    assert.equal(capped.overflowed, 1);
    assert.deepEqual(capped.versions.at(-1), v(100 + MAX_VERSIONS, "last"));
  });

  test("versions past MAX_VERSIONS while the watermark stands still are counted once the batch's changes are taken; a rollback forgets them", async () => {
    const op = new JoinOperator(left, memoryStore());
    const updates: Input[] = Array.from({ length: MAX_VERSIONS + 3 }, (_, i) => ({ table: ["k", 100 + i, { n: i }] }));
    await op.prefetch([key("k")]);
    for (const u of updates) if ("table" in u) op.table(key(u.table[0]), u.table[1], u.table[2]);
    op.rollback();
    assert.equal(op.takeChanges().overflowed, 0, "rolled back");
    await op.prefetch([key("k")]);
    for (const u of updates) if ("table" in u) op.table(key(u.table[0]), u.table[1], u.table[2]);
    const taken = op.takeChanges();
    assert.equal(taken.overflowed, 3);
    await taken.apply();
    assert.equal(op.takeChanges().overflowed, 0, "counted once");
  });

  test("with state.ttl a table key not updated for that long is gone: a record meets none, and a sweep deletes it", async () => {
    let now = 0;
    const store = memoryStore();
    const op = new JoinOperator(left, store, { ttlMs: 1_000, now: () => now });
    await batch(op, [{ table: ["a", 10, { cat: 1 }] }, { table: ["b", 10, { cat: 2 }] }], 50);
    now = 600;
    await batch(op, [{ table: ["b", 20, { cat: 3 }] }], 60);
    now = 1_500; // a was updated 1,500 ms ago, b 900
    const out = await batch(op, [{ stream: rec("a", 100) }, { stream: rec("b", 100) }], 200);
    assert.deepEqual(joined(out), [
      ["a", 100, { bid: 100, auction: null }],
      ["b", 100, { bid: 100, auction: { cat: 3 } }],
    ]);
    assert.deepEqual(await store.getMany([versionsKey(key("a"))]).then((v) => v.map((x) => x !== undefined)), [true], "not swept yet");
    assert.equal(await op.sweep(), 1);
    const changes = op.takeChanges();
    assert.deepEqual(changes.deletes, [versionsKey(key("a"))], "its delete goes to the changelog");
    await changes.apply();
    assert.deepEqual(await store.getMany([versionsKey(key("a")), versionsKey(key("b"))]).then((v) => v.map((x) => x !== undefined)), [false, true]);
    assert.equal(await new JoinOperator(left, store).sweep(), 0, "without a ttl nothing is swept");
  });

  test("a rollback drops the batch: its held records, its versions and its watermark; read again, the batch gives the same", async () => {
    const op = new JoinOperator(inner, memoryStore());
    await batch(op, [{ table: ["a1", 10, { cat: 1 }] }, { stream: rec("a1", 50) }], 20);
    await op.prefetch([key("a1")]);
    op.table(key("a1"), 40, { cat: 2 });
    const first = await op.advance(100);
    assert.deepEqual(joined(first), [["a1", 50, { bid: 50, auction: { cat: 2 } }]]);
    op.takeChanges(); // written to the changelog, but the commit failed: never applied
    op.rollback();
    assert.equal(op.watermark, 20);
    assert.deepEqual(joined(await batch(op, [], 100)), [["a1", 50, { bid: 50, auction: { cat: 1 } }]], "without the rolled-back version");
  });

  test("the changelog rebuilds the store: a task restored from it releases what was held, joined as before", async () => {
    const store = memoryStore();
    const changelog: { key: Buffer; value?: Buffer | null }[] = [];
    const op = new JoinOperator(inner, store);
    const run = async (inputs: Input[], wm: number) => {
      await op.prefetch(inputs.map((i) => ("table" in i ? key(i.table[0]) : i.stream.keyBytes)));
      for (const i of inputs) if ("table" in i) op.table(key(i.table[0]), i.table[1], i.table[2]);
      for (const i of inputs) if ("stream" in i) op.stream(i.stream);
      const out = await op.advance(wm);
      const c = op.takeChanges();
      changelog.push(...c.deletes.map((k) => ({ key: k, value: null })), ...c.puts.map(([k, value]) => ({ key: k, value })));
      await c.apply();
      return out;
    };
    await run([{ table: ["a1", 10, { cat: 1 }] }, { stream: rec("a1", 30) }, { stream: rec("a2", 35) }, { table: ["a2", 5, { cat: 2 }] }], 20);
    await run([{ table: ["a1", 25, { cat: 3 }] }, { stream: rec("a1", 40) }], 32);
    const restored = memoryStore();
    const { puts, deletes } = lastWrites(changelog);
    await restored.write(puts, deletes);
    assert.deepEqual(new Map(restored.entries), new Map(store.entries), "the changelog holds the store");
    const again = new JoinOperator(inner, restored);
    await again.resume();
    assert.equal(again.watermark, 32, "released up to where it was");
    assert.deepEqual(joined(await again.advance(100)), [
      ["a2", 35, { bid: 35, auction: { cat: 2 } }],
      ["a1", 40, { bid: 40, auction: { cat: 3 } }],
    ]);
  });

  test("any read order of the two sides, under a watermark that never passes a record still to come, gives the batch's as-of join", async () => {
    const random = prng(20261205);
    const keys = ["a", "b", "c", "d"];
    /** records up to this far behind the latest event time of their side */
    const outOfOrder = 40;
    const tableRows = Array.from({ length: 120 }, (_, i) => ({
      k: keys[Math.floor(random() * keys.length)] as string,
      t: i * 10 + Math.floor(random() * outOfOrder),
      v: { n: i },
    }));
    const streamRows = Array.from({ length: 300 }, (_, i) => ({
      k: keys[Math.floor(random() * keys.length)] as string,
      t: i * 4 + Math.floor(random() * outOfOrder) + 1,
      i,
    }));
    // the batch computation: per stream row, the table row of its key with the latest t <= its own
    const expected = streamRows
      .map((s) => {
        let found: (typeof tableRows)[number] | undefined;
        for (const r of tableRows)
          if (r.k === s.k && r.t <= s.t && (!found || r.t > found.t || (r.t === found.t && JSON.stringify(r.v) > JSON.stringify(found.v)))) found = r;
        return found ? [s.k, s.t, { bid: s.i, auction: found.v }] : undefined;
      })
      .filter((x) => x !== undefined)
      .sort((x, y) => (x[1] as number) - (y[1] as number) || (x[2] as { bid: number }).bid - (y[2] as { bid: number }).bid);
    for (let run = 0; run < 5; run++) {
      const op = new JoinOperator(inner, memoryStore());
      // interleave the two sides at random, in batches of random size; the watermark after each batch is the
      // lower of the two sides' latest event times minus the out-of-orderness
      const queue: Input[] = [];
      let ti = 0;
      let si = 0;
      while (ti < tableRows.length || si < streamRows.length) {
        const takeTable = si >= streamRows.length || (ti < tableRows.length && random() < 0.3);
        if (takeTable) {
          const r = tableRows[ti++] as (typeof tableRows)[number];
          queue.push({ table: [r.k, r.t, r.v] });
        } else {
          const s = streamRows[si++] as (typeof streamRows)[number];
          offsets = BigInt(s.i);
          queue.push({ stream: rec(s.k, s.t, { bid: s.i }) });
        }
      }
      const out: JoinOutput[] = [];
      let maxTable = Number.NEGATIVE_INFINITY;
      let maxStream = Number.NEGATIVE_INFINITY;
      while (queue.length > 0) {
        const b = queue.splice(0, 1 + Math.floor(random() * 25));
        for (const i of b) {
          if ("table" in i) maxTable = Math.max(maxTable, i.table[1]);
          else maxStream = Math.max(maxStream, i.stream.eventTime);
        }
        const done = queue.length === 0;
        out.push(...(await batch(op, b, done ? Number.POSITIVE_INFINITY : Math.min(maxTable, maxStream) - outOfOrder - 1)));
      }
      assert.deepEqual(
        joined(out).sort((x, y) => (x[1] as number) - (y[1] as number) || (x[2] as { bid: number }).bid - (y[2] as { bid: number }).bid),
        expected,
        `run ${run}`,
      );
    }
    assert.ok(expected.length > 100, "the data joins");
  });
});
