// read_committed for @platformatic/kafka consumers. Under read_committed a broker returns records up to the
// last stable offset, aborted ones included, and lists the aborted transactions beside them: the client must
// drop their records itself (Kafka's own consumer does it in its fetcher). @platformatic/kafka 2.12 skips the
// control batches but keeps the aborted records, so a transaction that a fenced or failed worker aborted would be
// read as if it had been committed. This drops them, on the fetch response, before the stream sees it.
import type { Consumer } from "@platformatic/kafka";

const IS_TRANSACTIONAL = 0x10;
const IS_CONTROL = 0x20;
const ABORT_MARKER = 0;

interface Batch {
  firstOffset: bigint;
  lastOffsetDelta: number;
  attributes: number;
  producerId: bigint;
  records: { key?: Buffer | null }[];
}

interface FetchPartition {
  partitionIndex?: number;
  abortedTransactions?: { producerId: bigint; firstOffset: bigint }[] | null;
  records?: Batch[] | null;
}

interface FetchResponseLike {
  responses: { partitions: FetchPartition[] }[];
}

/**
 * Empties the batches of aborted transactions in one partition's fetched data, in log order, as Kafka's
 * consumer does: a producer listed as aborted from firstOffset on is aborting until its ABORT marker.
 * Returns how many records it dropped. The batches stay, so fetch positions still move past them.
 */
export function dropAbortedInPartition(partition: FetchPartition): number {
  const aborted = [...(partition.abortedTransactions ?? [])].sort((a, b) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
  if (aborted.length === 0 || !partition.records) return 0;
  const aborting = new Set<bigint>();
  let next = 0;
  let dropped = 0;
  for (const batch of partition.records) {
    const lastOffset = batch.firstOffset + BigInt(batch.lastOffsetDelta);
    while (next < aborted.length && (aborted[next]?.firstOffset ?? lastOffset + 1n) <= lastOffset) {
      aborting.add(aborted[next]?.producerId as bigint);
      next++;
    }
    if (batch.attributes & IS_CONTROL) {
      const key = batch.records[0]?.key;
      if (key && key.length >= 4 && key.readInt16BE(2) === ABORT_MARKER) aborting.delete(batch.producerId);
      continue;
    }
    if (batch.attributes & IS_TRANSACTIONAL && aborting.has(batch.producerId)) {
      dropped += batch.records.length;
      batch.records = [];
    }
  }
  return dropped;
}

/** What one fetch response lost to aborted transactions, per partition, for the log. */
export interface Dropped {
  partition: number;
  records: number;
  aborted: string;
}

export function dropAbortedRecords(response: FetchResponseLike): Dropped[] {
  const out: Dropped[] = [];
  for (const topic of response.responses)
    for (const p of topic.partitions) {
      const records = dropAbortedInPartition(p);
      if (records > 0)
        out.push({
          partition: p.partitionIndex ?? -1,
          records,
          aborted: (p.abortedTransactions ?? []).map((t) => `${t.producerId}@${t.firstOffset}`).join(","),
        });
    }
  return out;
}

type FetchCallback = (error: Error | null, response?: unknown) => void;

/** Makes a consumer's fetches drop aborted transactions; `onDropped` hears what each fetch dropped. */
export function readCommittedOnly<C extends Consumer<Buffer, Buffer, Buffer, Buffer>>(consumer: C, onDropped?: (dropped: Dropped[]) => void): C {
  const original = consumer.fetch.bind(consumer) as (options: unknown, callback?: FetchCallback) => unknown;
  const filter = (response: unknown) => {
    const dropped = dropAbortedRecords(response as FetchResponseLike);
    if (dropped.length > 0) onDropped?.(dropped);
    return response;
  };
  const wrapped = (options: unknown, callback?: FetchCallback) => {
    if (callback) return original(options, (error, response) => callback(error, error ? response : filter(response)));
    return (original(options) as Promise<unknown>).then(filter);
  };
  (consumer as unknown as { fetch: typeof wrapped }).fetch = wrapped;
  return consumer;
}
