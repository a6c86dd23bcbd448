import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { prng } from "../test/support/prng.ts";
import type { HeldRecord, JoinOutput } from "./join.ts";
import { memoryStore } from "./state/memory-store.ts";
import type { Store } from "./store.ts";
import { TableJoinOperator, type TableJoinStepLike } from "./table-join.ts";
import { lastWrites } from "./task.ts";
import type { Side } from "./window-join.ts";

const inner: TableJoinStepLike = { name: "with-limit", as: "limit", type: "inner" };
const left: TableJoinStepLike = { ...inner, type: "left" };

let offsets = 0n;
function rec(k: string, eventTime: number, value: unknown): HeldRecord {
  return { keyBytes: Buffer.from(k), eventTime, offset: offsets++, index: 0, value, headers: [], timestamp: BigInt(eventTime) };
}

type Change = [Side, HeldRecord];

async function batch(
  op: TableJoinOperator,
  changes: Change[],
  watermark?: number,
  changelog?: { key: Buffer; value?: Buffer | null }[],
): Promise<JoinOutput[]> {
  for (const [side, r] of changes) assert.equal((side === 0 ? op.stream(r) : op.other(r)).late, false, "not late");
  const out = watermark === undefined ? [] : await op.advance(watermark);
  const c = op.takeChanges();
  changelog?.push(...c.deletes.map((key) => ({ key, value: null })), ...c.puts.map(([key, value]) => ({ key, value })));
  await c.apply();
  return out;
}

type Row = [string, number, unknown];
const rows = (out: JoinOutput[]): Row[] =>
  out.map((o) =>
    !o.ok
      ? ["error", 0, o.error]
      : "value" in o
        ? [o.record.keyBytes.toString(), o.record.eventTime, o.value]
        : [o.record.keyBytes.toString(), o.record.eventTime, "deleted"],
  );

