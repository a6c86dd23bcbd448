// Quirks of @platformatic/kafka 2.12 that the project works around (TESTBED.md, "The Kafka client"), on the bed's
// broker. Each test shows the library as it behaves today, so that it fails, naming the workaround that can go,
// once an upgrade fixes the quirk; and shows that the workaround gives the right result.
// 1. A new producer reusing a transactional id: its first beginTransaction() is refused PRODUCER_FENCED (the
//    library asks for producer id 0, epoch 0), and after that every beginTransaction says a transaction is already
//    active. Workaround: the first begin passes producerId -1n, producerEpoch -1 (runtime/producer.ts:
//    firstTransaction, fencePredecessor, which takes a new producer after a refused begin).
// 2. Two addOffset calls in flight at once both resolve, but only one offset is stored. Workaround: one at a time
//    (runtime/producer.ts: write).
// 3. In a KIP-848 group (groupProtocol 'consumer') addOffset sends generation 0 and is refused ILLEGAL_GENERATION.
//    Workaround: the worker's consumer keeps the classic protocol (runtime/worker.ts: its Consumer).
// 4. After a commit the next transaction meets CONCURRENT_TRANSACTIONS and waits retryDelay, 1 s by default.
//    Workaround: retryDelay 20 ms (runtime/producer.ts: newProducer).
// 5. On a rejoin the stream does not rewind a partition that has no committed offset. Workaround: the worker sets
//    every position itself (runtime/worker.ts: positionsFor, reassign).
// 6. consumer.listCommittedOffsets does not ask for stable offsets, so it reads past an open transaction's offsets.
//    Workaround: KafkaIo.stableCommittedOffsets (runtime/kafka/kafka-io.ts), which waits out UNSTABLE_OFFSET_COMMIT.
// 7. The library's own read_committed filter ends a producer's listed abort at that producer's last abort marker
//    in the response, so a committed transaction between two aborts is dropped. Workaround: runtime/kafka/read-committed.ts
//    hides the aborted lists from it at the Fetch API and filters in log order itself.
// 8. A consumer takes the next generation's number at its JoinGroup response, before its SyncGroup and the join
//    event, and stamps every record it parses from then on with it. The broker takes a transactional offset under
//    the current generation for any partition, owned by this member or not: a batch of the old assignment,
//    committed so once the group is stable again, lands after the partition's new owner read its offsets. The
//    new owner counted that batch again (1,980 window updates in one 1M hopping replay). Workaround: offsets go
//    under the assignment's own generation (runtime/worker.ts: underGeneration), which the broker refuses.
// 9. consumer.commit, answered that the group moved on (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
//    UNKNOWN_MEMBER_ID), joins the group again itself and commits under the new generation. Beside the join the heartbeat starts, one of two JoinGroup requests is never answered, and an
//    at-least-once worker hung in its commit. Workaround: runtime/kafka/member-commit.ts sends OffsetCommit as the
//    member under its assignment's generation and leaves a rebalance answer to the caller.
// 10. The group leader computes the assignment from its cached metadata (up to metadataMaxAge old) and never
//    looks again for partitions: partitions added to a topic just before a rebalance stay unassigned until the
//    next one. Workaround: a protocolsMetadata callback, which makes every JoinGroup fetch metadata afresh
//    (runtime/worker.ts: its Consumer).
// 11. A record whose timestamp is more than 2^31 ms (24.8 days) from its batch's first reaches the broker some
//    milliseconds off: @platformatic/dynamic-buffer writes the record's timestamp delta with a 32-bit zigzag.
//    Workaround: runtime/kafka/client.ts writes varlongs right, for every producer of the project.
import assert from "node:assert/strict";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { after, before, describe, test } from "node:test";
import {
  Admin,
  Consumer,
  type CreationEvent,
  findErrorBy,
  instancesChannel,
  kGetApi,
  type Message,
  type MessagesStream,
  type RetryDelayGetter,
  Writer,
} from "@platformatic/kafka";
import { libraryVarLong, Producer } from "../../runtime/kafka/client.ts";
import { KafkaIo } from "../../runtime/kafka/kafka-io.ts";
import { commitAsMember } from "../../runtime/kafka/member-commit.ts";
import { underGeneration } from "../../runtime/worker.ts";
import { isRebalanceError, kafkaCodes } from "../../src/kafka-errors.ts";
import { waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, brokers, createTopic, readToEnd } from "../support/kafka.ts";

