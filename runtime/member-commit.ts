// Plain offset commits (at-least-once, and the start offsets of a new assignment), sent as this member under the
// generation of its assignment. @platformatic/kafka's consumer.commit, when the broker answers that the group
// is rebalancing, joins the group again itself and retries under the new generation. That join runs beside the
// one the heartbeat has started, the broker keeps one waiting JoinGroup per member, and the other is never
// answered: the commit hung, and with it the worker's reassignment, which waits for the flush in flight (seen
// on the bed: two at-least-once workers stuck for good after a rebalance). Here a rebalance answer goes to the
// caller, as in the exactly-once path: it discards the batch and waits for the join.
import { promisify } from "node:util";
import { type Consumer, kGetApi, kGetConnection, kMetadata } from "@platformatic/kafka";
import { isRebalanceError } from "../src/kafka-errors.ts";

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

export async function commitAsMember(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>, member: MemberGeneration, offsets: OffsetToCommit[]): Promise<void> {
  if (offsets.length === 0) return;
  const topics = new Map<string, { name: string; partitions: object[] }>();
  for (const o of offsets) {
    const t = topics.get(o.topic) ?? { name: o.topic, partitions: [] };
    t.partitions.push({ partitionIndex: o.partition, committedOffset: o.offset, committedLeaderEpoch: o.leaderEpoch, committedMetadata: null });
    topics.set(o.topic, t);
  }
  const c = consumer as unknown as Internals;
  for (let attempt = 1; ; attempt++) {
    try {
      const coordinator = consumer.coordinatorId;
      if (coordinator === null || coordinator === undefined) throw new Error(`no coordinator known for group ${member.groupId}`);
      const metadata = await promisify(c[kMetadata].bind(c))({ topics: [...topics.keys()] });
      const broker = metadata?.brokers.get(coordinator);
      if (!broker) throw new Error(`the group coordinator, broker ${coordinator}, is not in the cluster's metadata`);
      const connection = await promisify(c[kGetConnection].bind(c))(broker);
      const api = await promisify(c[kGetApi].bind(c))("OffsetCommit");
      if (!api) throw new Error("the broker offers no OffsetCommit version this client speaks");
      // The arguments the library's own commit passes, whatever the version it negotiated.
      await api.async(connection, member.groupId, member.generationId, member.memberId, null, [...topics.values()]);
      return;
    } catch (err) {
      if (isRebalanceError(err) || attempt >= ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
    }
  }
}
