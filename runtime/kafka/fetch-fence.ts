// Fences fetches that were in flight across a rebalance. @platformatic/kafka's stream moves its fetch position to
// the end of whatever a fetch response holds, and pushes its records, even when the response answers a request
// made under the previous assignment, after the stream was rewound to the committed offsets. Such a response
// would move the position past records that nobody committed, and deliver records from the old position as if
// they followed the committed offset: the records in between would never be read. Every fetch is stamped with
// the fence's epoch when it is sent; a response that comes back after the epoch moved on is emptied before the
// stream sees it, so it neither moves a position nor delivers a record. A stale error is answered as an empty
// response for the same reason: an out-of-range error makes the stream reset positions.
//
// It also holds partitions: a held partition is left out of every fetch request (the library then tells the
// broker's fetch session to forget it), so the stream reads the worker's other partitions on while one of its
// tasks restores. The library's stream can only pause all of its partitions at once.
import type { Consumer } from "@platformatic/kafka";

interface FetchResponseLike {
  responses?: { topicId?: string; partitions?: { partitionIndex?: number; records?: unknown }[] }[];
}

interface FetchRequestLike {
  maxWaitTime?: number;
  topics: { topicId: string; partitions: { partition: number }[] }[];
}

/** How long a fetch with every partition held waits before its empty answer, as a broker's long poll would. */
export const HELD_FETCH_WAIT_MS = 200;

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

/** The request without the held partitions (`topicId:partition`); the same object when none is held. */
export function withoutHeld<R extends FetchRequestLike>(request: R, held: ReadonlySet<string>): R {
  if (held.size === 0) return request;
  const topics = request.topics
    .map((t) => ({ ...t, partitions: t.partitions.filter((p) => !held.has(`${t.topicId}:${p.partition}`)) }))
    .filter((t) => t.partitions.length > 0);
  return { ...request, topics };
}

/** Empties, in place, what a response holds for held partitions (a fetch sent before they were held). */
function emptyHeld(response: unknown, held: ReadonlySet<string>): void {
  if (held.size === 0) return;
  for (const topic of (response as FetchResponseLike | undefined)?.responses ?? [])
    for (const p of topic.partitions ?? []) if (held.has(`${topic.topicId}:${p.partitionIndex}`)) p.records = null;
}

export class FetchFence {
  private epoch = 0;
  private readonly held = new Set<string>();
  /** fetch responses emptied because they answered a request sent before the last `advance()` */
  staleResponses = 0;

  /** From now on, every response to a fetch sent before this call is emptied. */
  advance(): void {
    this.epoch++;
  }

  /** No fetch asks for this partition (of the topic with this id) until it is released. */
  hold(topicId: string, partition: number): void {
    this.held.add(`${topicId}:${partition}`);
  }

  release(topicId: string, partition: number): void {
    this.held.delete(`${topicId}:${partition}`);
  }

  /** Wraps the consumer's fetch so that its responses are checked against the fence. */
  install<C extends Consumer<Buffer, Buffer, Buffer, Buffer>>(consumer: C): C {
    const original = consumer.fetch.bind(consumer) as (options: unknown, callback?: FetchCallback) => unknown;
    const check = (sentAt: number, response: unknown) => {
      if (sentAt !== this.epoch) {
        this.staleResponses++;
        emptyFetchResponse(response);
      }
      emptyHeld(response, this.held);
      return response;
    };
    const wrapped = (request: unknown, callback?: FetchCallback) => {
      const sentAt = this.epoch;
      const options = this.held.size === 0 ? request : withoutHeld(request as FetchRequestLike, this.held);
      if (options !== request && (options as FetchRequestLike).topics.length === 0) {
        // Every partition of this request is held: nothing to ask. Answer empty after a long poll's wait, or the
        // stream would ask again at once, in a loop.
        const wait = (options as FetchRequestLike).maxWaitTime ?? HELD_FETCH_WAIT_MS;
        const empty = new Promise<unknown>((resolve) => setTimeout(() => resolve({ responses: [] }), wait));
        if (!callback) return empty;
        void empty.then((response) => callback(null, response));
        return undefined;
      }
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
