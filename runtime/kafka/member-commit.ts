// Plain offset commits (at-least-once, and the start offsets of a new assignment), sent as this member under the
// generation of its assignment. @platformatic/kafka's consumer.commit, when the broker answers that the group
// is rebalancing, joins the group again itself and retries under the new generation. That join runs beside the
// one the heartbeat has started, the broker keeps one waiting JoinGroup per member, and the other is never
// answered: the commit hung, and with it the worker's reassignment, which waits for the flush in flight (seen
// on the bed: two at-least-once workers stuck for good after a rebalance). Here a rebalance answer goes to the
// caller, as in the exactly-once path: it discards the batch and waits for the join.
import { promisify } from "node:util";
import { type Consumer, kGetApi, kGetConnection, kMetadata, type Producer } from "@platformatic/kafka";
import { isRebalanceError, kafkaCodes, onlyCodes } from "../../src/kafka-errors.ts";

export interface MemberGeneration {
  groupId: string;
  generationId: number;
  memberId: string;
}

export interface OffsetToCommit {
  topic: string;
  partition: number;
  /** the next offset to read */
  offset: bigint;
  leaderEpoch: number;
}

/** Tries of a commit that failed for another reason than a rebalance (a moved coordinator, a dropped connection). */
const ATTEMPTS = 5;

type Callback<T> = (error: Error | null, value?: T) => void;
interface Internals {
  [kMetadata](options: { topics: string[] }, callback: Callback<{ brokers: Map<number, unknown> }>): void;
  [kGetConnection](broker: unknown, callback: Callback<unknown>): void;
  [kGetApi](name: string, callback: Callback<((...args: unknown[]) => void) & { async: (...args: unknown[]) => Promise<unknown> }>): void;
}

/** The offsets as an OffsetCommit or TxnOffsetCommit request lists them: by topic. */
function byTopic(offsets: OffsetToCommit[]): Map<string, { name: string; partitions: object[] }> {
  const topics = new Map<string, { name: string; partitions: object[] }>();
  for (const o of offsets) {
    const t = topics.get(o.topic) ?? { name: o.topic, partitions: [] };
    t.partitions.push({ partitionIndex: o.partition, committedOffset: o.offset, committedLeaderEpoch: o.leaderEpoch, committedMetadata: null });
    topics.set(o.topic, t);
  }
  return topics;
}

/**
 * One request to the group coordinator through a client's own connections and negotiated API version, tried
 * again (up to ATTEMPTS, with backoff) while `retriable` says so. The coordinator is read at each try: a moved one
 * is found at the next.
 */
async function toCoordinator(
  client: Internals,
  coordinator: () => number | null | undefined,
  apiName: string,
  topics: string[],
  args: unknown[],
  retriable: (err: unknown) => boolean,
  backoffMs: number,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const id = coordinator();
      if (id === null || id === undefined) throw new Error("no group coordinator known");
      const metadata = await promisify(client[kMetadata].bind(client))({ topics });
      const broker = metadata?.brokers.get(id);
      if (!broker) throw new Error(`the group coordinator, broker ${id}, is not in the cluster's metadata`);
      const connection = await promisify(client[kGetConnection].bind(client))(broker);
      const api = await promisify(client[kGetApi].bind(client))(apiName);
      if (!api) throw new Error(`the broker offers no ${apiName} version this client speaks`);
      await api.async(connection, ...args);
      return;
    } catch (err) {
      if (!retriable(err) || attempt >= ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, backoffMs * 2 ** attempt));
    }
  }
}

export async function commitAsMember(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>, member: MemberGeneration, offsets: OffsetToCommit[]): Promise<void> {
  if (offsets.length === 0) return;
  const topics = byTopic(offsets);
  // The arguments the library's own commit passes, whatever the version it negotiated.
  await toCoordinator(
    consumer as unknown as Internals,
    () => consumer.coordinatorId,
    "OffsetCommit",
    [...topics.keys()],
    [member.groupId, member.generationId, member.memberId, null, [...topics.values()]],
    (err) => !isRebalanceError(err),
    50,
  );
}

/** Answers to a TxnOffsetCommit that a moment later may not give: the coordinator is still busy or loading. */
const TXN_COMMIT_RETRIABLE = [
  7, // REQUEST_TIMED_OUT
  14, // COORDINATOR_LOAD_IN_PROGRESS
  15, // COORDINATOR_NOT_AVAILABLE
  16, // NOT_COORDINATOR
  51, // CONCURRENT_TRANSACTIONS
  89, // THROTTLING_QUOTA_EXCEEDED
];

/**
 * The offsets of a batch into the producer's open transaction, in one TxnOffsetCommit request, as the member
 * and generation they were read under (KIP-447). The transaction must have the group already
 * (`transaction.addConsumer`). @platformatic/kafka's `transaction.addOffset` takes one partition a request and
 * runs one at a time (two in flight both resolve, and one is lost), so a batch of 12 partitions waited for 12
 * round trips; Kafka's own producer sends them in one (`sendOffsetsToTransaction`). A rebalance answer, a fenced
 * producer or any other refusal goes to the caller at once; a busy coordinator or a dropped connection is tried
 * again, up to 5 times.
 */
export async function commitInTransaction(
  producer: Producer<Buffer, Buffer, Buffer, Buffer>,
  transactionalId: string,
  group: MemberGeneration & { coordinatorId: number },
  offsets: OffsetToCommit[],
): Promise<void> {
  if (offsets.length === 0) return;
  const topics = byTopic(offsets);
  const producerId = producer.producerId;
  const producerEpoch = producer.producerEpoch;
  if (producerId === undefined || producerEpoch === undefined) throw new Error("offsets to commit in a transaction, but the producer has no producer id yet");
  await toCoordinator(
    producer as unknown as Internals,
    () => group.coordinatorId,
    "TxnOffsetCommit",
    [...topics.keys()],
    [transactionalId, group.groupId, producerId, producerEpoch, group.generationId, group.memberId, null, [...topics.values()]],
    // a dropped connection carries no code, and is tried again as a busy coordinator is
    (err) => kafkaCodes(err).length === 0 || onlyCodes(err, TXN_COMMIT_RETRIABLE),
    20,
  );
}