const ILLEGAL_GENERATION = 22;
const UNSTABLE_OFFSET_COMMIT = 88;
const PRODUCER_FENCED = 90;
/** What a producer's first transaction asks for to take its transactional id over. */
const NEW_PRODUCER_ID = { producerId: -1n, producerEpoch: -1 };
const READ_DEADLINE_MS = 30_000;

/** Records a stream delivers, in order; `until` waits, with a deadline, for a count of them. */
function collect(stream: MessagesStream<Buffer, Buffer, Buffer, Buffer>) {
  const seen: Message[] = [];
  stream.on("data", (m: Message) => seen.push(m));
  return { seen, until: (n: number, what: string) => waitFor(() => seen.length >= n, { what, timeoutMs: READ_DEADLINE_MS, intervalMs: 20 }) };
}

/** The delay of every retry a client makes, as the library reports it. */
function retryDelays(client: Producer | Admin): { operation: string; delayMs: number }[] {
  const out: { operation: string; delayMs: number }[] = [];
  client.on("client:performWithRetry:retry", (operation: string, _attempt: number, _retries: number, delayMs: number) => out.push({ operation, delayMs }));
  return out;
}

describe("@platformatic/kafka quirks on the bed", () => {
  const { bootstrap } = bedEnv();
  const suffix = uniqueSuffix();
  let a: Admin;
  let io: KafkaIo;

  const transactional = (transactionalId: string, options: { retryDelay?: number | RetryDelayGetter } = { retryDelay: 20 }) =>
    new Producer({ clientId: "quirks", bootstrapBrokers: brokers(bootstrap), transactionalId, idempotent: true, acks: -1, ...options });
  const groupConsumer = (groupId: string, groupProtocol: "classic" | "consumer" = "classic") =>
    new Consumer({ clientId: "quirks", groupId, groupProtocol, bootstrapBrokers: brokers(bootstrap) });

  /** n records into each partition, so that every partition has some. */
  const fill = async (topic: string, partitions: number, n: number) => {
    const p = new Producer({ clientId: "quirks-fill", bootstrapBrokers: brokers(bootstrap), acks: -1 });
    try {
      await p.send({
        messages: Array.from({ length: partitions * n }, (_, i) => ({ topic, partition: i % partitions, value: Buffer.from(`r-${i}`) })),
      });
    } finally {
      await p.close();
    }
  };

  before(() => {
    a = admin(bootstrap);
    io = new KafkaIo({ bootstrapBrokers: brokers(bootstrap) }, `quirks-${suffix}`);
  });
  after(async () => {
    await io.close();
    await a.close();
  });

  test("a new producer reusing a transactional id is refused PRODUCER_FENCED unless its first begin asks for a new producer id", async () => {
    const topic = `quirks-fence-${suffix}`;
    const transactionalId = `quirks-fence-${suffix}`;
    await createTopic(a, topic, 1);
    // The library's default InitProducerId names producer 0, epoch 0: a broker's very first producer holds exactly
    // those and would be taken over, not refused. A producer id handed out before rules that case out.
    const first = new Producer({ clientId: "quirks-first", bootstrapBrokers: brokers(bootstrap), idempotent: true });
    await first.initIdempotentProducer({}).finally(() => first.close());

    const old = transactional(transactionalId);
    const reusing = transactional(transactionalId);
    const successor = transactional(transactionalId);
    try {
      const tx = await old.beginTransaction(NEW_PRODUCER_ID);
      await tx.send({ messages: [{ topic, value: Buffer.from("old") }] });
      await tx.commit();

      await assert.rejects(
        reusing.beginTransaction(),
        (err) => {
          assert.ok(kafkaCodes(err).includes(PRODUCER_FENCED), `codes ${kafkaCodes(err)}`);
          return true;
        },
        "a new producer's first beginTransaction() took the transactional id over: the producerId -1n workaround in runtime/producer.ts (firstTransaction) can go",
      );
      await assert.rejects(
        reusing.beginTransaction(NEW_PRODUCER_ID),
        /There is already an active transaction/,
        "a producer whose first begin was refused can begin again: runtime/producer.ts fencePredecessor need not replace it",
      );

      const taken = await successor.beginTransaction(NEW_PRODUCER_ID);
      await taken.send({ messages: [{ topic, value: Buffer.from("successor") }] });
      await taken.commit();
      const stale = await old.beginTransaction();
      await assert.rejects(stale.commit(), (err) => {
        assert.ok(kafkaCodes(err).includes(PRODUCER_FENCED), `codes ${kafkaCodes(err)}`);
        return true;
      });
    } finally {
      await Promise.all([old.close(), reusing.close(), successor.close()]);
    }
    await io.stableEnd(topic, 0, 1);
    assert.deepEqual(
      (await readToEnd(bootstrap, topic, { readCommitted: true })).map((m) => m.value.toString()),
      ["old", "successor"],
    );
  });

  test("two addOffset calls in flight at once store one offset; one at a time, both are stored", async () => {
    const topic = `quirks-offsets-${suffix}`;
    const group = `quirks-offsets-${suffix}`;
    await createTopic(a, topic, 2);
    await fill(topic, 2, 10);
    const consumer = groupConsumer(group);
    const producer = transactional(`quirks-offsets-${suffix}`);
    try {
      const read = collect(await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 }));
      await read.until(20, "10 records from each of 2 partitions");
      const record = (partition: number, offset: bigint) => read.seen.find((m) => m.partition === partition && m.offset === offset) as Message;
      const stored = () => io.stableCommittedOffsets(group, [{ topic, partitions: [0, 1] }]);

      const together = await producer.beginTransaction(NEW_PRODUCER_ID);
      await together.addConsumer(consumer);
      await Promise.all([record(0, 4n), record(1, 4n)].map((m) => together.addOffset(m)));
      await together.commit();
      assert.equal((await stored()).size, 1, "both offsets added at once were stored: one addOffset at a time (runtime/producer.ts write) can go");

      const oneByOne = await producer.beginTransaction();
      await oneByOne.addConsumer(consumer);
      for (const m of [record(0, 9n), record(1, 9n)]) await oneByOne.addOffset(m);
      await oneByOne.commit();
      assert.deepEqual(
        await stored(),
        new Map([
          [`${topic}:0`, 10n],
          [`${topic}:1`, 10n],
        ]),
      );
    } finally {
      await consumer.close(true);
      await producer.close();
    }
  });

  test("a KIP-848 group's addOffset is refused ILLEGAL_GENERATION; a classic group's is stored", async () => {
    const topic = `quirks-kip848-${suffix}`;
    await createTopic(a, topic, 1);
    await fill(topic, 1, 3);
    const commitLastOffset = async (protocol: "classic" | "consumer") => {
      const group = `quirks-kip848-${protocol}-${suffix}`;
      const consumer = groupConsumer(group, protocol);
      const producer = transactional(`quirks-kip848-${protocol}-${suffix}`);
      let error: unknown;
      try {
        const read = collect(await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 }));
        await read.until(3, `3 records in a ${protocol} group`);
        const tx = await producer.beginTransaction(NEW_PRODUCER_ID);
        try {
          await tx.addConsumer(consumer);
          await tx.addOffset(read.seen[2] as Message);
          await tx.commit();
        } catch (err) {
          error = err;
          await tx.abort();
        }
        return { error, generation: consumer.generationId, stored: await io.stableCommittedOffsets(group, [{ topic, partitions: [0] }]) };
      } finally {
        await consumer.close(true);
        await producer.close();
      }
    };

    const kip848 = await commitLastOffset("consumer");
    assert.equal(kip848.generation, 0, "a KIP-848 member's generationId, which addOffset sends");
    assert.deepEqual(
      kafkaCodes(kip848.error),
      [ILLEGAL_GENERATION],
      "a KIP-848 group took a transactional offset: the worker's consumer (runtime/worker.ts) need not keep the classic protocol",
    );
    assert.equal(kip848.stored.size, 0);

    const classic = await commitLastOffset("classic");
    assert.equal(classic.error, undefined);
    assert.deepEqual(classic.stored, new Map([[`${topic}:0`, 3n]]));
  });

  test("after a commit the next transaction meets CONCURRENT_TRANSACTIONS, and its retry waits 1 s unless retryDelay is set", async () => {
    const topic = `quirks-retry-${suffix}`;
    await createTopic(a, topic, 1);
    const write = async (producer: Producer, i: number) => {
      const tx = await producer.beginTransaction(i === 0 ? NEW_PRODUCER_ID : {});
      await tx.send({ messages: [{ topic, value: Buffer.from(`${i}`) }] });
      await tx.commit();
    };
    const concurrent: string[] = [];
    const plain = transactional(`quirks-retry-default-${suffix}`, {});
    const quick = transactional(`quirks-retry-20-${suffix}`, {
      // The worker's 20 ms, as a function that also notes what each retry was for.
      retryDelay: (_client, operation, _attempt, _retries, error) => {
        if (findErrorBy(error, "apiId", "CONCURRENT_TRANSACTIONS")) concurrent.push(operation);
        return 20;
      },
    });
    const plainDelays = retryDelays(plain);
    const quickDelays = retryDelays(quick);
    try {
      // With the default, only until the first retry: each costs a second.
      for (let i = 0; i < 10 && plainDelays.length === 0; i++) await write(plain, i);
      assert.deepEqual(
        plainDelays[0],
        { operation: "addPartitionsToTransaction", delayMs: 1000 },
        "no retry in up to 10 transactions waited 1 s by default: retryDelay 20 in runtime/worker.ts (newProducer) can go",
      );

      for (let i = 0; i < 20; i++) await write(quick, i);
      assert.ok(concurrent.length > 0, "20 transactions in a row met no CONCURRENT_TRANSACTIONS: retryDelay 20 in runtime/worker.ts (newProducer) can go");
      assert.ok(
        concurrent.every((operation) => operation === "addPartitionsToTransaction"),
        `retried: ${concurrent}`,
      );
      assert.ok(quickDelays.length >= concurrent.length && quickDelays.every((r) => r.delayMs === 20), `retries: ${JSON.stringify(quickDelays)}`);
    } finally {
      await Promise.all([plain.close(), quick.close()]);
    }
  });

  test("a rejoin leaves a partition without a committed offset where the read left it; the worker's positions rewind it", async () => {
    const topic = `quirks-rejoin-${suffix}`;
    const group = `quirks-rejoin-${suffix}`;
    const at = `${topic}:0`;
    await createTopic(a, topic, 1);
    await fill(topic, 1, 10);
    const consumer = groupConsumer(group);
    let joins = 0;
    consumer.on("consumer:group:join", () => joins++);
    try {
      const stream = await consumer.consume({ topics: [topic], mode: "committed", fallbackMode: "earliest", autocommit: false, maxWaitTime: 200 });
      let refreshes = 0;
      stream.on("offsets", () => refreshes++);
      const read = collect(stream);
      await read.until(10, "the partition read once, with no commit");
      stream.pause(); // as the worker does on a join
      assert.equal(stream.offsetsToFetch.get(at), 10n);

      // The sole member joins again and gets its partition back; on the join the stream sets its positions anew.
      const refreshed = refreshes;
      await consumer.joinGroup({});
      await waitFor(() => refreshes > refreshed, { what: "the stream to set its positions after the rejoin", timeoutMs: READ_DEADLINE_MS, intervalMs: 20 });
      assert.equal(joins, 2);
      assert.deepEqual(consumer.assignments, [{ topic, partitions: [0] }]);
      assert.equal(
        stream.offsetsToFetch.get(at),
        10n,
        "the stream now rewinds a partition with no committed offset on a rejoin: the positions runtime/worker.ts (positionsFor, reassign) sets can go",
      );

      // The worker's positions: the stable committed offset, or where startFrom says when there is none.
      const committed = await io.stableCommittedOffsets(group, [{ topic, partitions: [0] }]);
      const start = committed.get(at) ?? (await io.offsetsAt(topic, [0], "earliest", true)).get(0);
      assert.equal(start, 0n);
      stream.offsetsToFetch.set(at, start as bigint);
      stream.resume();
      await read.until(20, "the partition read again from its start");
      assert.deepEqual(
        read.seen.slice(10).map((m) => m.offset),
        Array.from({ length: 10 }, (_, i) => BigInt(i)),
      );
    } finally {
      await consumer.close(true);
    }
  });

  test("a consumer stamps records with the next generation before its join event; the broker takes offsets under it for another member's partition", async () => {
    const topic = `quirks-generation-${suffix}`;
    const group = `quirks-generation-${suffix}`;
    await createTopic(a, topic, 2);
    await fill(topic, 2, 5);
    const first = groupConsumer(group);
    const second = groupConsumer(group);
    const producer = transactional(`quirks-generation-${suffix}`);
    // The generation the first consumer holds when it asks for SyncGroup, and how many join events it had by then.
    const atSync: { generation: number; joins: number }[] = [];
    const joins: number[] = [];
    first.on("consumer:group:join", (p) => joins.push(p.generationId ?? -1));
    const target = first as unknown as Record<symbol, (name: string, cb: (...args: unknown[]) => void) => void>;
    const original = (target[kGetApi] as (name: string, cb: (...args: unknown[]) => void) => void).bind(first);
    target[kGetApi] = (name, cb) => {
      if (name === "SyncGroup") atSync.push({ generation: first.generationId, joins: joins.length });
      original(name, cb);
    };
    try {
      const read = collect(await first.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 }));
      await read.until(10, "5 records from each of 2 partitions");
      const assignment = { groupId: group, generationId: first.generationId, memberId: first.memberId as string };
      assert.equal(assignment.generationId, 1);

      await second.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 });
      await waitFor(() => joins.length === 2 && (second.assignments?.length ?? 0) > 0, {
        what: "both members in generation 2",
        timeoutMs: READ_DEADLINE_MS,
        intervalMs: 20,
      });
      assert.deepEqual(atSync[1], { generation: 2, joins: 1 }, "the second SyncGroup went out under generation 2, before the join event of it");
      const theirs = (second.assignments?.[0]?.partitions ?? [])[0] as number;
      const record = read.seen.find((m) => m.partition === theirs && m.offset === 2n) as Message;
      let firstTransaction = true;
      const commit = async (m: Message) => {
        const tx = await producer.beginTransaction(firstTransaction ? NEW_PRODUCER_ID : {});
        firstTransaction = false;
        try {
          await tx.addConsumer(first);
          await tx.addOffset(m);
          await tx.commit();
          return undefined;
        } catch (err) {
          await tx.abort();
          return err;
        }
      };
      // The batch of the old assignment under the assignment's own generation: refused.
      const refused = await commit(underGeneration([record], { ...assignment, coordinatorId: first.coordinatorId })[0] as Message);
      assert.deepEqual(kafkaCodes(refused), [ILLEGAL_GENERATION]);
      assert.equal((await io.stableCommittedOffsets(group, [{ topic, partitions: [theirs] }])).size, 0);
      // The same record as the library stamps it once it has parsed it after its JoinGroup: taken, though the
      // partition is the second member's now.
      const stamped = {
        ...record,
        metadata: { consumer: { groupId: group, generationId: first.generationId, memberId: first.memberId, coordinatorId: first.coordinatorId } },
      };
      assert.equal(
        await commit(stamped as unknown as Message),
        undefined,
        "the broker refused offsets of another member's partition under the current generation: underGeneration (runtime/worker.ts) may not be needed",
      );
      assert.deepEqual(await io.stableCommittedOffsets(group, [{ topic, partitions: [theirs] }]), new Map([[`${topic}:${theirs}`, 3n]]));
    } finally {
      await second.close(true);
      await first.close(true);
      await producer.close();
    }
  });

  test("consumer.commit that finds its member gone joins the group itself and commits under the new generation; commitAsMember leaves it to the caller", async () => {
    const topic = `quirks-commit-rejoin-${suffix}`;
    const group = `quirks-commit-rejoin-${suffix}`;
    await createTopic(a, topic, 1);
    await fill(topic, 1, 5);
    // Heartbeats far apart, so that the commits below, not a heartbeat, are the first to hear the member is gone.
    const consumer = new Consumer({
      clientId: "quirks",
      groupId: group,
      bootstrapBrokers: brokers(bootstrap),
      heartbeatInterval: 20_000,
      sessionTimeout: 60_000,
      rebalanceTimeout: 60_000,
    });
    const joins: number[] = [];
    consumer.on("consumer:group:join", (p) => joins.push(p.generationId ?? -1));
    try {
      const read = collect(await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 }));
      await read.until(5, "5 records");
      const member = { groupId: group, generationId: consumer.generationId, memberId: consumer.memberId as string };
      assert.deepEqual(joins, [1]);
      // The group moves on without the member (as after a stall past the session timeout).
      await a.removeMembersFromConsumerGroup({ groupId: group, members: [{ memberId: member.memberId }] });
      const commit = { topic, partition: 0, offset: 3n, leaderEpoch: -1 };

      const refused = await commitAsMember(consumer, member, [commit]).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(isRebalanceError(refused), `commitAsMember is refused with a rebalance error, not ${String(refused)}`);
      assert.deepEqual(joins, [1], "commitAsMember joined the group");
      assert.equal((await io.stableCommittedOffsets(group, [{ topic, partitions: [0] }])).size, 0);

      await consumer.commit({ offsets: [commit] });
      assert.equal(joins.length, 2, "consumer.commit no longer joins the group by itself: runtime/kafka/member-commit.ts may go");
      assert.ok((joins[1] ?? 0) > 1, `the commit's join is a new generation (${joins[1]})`);
      assert.deepEqual(
        await io.stableCommittedOffsets(group, [{ topic, partitions: [0] }]),
        new Map([[`${topic}:0`, 3n]]),
        "committed under the new generation",
      );
    } finally {
      await consumer.close(true);
    }
  });

  test("a leader assigns from its cached metadata, missing partitions added since; a protocolsMetadata callback makes each join look afresh", async () => {
    /** The partitions the group's two members hold once both joined one generation, after the topic grew from 2 to 4. */
    const heldAfterGrowth = async (name: string, protocolsMetadata?: () => Buffer): Promise<number[]> => {
      const topic = `quirks-grow-${name}-${suffix}`;
      await createTopic(a, topic, 2);
      // A cache that outlives the test stands for the default's 5 s, within which a rebalance commonly comes.
      const member = () =>
        new Consumer({
          clientId: "quirks",
          groupId: topic,
          bootstrapBrokers: brokers(bootstrap),
          metadataMaxAge: 120_000,
          ...(protocolsMetadata ? { protocolsMetadata } : {}),
        });
      const consumers = [member(), member()];
      const joins: { generation: number; partitions: number[] }[][] = [[], []];
      consumers.forEach((c, i) =>
        c.on("consumer:group:join", (p) =>
          joins[i]?.push({ generation: p.generationId ?? -1, partitions: (p.assignments ?? []).flatMap((x: { partitions: number[] }) => x.partitions) }),
        ),
      );
      try {
        await (consumers[0] as Consumer).consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 });
        await waitFor(() => joins[0]?.length === 1, { what: "the first member to join", timeoutMs: READ_DEADLINE_MS });
        await a.createPartitions({ topics: [{ name: topic, count: 4 }] });
        await waitFor(async () => (await a.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)?.partitionsCount === 4, {
          what: `${topic} to have 4 partitions`,
          timeoutMs: 15_000,
        });
        await (consumers[1] as Consumer).consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 });
        const both = await waitFor(
          () => {
            const last = joins.map((j) => j.at(-1));
            return last[0] && last[1] && last[0].generation === last[1].generation ? last : false;
          },
          { what: "both members in one generation", timeoutMs: READ_DEADLINE_MS },
        );
        return both.flatMap((j) => j?.partitions ?? []).sort();
      } finally {
        await Promise.all(consumers.map((c) => c.close(true)));
      }
    };
    assert.deepEqual(
      await heldAfterGrowth("cached"),
      [0, 1],
      "the leader now assigns partitions added since its last metadata read: the worker's protocolsMetadata may go",
    );
    assert.deepEqual(await heldAfterGrowth("afresh", () => Buffer.alloc(0)), [0, 1, 2, 3]);
  });

  test("consumer.listCommittedOffsets reads past an open transaction's offsets; stableCommittedOffsets waits for its commit", async () => {
    const topic = `quirks-stable-${suffix}`;
    const group = `quirks-stable-${suffix}`;
    await createTopic(a, topic, 1);
    await fill(topic, 1, 3);
    const consumer = groupConsumer(group);
    const producer = transactional(`quirks-stable-${suffix}`);
    const strict = new Admin({ clientId: "quirks-strict", bootstrapBrokers: brokers(bootstrap), retries: 0 });
    // A KafkaIo of its own, with its admin in hand to see its reads refused while the transaction is open.
    let ioAdmin: Admin | undefined;
    const onCreated = (event: unknown) => {
      const created = event as CreationEvent<Admin>;
      if (created.type === "admin") ioAdmin = created.instance;
    };
    subscribe(instancesChannel.name, onCreated);
    const waiting = new KafkaIo({ bootstrapBrokers: brokers(bootstrap) }, `quirks-stable-${suffix}`);
    unsubscribe(instancesChannel.name, onCreated);
    assert.ok(ioAdmin, "KafkaIo's admin was not seen being created");
    const refused = retryDelays(ioAdmin);
    try {
      const read = collect(await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 200 }));
      await read.until(3, "3 records");
      await (read.seen[0] as Message).commit();
      const tx = await producer.beginTransaction(NEW_PRODUCER_ID);
      await tx.addConsumer(consumer);
      await tx.addOffset(read.seen[2] as Message);

      assert.deepEqual(
        await consumer.listCommittedOffsets({ topics: [{ topic, partitions: [0] }] }),
        new Map([[topic, [1n]]]),
        "consumer.listCommittedOffsets now asks for stable offsets: once quirk 5 is gone too, KafkaIo.stableCommittedOffsets (runtime/kafka/kafka-io.ts) can go",
      );
      await assert.rejects(
        strict.listConsumerGroupOffsets({ groups: [{ groupId: group, topics: [{ name: topic, partitionIndexes: [0] }] }], requireStable: true }),
        (err) => {
          assert.ok(kafkaCodes(err).includes(UNSTABLE_OFFSET_COMMIT), `codes ${kafkaCodes(err)}`);
          return true;
        },
      );

      const stable = waiting.stableCommittedOffsets(group, [{ topic, partitions: [0] }]);
      await waitFor(() => refused.length > 0, {
        what: "stableCommittedOffsets to be refused while the transaction is open",
        timeoutMs: 10_000,
        intervalMs: 20,
      });
      await tx.commit();
      assert.deepEqual(await stable, new Map([[`${topic}:0`, 3n]]));
    } finally {
      await consumer.close(true);
      await Promise.all([producer.close(), strict.close(), waiting.close()]);
    }
  });

  test("the library's own read_committed filter drops a committed transaction between two aborts; readCommittedOnly keeps it", async () => {
    const topic = `quirks-aborts-${suffix}`;
    await createTopic(a, topic, 1);
    const producer = transactional(`quirks-aborts-${suffix}`);
    try {
      const send = async (values: string[], end: "commit" | "abort") => {
        const tx = await producer.beginTransaction(NEW_PRODUCER_ID);
        await tx.send({ messages: values.map((v) => ({ topic, partition: 0, value: Buffer.from(v) })) });
        await (end === "commit" ? tx.commit() : tx.abort());
      };
      await send(["aborted-1", "aborted-2"], "abort");
      await send(["committed-1", "committed-2"], "commit");
      // A transaction that added the partition and wrote nothing there, then aborted: an abort marker that no
      // aborted-transaction list names (what a fenced worker's last transaction leaves).
      const tx = await producer.beginTransaction();
      await tx.addPartitions(await producer.metadata({ topics: [topic] }), [{ topic, partition: 0, value: Buffer.alloc(0) }]);
      await tx.abort();
    } finally {
      await producer.close();
    }
    const end = await io.stableEnd(topic, 0, 1);
    // The library alone: it ends the listed abort at the producer's last abort marker.
    const plain = new Consumer({ clientId: "quirks-plain", groupId: `quirks-plain-${suffix}`, bootstrapBrokers: brokers(bootstrap) });
    let libraryRead: string[];
    try {
      const stream = await plain.consume({ topics: [topic], mode: "earliest", autocommit: false, isolationLevel: 1, maxWaitTime: 100 });
      const { seen } = collect(stream);
      await waitFor(() => (stream.offsetsToFetch.get(`${topic}:0`) ?? 0n) >= end, { what: "the plain reader at the end", timeoutMs: READ_DEADLINE_MS });
      libraryRead = seen.map((m) => m.value.toString());
      await stream.close();
    } finally {
      await plain.close(true);
    }
    assert.deepEqual(
      libraryRead,
      [],
      "the library's read_committed filter kept the committed transaction: the Fetch API hook in runtime/kafka/read-committed.ts (hideFromLibraryFilter) can go",
    );
    assert.deepEqual(
      (await readToEnd(bootstrap, topic, { readCommitted: true })).map((m) => m.value.toString()),
      ["committed-1", "committed-2"],
    );
  });
  test("a record more than 2^31 ms from its batch's first is stored milliseconds off; with client.ts's varlong, exactly", async () => {
    const topic = `quirks-timestamps-${suffix}`;
    await createTopic(a, topic, 1);
    const now = BigInt(Date.now());
    // a table's tombstone at its own time, in a batch of records of now (runtime-join.test.ts's u-0)
    const stamps = [now, 1_688_169_750_000n, now + 1n, now - 2n ** 32n - 5n];
    const send = async (label: string) => {
      const p = new Producer({ clientId: "quirks-timestamps", bootstrapBrokers: brokers(bootstrap), acks: -1 });
      try {
        await p.send({ messages: stamps.map((timestamp, i) => ({ topic, partition: 0, value: Buffer.from(`${label}-${i}`), timestamp })) });
      } finally {
        await p.close();
      }
    };
    // the library's own varlong, for one batch: the correction is process-wide, so it is set aside here
    const prototype = Object.getPrototypeOf(Writer.create().dynamicBuffer) as { writeVarInt64: (v: bigint, append?: boolean) => void };
    const corrected = prototype.writeVarInt64;
    prototype.writeVarInt64 = function (this: { append(b: Buffer): void; prepend(b: Buffer): void }, v: bigint, append = true) {
      const b = libraryVarLong(v);
      if (append) this.append(b);
      else this.prepend(b);
    };
    try {
      await send("library");
    } finally {
      prototype.writeVarInt64 = corrected;
    }
    await send("corrected");
    const read = await readToEnd(bootstrap, topic);
    const stored = (label: string) => read.filter((m) => m.value.toString().startsWith(`${label}-`)).map((m) => m.timestamp);
    assert.deepEqual(stored("library").slice(0, 1), [now], "the batch's first is its base");
    assert.notDeepEqual(stored("library"), stamps, "the library stores every timestamp as sent: runtime/kafka/client.ts can go");
    assert.deepEqual(stored("corrected"), stamps);
  });
});
