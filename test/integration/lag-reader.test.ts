// The lag reader against a real broker of its own (the last test stops and restarts it): end offsets, committed
// offsets and lag per partition; partitions never committed, with the lag startFrom implies; transactions;
// the group's state and members; rates from two samples; and a stopped broker read as unknown, within seconds.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { isDeepStrictEqual } from "node:util";
import { type Admin, Consumer, type Message, type MessagesStream } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { LagReader, type LagReading, type LagTarget, lagAdmin, readSample } from "../../src/scaling/lag-reader.ts";
import { type KafkaCluster, startBroker, startKafka, stopKafka, waitForBroker } from "../env/kafka.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, brokers, createTopic } from "../support/kafka.ts";

const key = (topic: string, partition: number) => `${topic}:${partition}`;

/** A group member that joined and holds every partition of its topics. */
interface Member {
  consumer: Consumer;
  stream: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  commit(topic: string, offsets: bigint[]): Promise<void>;
  close(): Promise<void>;
}

describe("lag reader on a broker of its own", () => {
  const env = bedEnv();
  const suffix = uniqueSuffix();
  let kafka: KafkaCluster;
  let bootstrap: string;
  let a: Admin;
  let reader: LagReader;
  /** An Admin built as the reader builds its own, to call readSample directly. */
  let direct: Admin;
  const members = new Set<Member>();

  before(async () => {
    kafka = await startKafka({ dir: join(env.state.dir, `lag-reader-${suffix}`, "kafka") });
    bootstrap = kafka.bootstrap;
    a = admin(bootstrap);
    reader = new LagReader({ now: Date.now });
    direct = lagAdmin({ bootstrapServers: brokers(bootstrap) });
  });

  after(async () => {
    for (const m of members) await m.close();
    await reader?.close();
    await direct?.close();
    await a?.close();
    if (kafka) await stopKafka(kafka);
  });

  const target = (group: string, topics: string[], startFrom: "earliest" | "latest" = "earliest"): LagTarget => ({
    kafka: { bootstrapServers: brokers(bootstrap) },
    group,
    topics,
    startFrom,
  });

  /** Produces `counts[p]` records to partition p, so the expected offsets do not depend on key hashing. */
  async function produceTo(topic: string, counts: number[]): Promise<void> {
    const producer = new Producer({ clientId: "lag-reader-it", bootstrapBrokers: brokers(bootstrap), acks: -1, idempotent: true });
    try {
      await producer.send({
        messages: counts.flatMap((n, partition) =>
          Array.from({ length: n }, (_, i) => ({ topic, partition, key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`) })),
        ),
      });
    } finally {
      await producer.close();
    }
  }

  async function joinGroup(group: string, topics: string[]): Promise<Member> {
    const consumer = new Consumer({ clientId: "lag-reader-it", groupId: group, bootstrapBrokers: brokers(bootstrap), isolationLevel: 1 });
    const stream = await consumer.consume({ topics, mode: "committed", fallbackMode: "earliest", autocommit: false, maxWaitTime: 200, isolationLevel: 1 });
    const member: Member = {
      consumer,
      stream,
      commit: (topic, offsets) => consumer.commit({ offsets: offsets.map((offset, partition) => ({ topic, partition, offset, leaderEpoch: -1 })) }),
      close: async () => {
        members.delete(member);
        await stream.close();
        await consumer.close();
      },
    };
    members.add(member);
    return member;
  }

  test("end offsets, committed offsets and lag per partition after 200 records and a member's commits", async (t) => {
    const topic = `lag-offsets-${suffix}`;
    const group = `lag-offsets-group-${suffix}`;
    await createTopic(a, topic, 3);
    await produceTo(topic, [100, 60, 40]);
    const member = await joinGroup(group, [topic]);
    await member.commit(topic, [30n, 60n, 10n]);

    const t0 = Date.now();
    const { sample, errors, startOffsets } = await readSample(direct, { group, topics: [topic], startFrom: "earliest" }, Date.now);
    t.diagnostic(`one sample read in ${Date.now() - t0} ms`);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      sample.endOffsets,
      new Map([
        [key(topic, 0), 100n],
        [key(topic, 1), 60n],
        [key(topic, 2), 40n],
      ]),
    );
    assert.deepEqual(
      sample.committed,
      new Map([
        [key(topic, 0), 30n],
        [key(topic, 1), 60n],
        [key(topic, 2), 10n],
      ]),
    );
    assert.deepEqual(startOffsets, new Map(), "every partition has a committed offset");

    const { rates } = await reader.poll(`offsets-${suffix}`, target(group, [topic]));
    assert.deepEqual(
      rates.partitionLag,
      new Map([
        [key(topic, 0), 70],
        [key(topic, 1), 0],
        [key(topic, 2), 30],
      ]),
    );
    assert.equal(rates.lag, 100);
    assert.equal(rates.inRate, undefined, "a first sample has no rate");
    await member.close();
  });

  test("a group that never committed: its partitions show as uncommitted, with the lag startFrom implies", async () => {
    const topic = `lag-fresh-${suffix}`;
    const group = `lag-fresh-group-${suffix}`;
    await createTopic(a, topic, 2);
    await produceTo(topic, [50, 20]);
    // Retention at work: the log of partition 0 now starts at 10, so `earliest` is 40 behind, not 50.
    await a.deleteRecords({ topics: [{ name: topic, partitions: [{ partition: 0, offset: 10n }] }] });

    const earliest = await reader.poll(`fresh-earliest-${suffix}`, target(group, [topic], "earliest"));
    assert.deepEqual(earliest.errors, []);
    assert.deepEqual(
      earliest.sample.committed,
      new Map([
        [key(topic, 0), undefined],
        [key(topic, 1), undefined],
      ]),
    );
    assert.deepEqual(
      earliest.startOffsets,
      new Map([
        [key(topic, 0), 10n],
        [key(topic, 1), 0n],
      ]),
    );
    assert.deepEqual(
      earliest.rates.partitionLag,
      new Map([
        [key(topic, 0), 40],
        [key(topic, 1), 20],
      ]),
    );
    assert.equal(earliest.rates.lag, 60);

    const latest = await reader.poll(`fresh-latest-${suffix}`, target(group, [topic], "latest"));
    assert.deepEqual(latest.errors, []);
    assert.deepEqual(
      latest.startOffsets,
      new Map([
        [key(topic, 0), 50n],
        [key(topic, 1), 20n],
      ]),
    );
    assert.deepEqual(
      latest.rates.partitionLag,
      new Map([
        [key(topic, 0), 0],
        [key(topic, 1), 0],
      ]),
    );
    // The coordinator has never heard of the group.
    assert.equal(latest.sample.groupState, "Dead");
    assert.equal(latest.sample.members, 0);
  });

  test("transactions: an open one's records are not lag yet; a committed one's marker is lag until the position passes it", async () => {
    const topic = `lag-txn-${suffix}`;
    const group = `lag-txn-group-${suffix}`;
    await createTopic(a, topic, 2);
    const src = { group, topics: [topic], startFrom: "earliest" as const };
    const producer = new Producer({
      clientId: "lag-reader-it-txn",
      bootstrapBrokers: brokers(bootstrap),
      transactionalId: `lag-reader-it-${suffix}`,
      idempotent: true,
      acks: -1,
      retryDelay: 20,
    });
    const records = (partition: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({ topic, partition, key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`) }));
    try {
      const first = await producer.beginTransaction({ producerId: -1n, producerEpoch: -1 });
      await first.send({ messages: [...records(0, 10), ...records(1, 5)] });
      await first.commit();
      // Records 0-9 and 0-4, then each partition's commit marker.
      const committedEnds = new Map([
        [key(topic, 0), 11n],
        [key(topic, 1), 6n],
      ]);
      // The coordinator writes the markers after the commit returns, so the stable end moves a moment later.
      await waitFor(async () => isDeepStrictEqual((await readSample(direct, src, Date.now)).sample.endOffsets, committedEnds), {
        what: "the first transaction's markers to be written",
        timeoutMs: 10_000,
        intervalMs: 50,
      });

      const open = await producer.beginTransaction();
      await open.send({ messages: records(0, 7) });
      const during = await readSample(direct, src, Date.now);
      assert.deepEqual(during.sample.endOffsets, committedEnds, "read_committed ends at the open transaction's first record");
      const uncommitted = await a.listOffsets({ topics: [{ name: topic, partitions: [{ partitionIndex: 0, timestamp: -1n }] }], isolationLevel: 0 });
      assert.equal(uncommitted[0]?.partitions[0]?.offset, 18n, "read_uncommitted counts the open transaction's 7 records");
      await open.commit();
    } finally {
      await producer.close();
    }
    // 11 + 7 records + a marker on partition 0.
    const ends = [19n, 6n];

    const member = await joinGroup(group, [topic]);
    const last = new Map<number, Message>();
    member.stream.on("data", (m: Message) => last.set(m.partition, m));
    await waitFor(() => ends.every((e, p) => (member.stream.offsetsToFetch.get(key(topic, p)) ?? 0n) >= e), {
      what: "the member to fetch past the end of both partitions",
      timeoutMs: 30_000,
    });
    assert.deepEqual(
      [...last.entries()].sort(([x], [y]) => x - y).map(([p, m]) => [p, m.offset]),
      [
        [0, 17n],
        [1, 4n],
      ],
    );

    // Committing after the last record, as a worker commits what it processed, leaves each marker behind: one
    // record of lag per partition, which the policy treats as drained (RESIDUAL_LAG).
    await member.commit(topic, [18n, 5n]);
    const afterRecords = await reader.poll(`txn-${suffix}`, target(group, [topic]));
    assert.deepEqual(
      afterRecords.rates.partitionLag,
      new Map([
        [key(topic, 0), 1],
        [key(topic, 1), 1],
      ]),
    );
    // The fetch position is past the markers: committed there, there is no lag.
    await member.commit(
      topic,
      ends.map((_, p) => member.stream.offsetsToFetch.get(key(topic, p)) ?? 0n),
    );
    const atPosition = await reader.poll(`txn-${suffix}`, target(group, [topic]));
    assert.deepEqual(
      atPosition.rates.partitionLag,
      new Map([
        [key(topic, 0), 0],
        [key(topic, 1), 0],
      ]),
    );
    assert.equal(atPosition.rates.lag, 0);
    await member.close();
  });

  test("the group's state and members: Stable with one member holding partitions, then Empty once it leaves", async () => {
    const topic = `lag-group-${suffix}`;
    const group = `lag-group-group-${suffix}`;
    await createTopic(a, topic, 2);
    const member = await joinGroup(group, [topic]);
    const stable = await waitFor(
      async () => {
        const r = await reader.poll(`group-${suffix}`, target(group, [topic]));
        return r.sample.groupState === "Stable" && r;
      },
      { what: `group ${group} to be Stable`, timeoutMs: 30_000 },
    );
    assert.equal(stable.sample.members, 1);
    assert.equal(stable.sample.membersWithAssignment, 1);
    assert.equal(stable.rates.members, 1);

    await member.close();
    const empty = await waitFor(
      async () => {
        const r = await reader.poll(`group-${suffix}`, target(group, [topic]));
        return r.sample.groupState === "Empty" && r;
      },
      { what: `group ${group} to be Empty after its member left`, timeoutMs: 30_000 },
    );
    assert.equal(empty.sample.members, 0);
    assert.equal(empty.sample.membersWithAssignment, 0);
  });

  const ratesTopic = `lag-rates-${suffix}`;
  const ratesGroup = `lag-rates-group-${suffix}`;
  const ratesKey = `rates-${suffix}`;
  let lastKnown: LagReading | undefined;

  test("rates: input and consumption between two samples, from their offsets and times", async () => {
    await createTopic(a, ratesTopic, 3);
    await produceTo(ratesTopic, [10, 10, 10]);
    const member = await joinGroup(ratesGroup, [ratesTopic]);
    await member.commit(ratesTopic, [0n, 0n, 0n]);
    const first = await reader.poll(ratesKey, target(ratesGroup, [ratesTopic]));
    assert.deepEqual(first.errors, []);

    await produceTo(ratesTopic, [30, 0, 12]);
    await member.commit(ratesTopic, [10n, 4n, 0n]);
    // Any interval will do: the expectation comes from the samples' own times.
    await delay(2_000);
    const second = await reader.poll(ratesKey, target(ratesGroup, [ratesTopic]));
    assert.deepEqual(second.errors, []);
    await member.close();

    const seconds = (second.sample.at - first.sample.at) / 1000;
    assert.ok(seconds >= 2, `the samples are ${seconds} s apart`);
    const appended = [30, 0, 12];
    assert.deepEqual(second.rates.partitionInRate, new Map(appended.map((n, p) => [key(ratesTopic, p), n / seconds])));
    for (const [p, n] of appended.entries()) {
      assert.equal((second.sample.endOffsets?.get(key(ratesTopic, p)) ?? 0n) - (first.sample.endOffsets?.get(key(ratesTopic, p)) ?? 0n), BigInt(n));
    }
    assert.ok(Math.abs((second.rates.inRate ?? 0) - 42 / seconds) < 1e-9, `inRate ${second.rates.inRate}, expected ${42 / seconds}`);
    assert.ok(Math.abs((second.rates.consumeRate ?? 0) - 14 / seconds) < 1e-9, `consumeRate ${second.rates.consumeRate}, expected ${14 / seconds}`);
    assert.equal(second.rates.lag, 40 - 10 + (10 - 4) + 22);
    lastKnown = second;
  });

  const poll = () => reader.poll(ratesKey, target(ratesGroup, [ratesTopic]));

  /** Every field of a reading that failed is unknown, and so is every figure derived from it. */
  function assertUnknown(r: LagReading): void {
    assert.equal(r.sample.endOffsets, undefined);
    assert.equal(r.sample.committed, undefined);
    assert.equal(r.sample.groupState, undefined);
    assert.equal(r.sample.members, undefined);
    assert.equal(r.errors.length, 3, "partitions, committed offsets and the group each say why");
    assert.equal(r.rates.lag, undefined);
    assert.equal(r.rates.partitionLag, undefined);
    assert.equal(r.rates.inRate, undefined);
    assert.equal(r.rates.consumeRate, undefined);
  }

  test("a hung broker (SIGSTOP) reads as unknown within the client's timeouts", async (t) => {
    const broker = kafka.brokers[0];
    const pid = broker && kafka.pids.get(broker.nodeId);
    assert.ok(pid);
    process.kill(pid, "SIGSTOP");
    try {
      const t0 = Date.now();
      const hung = await poll();
      const took = Date.now() - t0;
      t.diagnostic(`read with the broker hung in ${took} ms; errors:\n${hung.errors.join("\n")}`);
      assert.ok(took < 30_000, `the read took ${took} ms`);
      assertUnknown(hung);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    const t1 = Date.now();
    lastKnown = await waitFor(
      async () => {
        const r = await poll();
        return r.errors.length === 0 && r;
      },
      { what: "every read to succeed once the broker runs again", timeoutMs: 60_000, intervalMs: 500 },
    );
    t.diagnostic(`reads back ${Date.now() - t1} ms after SIGCONT`);
  });

  test("a stopped broker reads as unknown within seconds, and the reads come back when it returns", async (t) => {
    assert.ok(lastKnown, "runs after the rates test");
    const broker = kafka.brokers[0];
    assert.ok(broker);
    await stopProcess(kafka.pids.get(broker.nodeId) ?? 0, 15_000);
    kafka.pids.delete(broker.nodeId);

    const t0 = Date.now();
    const down = await poll();
    const took = Date.now() - t0;
    t.diagnostic(`read with the broker down in ${took} ms; errors:\n${down.errors.join("\n")}`);
    assert.ok(took < 30_000, `the read took ${took} ms`);
    assertUnknown(down);

    kafka.pids.set(broker.nodeId, startBroker(broker).pid);
    await waitForBroker(kafka, broker);
    await produceTo(ratesTopic, [5, 6, 7]);
    // The first reading with offsets again measures from the last one before the outage, so the records
    // appended meanwhile still count.
    let firstBack: LagReading | undefined;
    const t1 = Date.now();
    const back = await waitFor(
      async () => {
        const r = await poll();
        if (!firstBack && r.sample.endOffsets && r.sample.committed) firstBack = r;
        return r.errors.length === 0 && r;
      },
      { what: "every read to succeed after the broker's restart", timeoutMs: 60_000, intervalMs: 500 },
    );
    t.diagnostic(`reads back ${Date.now() - t1} ms after the broker answered metadata`);
    assert.equal(back.sample.groupState, "Empty");
    assert.ok(firstBack);
    const seconds = (firstBack.sample.at - lastKnown.sample.at) / 1000;
    assert.ok(Math.abs((firstBack.rates.inRate ?? 0) * seconds - 18) < 1e-6, `inRate ${firstBack.rates.inRate} over ${seconds} s`);
    assert.equal(back.rates.lag, (lastKnown.rates.lag ?? 0) + 18);
  });
});
