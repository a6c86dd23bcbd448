import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { dropAbortedInPartition, hideAbortedLists } from "./read-committed.ts";

const TXN = 0x10;
const CONTROL = 0x20;

/** A data batch of n records, or a control batch (one marker record), as the fetch response parses them. */
function batch(firstOffset: number, producerId: number, opts: { n?: number; transactional?: boolean; marker?: "abort" | "commit" } = {}) {
  if (opts.marker) {
    const key = Buffer.alloc(4);
    key.writeInt16BE(0, 0);
    key.writeInt16BE(opts.marker === "abort" ? 0 : 1, 2);
    return { firstOffset: BigInt(firstOffset), lastOffsetDelta: 0, attributes: TXN | CONTROL, producerId: BigInt(producerId), records: [{ key }] };
  }
  const n = opts.n ?? 2;
  return {
    firstOffset: BigInt(firstOffset),
    lastOffsetDelta: n - 1,
    attributes: opts.transactional === false ? 0 : TXN,
    producerId: BigInt(producerId),
    records: Array.from({ length: n }, () => ({ key: Buffer.from("k") })),
  };
}

const kept = (p: { records?: { records: unknown[] }[] | null }) => (p.records ?? []).map((b) => b.records.length);

describe("read_committed: records of aborted transactions are dropped", () => {
  test("a committed and an aborted transaction of two producers, interleaved", () => {
    const p = {
      abortedTransactions: [{ producerId: 2n, firstOffset: 2n }],
      records: [
        batch(0, 1), // producer 1, committed below
        batch(2, 2), // producer 2, aborted
        batch(4, 1),
        batch(6, 1, { marker: "commit" }),
        batch(7, 2, { n: 3 }),
        batch(10, 2, { marker: "abort" }),
        batch(11, 2), // producer 2's next transaction: not aborted
        batch(13, 3, { transactional: false }),
      ],
    };
    assert.equal(dropAbortedInPartition(p), 5);
    assert.deepEqual(kept(p), [2, 0, 2, 1, 0, 1, 2, 2]);
  });

  test("an aborted transaction that began before this fetch is still dropped", () => {
    const p = {
      abortedTransactions: [{ producerId: 7n, firstOffset: 90n }],
      records: [batch(100, 7, { n: 5 }), batch(105, 7, { marker: "abort" }), batch(106, 7)],
    };
    assert.equal(dropAbortedInPartition(p), 5);
    assert.deepEqual(kept(p), [0, 1, 2]);
  });

  test("without aborted transactions nothing changes", () => {
    const p = { abortedTransactions: null, records: [batch(0, 1), batch(2, 1, { marker: "commit" })] };
    assert.equal(dropAbortedInPartition(p), 0);
    assert.deepEqual(kept(p), [2, 1]);
  });

  test("a listed abort that starts after a batch does not touch it", () => {
    const p = {
      abortedTransactions: [{ producerId: 1n, firstOffset: 10n }],
      records: [batch(0, 1), batch(2, 1, { marker: "commit" }), batch(10, 1), batch(12, 1, { marker: "abort" })],
    };
    assert.equal(dropAbortedInPartition(p), 2);
    assert.deepEqual(kept(p), [2, 1, 0, 1]);
  });

  test("abort, commit, then an abort marker with no data here: the committed transaction in between stays", () => {
    // What an exactly-once run met: a worker's producer aborted one transaction, committed two, and its
    // successor's fencing wrote an abort marker for a transaction that had added this partition but written
    // nothing to it, so the broker lists only the first abort. @platformatic/kafka 2.12.1's own filter ends
    // that abort at the producer's last marker, and dropped the committed records.
    const p = {
      conveyorAborted: [{ producerId: 1n, firstOffset: 0n }],
      records: [
        batch(0, 1, { n: 3 }),
        batch(3, 1, { marker: "abort" }),
        batch(4, 1, { n: 3 }),
        batch(7, 1, { marker: "commit" }),
        batch(8, 1, { marker: "abort" }),
      ],
    };
    assert.equal(dropAbortedInPartition(p), 3);
    assert.deepEqual(kept(p), [0, 1, 3, 1, 1]);
  });
});

describe("hideAbortedLists", () => {
  test("moves each partition's aborted list out of the library's reach, and leaves the rest", () => {
    const aborted = [{ producerId: 1n, firstOffset: 0n }];
    const response = {
      responses: [
        {
          partitions: [
            { abortedTransactions: aborted, records: [] },
            { abortedTransactions: [], records: [] },
          ],
        },
      ],
    };
    hideAbortedLists(response);
    const [first, second] = response.responses[0]?.partitions ?? [];
    assert.deepEqual(first, { abortedTransactions: null, conveyorAborted: aborted, records: [] });
    assert.deepEqual(second, { abortedTransactions: [], records: [] });
  });
});
