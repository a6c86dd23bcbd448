// The worker's producer: plain writes then a member's offset commit under at-least-once, or one Kafka transaction
// holding the writes and the offsets under exactly-once (KIP-447: the offsets carry the group's generation, so a
// worker the group has moved past is fenced). It owns the transactional id's life: fencing the pod's predecessor
// at the start, and a new producer (a new epoch) after a refusal.
import type { Consumer, Message, ProduceResult } from "@platformatic/kafka";
import type { ClientConnectionOptions } from "../src/kafka-client.ts";
import { onlyCodes } from "../src/kafka-errors.ts";
import { errorMessage, type Logger } from "../src/log.ts";
import { Producer } from "./kafka/client.ts";
import { commitAsMember, commitInTransaction, type MemberGeneration, type OffsetToCommit } from "./kafka/member-commit.ts";
import { clientAddPartitionsToTxn } from "./kafka/txn-api.ts";
import type { OutRecord } from "./stages.ts";

/** How long a starting worker waits for the broker to abort its predecessor's open transaction. */
const FENCE_DEADLINE_MS = 60_000;
const CONCURRENT_TRANSACTIONS = 51;

export type Send = (messages: OutRecord[]) => Promise<ProduceResult>;

/** A batch's offsets, as commitOffsets stamped them (underGeneration), and the consumer whose group they are. */
export interface OffsetsCommit {
  consumer: Consumer;
  member: MemberGeneration;
  offsets: Message[];
}

export interface ProducerOptions {
  clientId: string;
  connection: ClientConnectionOptions;
  /** set under exactly-once: the pod's transactional id */
  transactionalId?: string;
  log: Logger;
}

export class OutputProducer {
  private readonly opts: ProducerOptions;
  private producer: Producer;
  /** the first transaction of a producer that reuses its transactional id must not name a producer id */
  private firstTransaction = true;

  constructor(opts: ProducerOptions) {
    this.opts = opts;
    this.producer = this.newProducer();
  }

  get exactlyOnce(): boolean {
    return this.opts.transactionalId !== undefined;
  }

  private newProducer(): Producer {
    return clientAddPartitionsToTxn(
      new Producer({
        clientId: `${this.opts.clientId}-producer`,
        ...this.opts.connection,
        idempotent: true,
        acks: -1,
        // One transactional producer per worker, named by the pod: its successor fences it. After a commit the
        // next transaction often meets CONCURRENT_TRANSACTIONS, and the default 1 s retry delay would stall it.
        ...(this.opts.transactionalId !== undefined ? { transactionalId: this.opts.transactionalId, retryDelay: 20 } : {}),
      }),
    );
  }

  /**
   * Takes over this pod's transactional id before joining the group, as Kafka Streams' initTransactions does.
   * A transaction that the pod's predecessor left open (killed mid-commit) is aborted now. Left open, it would
   * hold back the stable offsets of every partition it wrote, and keep pending the offsets that the partitions'
   * new owners wait for, until the broker times it out. Nothing to do under at-least-once.
   */
  async fencePredecessor(): Promise<void> {
    if (!this.exactlyOnce) return;
    const deadline = Date.now() + FENCE_DEADLINE_MS;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1_000)) {
      try {
        const tx = await this.producer.beginTransaction({ producerId: -1n, producerEpoch: -1 });
        await tx.cancel(); // nothing was sent in it: it ends here, with no EndTxn
        this.firstTransaction = false;
        return;
      } catch (err) {
        // While the broker aborts the old transaction it answers CONCURRENT_TRANSACTIONS. A producer whose first
        // begin failed stays "in a transaction" for good (TESTBED.md), so the next try takes a new one.
        if (!onlyCodes(err, [CONCURRENT_TRANSACTIONS]) || Date.now() + delay > deadline) throw err;
        this.opts.log.info("the predecessor's transaction is being aborted; trying again", { delayMs: delay });
        await this.producer.close(true);
        this.producer = this.newProducer();
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /**
   * A new producer, after a refusal: the library numbered the refused records in its sequences and the broker
   * did not, so the next write would be out of sequence. Under exactly-once it takes the transactional id over
   * with a new epoch, as at the start.
   */
  async renew(): Promise<void> {
    await this.producer.close(true);
    this.producer = this.newProducer();
    await this.fencePredecessor();
  }

  /**
   * One batch: `sendAll` writes its records with the send it is given, then the offsets are committed. Under
   * exactly-once both go in one transaction, aborted on any failure, so none of it is visible to read_committed
   * readers; the failure goes to the caller either way.
   */
  async write(sendAll: (send: Send) => Promise<void>, commit: OffsetsCommit | undefined): Promise<void> {
    if (!this.exactlyOnce) {
      await sendAll((messages) => this.producer.send({ messages }));
      if (commit && commit.offsets.length > 0) await commitAsMember(commit.consumer, commit.member, commit.offsets.map(offsetToCommit));
      return;
    }
    // A new producer reusing its transactional id is fenced unless its first transaction asks for a new id.
    const tx = await this.producer.beginTransaction(this.firstTransaction ? { producerId: -1n, producerEpoch: -1 } : {});
    this.firstTransaction = false;
    try {
      await sendAll((messages) => tx.send({ messages }));
      if (commit && commit.offsets.length > 0) {
        await tx.addConsumer(commit.consumer);
        await commitInTransaction(this.producer, tx.id, groupOf(commit.offsets), commit.offsets.map(offsetToCommit));
      }
      await tx.commit();
    } catch (err) {
      await tx.abort().catch((abortErr: unknown) => this.opts.log.warn("aborting the transaction failed too", { error: errorMessage(abortErr) }));
      throw err;
    }
  }

  async close(force = false): Promise<void> {
    await this.producer.close(force);
  }
}

/** What commitOffsets' record stands for: the next offset to read in its partition. */
function offsetToCommit(m: Message): OffsetToCommit {
  return { topic: m.topic, partition: m.partition, offset: m.offset + 1n, leaderEpoch: m.leaderEpoch ?? -1 };
}

/** The member, generation and coordinator that underGeneration stamped on a batch's offsets. */
function groupOf(offsets: Message[]): MemberGeneration & { coordinatorId: number } {
  const group = (offsets[0]?.metadata as { consumer?: MemberGeneration & { coordinatorId: number | null } } | undefined)?.consumer;
  if (!group) throw new Error("offsets to commit without the group they were read under");
  if (group.coordinatorId === null) throw new Error(`no coordinator known for group ${group.groupId}: the offsets cannot be committed`);
  return { ...group, coordinatorId: group.coordinatorId };
}