describe("table-table join on event time", () => {
  test("inner: a result while both sides have a value, each change of either side a new one, and its deletion when a side goes", async () => {
    const op = new TableJoinOperator(inner, memoryStore());
    const out = await batch(
      op,
      [
        [0, rec("u1", 10, { user: "u1", n: 1 })],
        [1, rec("u1", 20, { max: 100 })],
        [0, rec("u1", 30, { user: "u1", n: 2 })],
        [1, rec("u1", 40, { max: 200 })],
        [1, rec("u1", 50, null)],
        [1, rec("u1", 60, { max: 300 })],
        [0, rec("u1", 70, null)],
        [1, rec("u2", 15, { max: 5 })],
      ],
      100,
    );
    assert.deepEqual(rows(out), [
      ["u1", 20, { user: "u1", n: 1, limit: { max: 100 } }],
      ["u1", 30, { user: "u1", n: 2, limit: { max: 100 } }],
      ["u1", 40, { user: "u1", n: 2, limit: { max: 200 } }],
      ["u1", 50, "deleted"],
      ["u1", 60, { user: "u1", n: 2, limit: { max: 300 } }],
      ["u1", 70, "deleted"],
    ]);
    assert.deepEqual(
      out.flatMap((o) => (o.ok && "last" in o ? [o.last] : [])),
      [
        { user: "u1", n: 2, limit: { max: 200 } },
        { user: "u1", n: 2, limit: { max: 300 } },
      ],
      "a deletion carries the result it ends",
    );
  });

  test("left: a result while the step's side has a value, with null for a missing input", async () => {
    const op = new TableJoinOperator(left, memoryStore());
    const out = await batch(
      op,
      [
        [0, rec("u1", 10, { n: 1 })],
        [1, rec("u1", 20, { max: 100 })],
        [1, rec("u1", 30, null)],
        [0, rec("u1", 40, null)],
        [1, rec("u1", 50, { max: 1 })],
      ],
      100,
    );
    assert.deepEqual(rows(out), [
      ["u1", 10, { n: 1, limit: null }],
      ["u1", 20, { n: 1, limit: { max: 100 } }],
      ["u1", 30, { n: 1, limit: null }],
      ["u1", 40, "deleted"],
    ]);
  });

  test("changes wait for the watermark, and are taken in event-time order whichever came first", async () => {
    const op = new TableJoinOperator(inner, memoryStore());
    assert.deepEqual(await batch(op, [[1, rec("u1", 20, { max: 100 })]], 15), []);
    assert.deepEqual(
      rows(await batch(op, [[0, rec("u1", 18, { n: 1 })]], 25)),
      [["u1", 20, { n: 1, limit: { max: 100 } }]],
      "the limit at 20 came after the user at 18",
    );
    assert.equal(op.stream(rec("u1", 25, { n: 2 })).late, true, "at the watermark: late");
    assert.match(op.refuses([1]) ?? "", /a map, or null to delete it, not list/);
    assert.equal(op.refuses(null), undefined);
  });

  test("any read order, restored from the changelog now and then, gives the batch's changes: inner and left", async () => {
    const random = prng(20261207);
    const keys = ["a", "b", "c", "d"];
    // distinct event times, out of order by a step at most (7 ms, well within the 40 ms the watermark allows)
    const times = Array.from({ length: 500 }, (_, i) => i * 7);
    for (let i = 0; i + 1 < times.length; i += 2) if (random() < 0.5) [times[i], times[i + 1]] = [times[i + 1] as number, times[i] as number];
    const changes = times.map((t, i) => {
      const side: Side = random() < 0.5 ? 0 : 1;
      const k = keys[Math.floor(random() * keys.length)] as string;
      const del = random() < 0.15;
      return { side, k, t, value: del ? null : side === 0 ? { n: i } : { max: i } };
    });
    for (const type of ["inner", "left"] as const) {
      // the batch computation: every change in event-time order
      const expected: Row[] = [];
      const latest = [new Map<string, unknown>(), new Map<string, unknown>()];
      const result = (k: string) => {
        const l = latest[0]?.get(k) as Record<string, unknown> | undefined;
        const r = latest[1]?.get(k);
        if (!l || (r === undefined && type === "inner")) return undefined;
        return { ...l, limit: r ?? null };
      };
      for (const c of [...changes].sort((x, y) => x.t - y.t)) {
        const before = result(c.k);
        if (c.value === null) latest[c.side]?.delete(c.k);
        else latest[c.side]?.set(c.k, c.value);
        const now = result(c.k);
        if (now) expected.push([c.k, c.t, now]);
        else if (before) expected.push([c.k, c.t, "deleted"]);
      }
      for (let run = 0; run < 4; run++) {
        let store: Store = memoryStore();
        const changelog: { key: Buffer; value?: Buffer | null }[] = [];
        let op = new TableJoinOperator({ ...inner, type }, store);
        // the two sides interleaved at random, each in its own order
        const bySide = [changes.filter((c) => c.side === 0), changes.filter((c) => c.side === 1)];
        const queue: Change[] = [];
        offsets = 0n;
        while ((bySide[0]?.length ?? 0) + (bySide[1]?.length ?? 0) > 0) {
          const side: Side = (bySide[0]?.length ?? 0) === 0 || ((bySide[1]?.length ?? 0) > 0 && random() < 0.5) ? 1 : 0;
          const c = bySide[side]?.shift() as (typeof changes)[number];
          queue.push([side, rec(c.k, c.t, c.value)]);
        }
        const out: JoinOutput[] = [];
        const max = [Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY];
        while (queue.length > 0) {
          const b = queue.splice(0, 1 + Math.floor(random() * 20));
          for (const [side, r] of b) max[side] = Math.max(max[side] as number, r.eventTime);
          const done = queue.length === 0;
          out.push(...(await batch(op, b, done ? Number.POSITIVE_INFINITY : Math.min(max[0] as number, max[1] as number) - 40, changelog)));
          if (random() < 0.2) {
            const { puts, deletes } = lastWrites(changelog);
            store = memoryStore();
            await store.write(puts, deletes);
            op = new TableJoinOperator({ ...inner, type }, store);
            await op.resume();
          }
        }
        assert.deepEqual(rows(out), expected, `${type}, run ${run}`);
      }
      assert.ok(expected.length > 150 && expected.some((e) => e[2] === "deleted"), `${type}: the data joins and deletes`);
    }
  });
});
