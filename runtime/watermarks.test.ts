import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  decodeMarker,
  encodeMarker,
  forwardedWatermark,
  isMarker,
  MARKER_INTERVAL_MS,
  MarkerSchedule,
  markerRecords,
  RelayTable,
  SourceWatermark,
  WatermarkTable,
} from "./watermarks.ts";

describe("watermarks", () => {
  test("a source partition's watermark is its highest event time minus the disorder bound, and never goes back", () => {
    const w = new SourceWatermark("in", 0, { maxOutOfOrdernessMs: 1_000, idleTimeoutMs: 60_000 }, 0);
    assert.equal(w.watermark, null);
    w.observe(10_000, 1);
    w.observe(4_000, 2);
    assert.equal(w.watermark, 9_000);
  });

  test("markers go out on an advance, on idleness, and at least every interval", () => {
    const w = new SourceWatermark("in", 3, { maxOutOfOrdernessMs: 0, idleTimeoutMs: 5_000 }, 0);
    assert.deepEqual(w.due(0), { topic: "in", partition: 3, watermark: null, idle: false }, "the first one at once");
    assert.equal(w.due(10), undefined);
    w.observe(100, 20);
    assert.deepEqual(w.due(30), { topic: "in", partition: 3, watermark: 100, idle: false });
    assert.equal(w.due(30 + MARKER_INTERVAL_MS - 1), undefined);
    assert.ok(w.due(30 + MARKER_INTERVAL_MS), "a repeat after the interval");
    assert.deepEqual(w.due(5_020), { topic: "in", partition: 3, watermark: 100, idle: false }, "not idle while its end is unknown");
    w.setCaughtUp(true);
    assert.deepEqual(w.due(5_040), { topic: "in", partition: 3, watermark: 100, idle: true }, "idle after 5 s without records, read to its end");
  });

  test("a partition with records still to read is never idle: its reader is busy elsewhere", () => {
    const w = new SourceWatermark("in", 1, { maxOutOfOrdernessMs: 0, idleTimeoutMs: 5_000 }, 0);
    w.setCaughtUp(false);
    assert.equal(w.due(60_000)?.idle, false, "a minute without records, but a backlog: not idle");
    w.setCaughtUp(true);
    assert.equal(w.due(60_001)?.idle, true);
    w.setCaughtUp(false);
    assert.equal(w.due(60_002)?.idle, false, "new records seen at its end: active again before they are read");
  });

  test("a window task takes the minimum over non-idle partitions, and holds until every partition reported", () => {
    const t = new WatermarkTable(["a:0", "a:1", "b:0"]);
    t.update({ topic: "a", partition: 0, watermark: 500, idle: false });
    t.update({ topic: "a", partition: 1, watermark: 100, idle: false });
    assert.equal(t.current(), Number.NEGATIVE_INFINITY, "b:0 has not reported");
    t.update({ topic: "b", partition: 0, watermark: null, idle: true });
    assert.equal(t.current(), 100, "idle b:0 is left out");
    t.update({ topic: "a", partition: 1, watermark: 50, idle: false });
    assert.equal(t.current(), 100, "a partition's watermark never goes back");
    t.update({ topic: "a", partition: 0, watermark: 500, idle: true });
    t.update({ topic: "a", partition: 1, watermark: 100, idle: true });
    assert.equal(t.current(), 500, "all idle: the highest, so a finished backlog closes its windows");
    const copy = new WatermarkTable([], ["a", "b"]);
    copy.restore(t.toJSON());
    assert.equal(copy.current(), 500);
  });

  test("defect 4: a topic that is no longer a source is forgotten, saved or marked, and cannot hold the watermark", () => {
    const before = new WatermarkTable(["a:0", "gone:0"]);
    before.update({ topic: "a", partition: 0, watermark: 900, idle: false });
    before.update({ topic: "gone", partition: 0, watermark: 10, idle: false });
    assert.equal(before.current(), 10, "while both are sources, the lower one holds");
    const after = new WatermarkTable(["a:0"], ["a"]);
    after.restore(before.toJSON());
    assert.equal(after.current(), 900, "the saved entry of the removed source is dropped on restore");
    assert.equal(after.update({ topic: "gone", partition: 0, watermark: 20, idle: false }), false, "a late marker of it is refused");
    assert.equal(after.current(), 900);
    assert.deepEqual(Object.keys(after.toJSON()), ["a:0"]);
    assert.equal(after.update({ topic: "a", partition: 1, watermark: 950, idle: false }), true, "a grown partition of a source joins");
    assert.equal(after.current(), 900);
  });

  test("markers round-trip; anything else is not one", () => {
    const m = { topic: "in", partition: 2, watermark: 42, idle: false };
    assert.deepEqual(decodeMarker(encodeMarker(m)), m);
    assert.throws(() => decodeMarker(Buffer.from('{"x":1}')), /not a watermark marker/);
    assert.throws(() => decodeMarker(Buffer.from("null")), /not a watermark marker/);
    for (const [field, v] of [
      ["partition", -1],
      ["partition", 1.5],
      ["watermark", 1e300],
      ["watermark", "5"],
    ] as const) {
      assert.throws(() => decodeMarker(encodeMarker({ ...m, [field]: v } as typeof m)), new RegExp(`marker's ${field}`), `${field} ${v}`);
    }
  });
});

