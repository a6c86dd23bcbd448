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
  const calls: { answer: (error: Error | null, r?: unknown) => void }[] = [];
  const target = {
    fetch(_options: unknown, callback: Callback) {
      calls.push({ answer: (error, r) => callback(error, r) });
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

  test("emptyFetchResponse counts the partitions that held data", () => {
    const r = response();
    r.responses[0]?.partitions.push({ partitionIndex: 2, records: null as never });
    assert.equal(emptyFetchResponse(r), 2);
    assert.equal(emptyFetchResponse(undefined), 0);
  });
});
