import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { requestChunks } from "./record-collector.ts";
import { MAX_RECORD_BYTES, oversized } from "./stateless.ts";

const record = (bytes: number) => ({ topic: "t", key: Buffer.alloc(10), value: Buffer.alloc(bytes - 10) });

describe("record and request sizes", () => {
  test("a record over the limit is named with its size; one at the limit fits", () => {
    assert.equal(oversized(Buffer.alloc(10), Buffer.alloc(MAX_RECORD_BYTES - 10)), undefined);
    assert.match(oversized(Buffer.alloc(10), Buffer.alloc(MAX_RECORD_BYTES)) ?? "", /1000010 bytes, over the 1000000-byte limit/);
  });

  test("requests stay under 900 kB, a large record goes alone, and order is kept", () => {
    const records = [record(100), record(500_000), record(500_000), record(950_000), record(10), record(10)];
    const chunks = requestChunks(records);
    assert.deepEqual(
      chunks.map((c) => c.map((r) => (r.key?.length ?? 0) + (r.value?.length ?? 0))),
      [[100, 500_000], [500_000], [950_000], [10, 10]],
    );
    assert.deepEqual(chunks.flat(), records);
    assert.deepEqual(requestChunks([]), []);
  });

  test("records of a topic sent alone each take a request of their own, in order, between the others' requests", () => {
    const records = [record(10), { ...record(20), topic: "sink" }, record(30), record(40), { ...record(50), topic: "sink" }];
    const chunks = requestChunks(records, (r) => r.topic === "sink");
    assert.deepEqual(
      chunks.map((c) => c.map((r) => r.value?.length ?? 0)),
      [[0], [10], [20, 30], [40]],
    );
    assert.deepEqual(chunks.flat(), records);
  });
});
