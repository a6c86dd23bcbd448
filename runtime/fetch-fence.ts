// Fences fetches that were in flight across a rebalance. @platformatic/kafka's stream moves its fetch position to
// the end of whatever a fetch response holds, and pushes its records, even when the response answers a request
// made under the previous assignment, after the stream was rewound to the committed offsets. Such a response
// would move the position past records that nobody committed, and deliver records from the old position as if
// they followed the committed offset: the records in between would never be read. Every fetch is stamped with
// the fence's epoch when it is sent; a response that comes back after the epoch moved on is emptied before the
// stream sees it, so it neither moves a position nor delivers a record. A stale error is answered as an empty
// response for the same reason: an out-of-range error makes the stream reset positions.
import type { Consumer } from "@platformatic/kafka";

interface FetchResponseLike {
  responses?: { partitions?: { records?: unknown }[] }[];
}

type FetchCallback = (error: Error | null, response?: unknown) => void;

/** Empties every partition's data in a fetch response, in place. Returns how many partitions held data. */
export function emptyFetchResponse(response: unknown): number {
  let emptied = 0;
  for (const topic of (response as FetchResponseLike | undefined)?.responses ?? [])
    for (const p of topic.partitions ?? []) {
      if (p.records) emptied++;
      p.records = null;
    }
  return emptied;
}

export class FetchFence {
  private epoch = 0;
  /** fetch responses emptied because they answered a request sent before the last `advance()` */
  staleResponses = 0;

  /** From now on, every response to a fetch sent before this call is emptied. */
  advance(): void {
    this.epoch++;
  }

  /** Wraps the consumer's fetch so that its responses are checked against the fence. */
  install<C extends Consumer<Buffer, Buffer, Buffer, Buffer>>(consumer: C): C {
    const original = consumer.fetch.bind(consumer) as (options: unknown, callback?: FetchCallback) => unknown;
    const check = (sentAt: number, response: unknown) => {
      if (sentAt !== this.epoch) {
        this.staleResponses++;
        emptyFetchResponse(response);
      }
      return response;
    };
    const wrapped = (options: unknown, callback?: FetchCallback) => {
      const sentAt = this.epoch;
      if (callback)
        return original(options, (error, response) => {
          // A stale error (an out-of-range reset above all) would move positions just as stale data would.
          if (error && sentAt !== this.epoch) callback(null, check(sentAt, { responses: [] }));
          else callback(error, error ? response : check(sentAt, response));
        });
      return (original(options) as Promise<unknown>).then(
        (response) => check(sentAt, response),
        (error: unknown) => {
          if (sentAt !== this.epoch) return check(sentAt, { responses: [] });
          throw error;
        },
      );
    };
    (consumer as unknown as { fetch: typeof wrapped }).fetch = wrapped;
    return consumer;
  }
}
