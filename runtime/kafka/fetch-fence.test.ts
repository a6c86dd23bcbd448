import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Consumer } from "@platformatic/kafka";
import { emptyFetchResponse, FetchFence } from "./fetch-fence.ts";

type Callback = (error: Error | null, response?: unknown) => void;

/** A fetch response as the stream sees it: one topic, partitions 0 and 1 with a batch each. */
function response() {
  return {
    responses: [
      {
        topicId: "t",
        partitions: [
          { partitionIndex: 0, records: [{ firstOffset: 10n }] },
          { partitionIndex: 1, records: [{ firstOffset: 20n }] },
        ],
      },
    ],
  };
}

/** Something with a consumer's fetch(options, callback), whose answers the test releases by hand. */
function fetcher() {
  const calls: { options: unknown; answer: (error: Error | null, r?: unknown) => void }[] = [];
  const target = {
    fetch(options: unknown, callback: Callback) {
      calls.push({ options, answer: (error, r) => callback(error, r) });
    },
  };
  return { calls, consumer: target as unknown as Consumer<Buffer, Buffer, Buffer, Buffer> };
}

describe("FetchFence", () => {
  test("a response to a fetch sent before advance() reaches the stream empty", () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    const seen: unknown[] = [];
    consumer.fetch({} as never, (_e: unknown, r: unknown) => seen.push(r));
    fence.advance();
    calls[0]?.answer(null, response());
    assert.deepEqual(
      (seen[0] as ReturnType<typeof response>).responses[0]?.partitions.map((p) => p.records),
      [null, null],
    );
    assert.equal(fence.staleResponses, 1);
  });

  test("a response to a fetch sent after advance() passes untouched", () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    fence.advance();
    const seen: unknown[] = [];
    consumer.fetch({} as never, (_e: unknown, r: unknown) => seen.push(r));
    calls[0]?.answer(null, response());
    assert.deepEqual(seen[0], response());
    assert.equal(fence.staleResponses, 0);
  });

  test("a stale error becomes an empty answer, a current one stays an error", () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    const seen: { e: unknown; r: unknown }[] = [];
    consumer.fetch({} as never, (e: unknown, r: unknown) => seen.push({ e, r }));
    fence.advance();
    consumer.fetch({} as never, (e: unknown, r: unknown) => seen.push({ e, r }));
    const offsetOutOfRange = new Error("OFFSET_OUT_OF_RANGE");
    calls[0]?.answer(offsetOutOfRange);
    calls[1]?.answer(offsetOutOfRange);
    assert.deepEqual(seen[0], { e: null, r: { responses: [] } });
    assert.equal(seen[1]?.e, offsetOutOfRange);
  });

  test("a held partition is left out of every request until released; a topic left with none goes", () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    const request = () => ({
      maxWaitTime: 10,
      topics: [
        { topicId: "t", partitions: [{ partition: 0 }, { partition: 1 }] },
        { topicId: "u", partitions: [{ partition: 1 }] },
      ],
    });
    fence.hold("t", 1);
    fence.hold("u", 1);
    consumer.fetch(request() as never, () => {});
    assert.deepEqual((calls[0]?.options as ReturnType<typeof request>).topics, [{ topicId: "t", partitions: [{ partition: 0 }] }]);
    fence.release("u", 1);
    consumer.fetch(request() as never, () => {});
    assert.deepEqual((calls[1]?.options as ReturnType<typeof request>).topics, [
      { topicId: "t", partitions: [{ partition: 0 }] },
      { topicId: "u", partitions: [{ partition: 1 }] },
    ]);
  });

  test("a fetch whose every partition is held is not sent, and is answered empty after its wait", async () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    fence.hold("t", 0);
    const t0 = performance.now();
    const answer = await new Promise<{ e: unknown; r: unknown }>((resolve) =>
      consumer.fetch({ maxWaitTime: 30, topics: [{ topicId: "t", partitions: [{ partition: 0 }] }] } as never, (e: unknown, r: unknown) => resolve({ e, r })),
    );
    assert.equal(calls.length, 0, "nothing asked of the broker");
    assert.deepEqual(answer, { e: null, r: { responses: [] } });
    assert.ok(performance.now() - t0 >= 25, "not at once, or the stream would loop");
  });

  test("data a response holds for a partition held since the fetch was sent reaches the stream empty", () => {
    const fence = new FetchFence();
    const { calls, consumer } = fetcher();
    fence.install(consumer);
    const seen: unknown[] = [];
    consumer.fetch({ topics: [{ topicId: "t", partitions: [{ partition: 0 }, { partition: 1 }] }] } as never, (_e: unknown, r: unknown) => seen.push(r));
    fence.hold("t", 1);
    calls[0]?.answer(null, response());
    assert.deepEqual(
      (seen[0] as ReturnType<typeof response>).responses[0]?.partitions.map((p) => p.records),
      [[{ firstOffset: 10n }], null],
    );
    assert.equal(fence.staleResponses, 0, "not stale: only the held partition is emptied");
  });

  test("emptyFetchResponse counts the partitions that held data", () => {
    const r = response();
    r.responses[0]?.partitions.push({ partitionIndex: 2, records: null as never });
    assert.equal(emptyFetchResponse(r), 2);
    assert.equal(emptyFetchResponse(undefined), 0);
  });
});