test("a commit keeps the watermark of the batch it seals, not of records read while that batch was written", () => {
  const w = new SourceWatermark("t", 0, { maxOutOfOrdernessMs: 5_000, idleTimeoutMs: 60_000 }, 0);
  w.observe(100_000, 1);
  const sealed = w.snapshot(); // the batch goes to be written
  w.observe(150_000, 2); // the next batch is being read meanwhile
  w.commit(sealed);
  w.rollback(); // a rebalance discards the next batch: its records are read again
  assert.equal(w.watermark, 95_000);

  describe("watermarks forwarded through a further repartition topic", () => {
    const table = (marks: [number, number | null, boolean][]) => {
      const t = new WatermarkTable(marks.map(([p]) => `rp:${p}`));
      for (const [partition, watermark, idle] of marks) t.update({ topic: "rp", partition, watermark, idle });
      return t;
    };

    test("a task without a window forwards its table's watermark; one with a window, the window's less its grace", () => {
      const t = table([
        [0, 5_000, false],
        [1, 3_000, false],
      ]);
      assert.equal(forwardedWatermark(t), 3_000, "records keep their event times: the table's minimum");
      assert.equal(forwardedWatermark(t, { watermark: 3_000, graceMs: 1_000, closing: false }), 2_000, "results of windows still open end past it");
      assert.equal(forwardedWatermark(t, { watermark: 3_000, graceMs: 1_000, closing: true }), undefined, "held while a close is under way");
      assert.equal(forwardedWatermark(table([[0, 5_000, false]]), { watermark: Number.NEGATIVE_INFINITY, graceMs: 0, closing: false }), undefined);
      const holding = new WatermarkTable(["rp:0", "rp:1"]);
      holding.update({ topic: "rp", partition: 0, watermark: 5_000, idle: false });
      assert.equal(forwardedWatermark(holding), undefined, "not heard from every partition upstream: nothing to forward");
    });

    test("a window result's event time is at or above what its task forwarded before it closed", () => {
      // a window [0, 60 s) with 10 s of grace closes at watermark 70 s; before that the task forwarded at most
      // 70 s - 1 ms - 10 s, and the result's event time is 60 s - 1 ms: not below
      const graceMs = 10_000;
      const end = 60_000;
      const lastBeforeClose = forwardedWatermark(table([[0, end + graceMs - 1, false]]), { watermark: end + graceMs - 1, graceMs, closing: false });
      assert.ok(lastBeforeClose !== undefined && end - 1 >= lastBeforeClose);
    });

    test("a task is idle when every partition upstream is", () => {
      assert.equal(
        table([
          [0, 1, true],
          [1, 2, false],
        ]).allIdle(),
        false,
      );
      assert.equal(
        table([
          [0, 1, true],
          [1, 2, true],
        ]).allIdle(),
        true,
      );
      assert.equal(new WatermarkTable(["rp:0"]).allIdle(), false, "not heard from: not idle");
    });

    test("a forwarded marker goes out on an advance, on idleness, at least every interval, and never back", () => {
      const s = new MarkerSchedule();
      assert.equal(s.due(undefined, false, 0), undefined, "a task that holds and never forwarded writes nothing");
      assert.deepEqual(s.due(100, false, 0), { watermark: 100, idle: false });
      assert.equal(s.due(100, false, 10), undefined);
      assert.deepEqual(s.due(150, false, 20), { watermark: 150, idle: false });
      assert.deepEqual(s.due(150, true, 30), { watermark: 150, idle: true });
      assert.equal(s.due(150, true, 30 + MARKER_INTERVAL_MS - 1), undefined);
      assert.deepEqual(s.due(120, true, 30 + MARKER_INTERVAL_MS), { watermark: 150, idle: true }, "a repeat, never lower");
      assert.deepEqual(s.due(undefined, true, 30 + 2 * MARKER_INTERVAL_MS), { watermark: 150, idle: true }, "a task that holds repeats its last");
    });

    test("a discarded batch's forwarded marker does not hold the next one up: it was never written", () => {
      const s = new MarkerSchedule();
      assert.deepEqual(s.due(100, false, 0), { watermark: 100, idle: false });
      s.commit();
      assert.deepEqual(s.due(500, false, 10), { watermark: 500, idle: false }, "the batch that is then discarded");
      s.rollback();
      assert.deepEqual(s.due(150, false, 20), { watermark: 150, idle: false }, "from the table as rolled back, not 500");
    });

    test("a table without a store goes back to the last commit when a batch is discarded", () => {
      const r = new RelayTable(["rp:0"], ["rp"]);
      r.table.update({ topic: "rp", partition: 0, watermark: 100, idle: false });
      r.commit();
      r.table.update({ topic: "rp", partition: 0, watermark: 900, idle: false });
      r.rollback();
      assert.equal(r.table.current(), 100);
      r.table.update({ topic: "other", partition: 0, watermark: 50, idle: false });
      assert.equal(r.table.current(), 100, "only the topics upstream count");
    });
  });

  test("a marker goes into every partition of a repartition topic, and only its key and header together make one", () => {
    const records = markerRecords({ topic: "rp", partition: 2, watermark: 5, idle: false }, "next", 3);
    assert.deepEqual(
      records.map((r) => [r.topic, r.partition]),
      [
        ["next", 0],
        ["next", 1],
        ["next", 2],
      ],
    );
    const [first] = records;
    assert.ok(first && isMarker(first));
    assert.deepEqual(decodeMarker(first.value), { topic: "rp", partition: 2, watermark: 5, idle: false });
    assert.equal(first.key.toString("latin1"), "\u0000wm:rp:2", "the key the runtime has always written");
    assert.equal(isMarker({ key: first.key, headers: new Map() }), false, "a forged key without the header");
    assert.equal(isMarker({ key: Buffer.from("user-1"), headers: first.headers }), false, "the header on another key");
  });
});
