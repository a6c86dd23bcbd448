// Route steps on the real broker (issue 18, item 5): records go to named sinks by condition, each with its own
// topic, key and format, before a window and after it, under exactly-once, with a worker SIGKILLed halfway and
// started again. Every record ends in exactly one place: the sink of the first route that takes it, the main sink
// (through the window) or, when its sink's key fails, the DLQ, named by the route step.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, header, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, WorkerSet } from "../support/runtime.ts";

const T0 = Date.parse("2023-05-01T00:00:00Z");
const RECORDS = 6_000;
const USERS = 40;

interface Payment {
  user: string;
  ts: number;
  amount: number;
  kind: "pay" | "refund";
  account?: string;
}

/** Record i, seeded by its index: every 7th a refund, amounts 1-150, no account on a big payment whose index is a multiple of 97. */
function payment(i: number): Payment {
  const amount = 1 + ((i * 37) % 150);
  const p: Payment = { user: `u-${(i * 13) % USERS}`, ts: T0 + i * 100, amount, kind: i % 7 === 0 ? "refund" : "pay" };
  if (!(amount > 120 && i % 97 === 0)) p.account = `acct-${i % 11}`;
  return p;
}

describe("route: records to named sinks by condition", () => {
  const { env, suffix, dir, a } = runtimeSuite("runtime-route");

  test("before and after a window, each record in one place, exactly once, across a SIGKILL", async () => {
    const name = `route-${suffix}`;
    const [source, sink, big, refunds, busy, dlq] = ["src", "out", "big", "refunds", "busy", "dlq"].map((t) => `route-${t}-${suffix}`) as [
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "10m" } },
      steps: [
        {
          name: "split",
          route: [
            { when: "value.amount > 120", to: "big" },
            { when: "value.kind == 'refund'", to: "refunds" },
          ],
        },
        { name: "by-user", keyBy: "value.user" },
        { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} }, total: { sum: "value.amount" } } },
        { name: "flag", route: [{ when: "value.n >= 11", to: "busy" }] },
      ],
      sink: { topic: sink },
      sinks: [
        { name: "big", topic: big, key: "value.account" },
        { name: "refunds", topic: refunds, key: "value.user" },
        { name: "busy", topic: busy },
      ],
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, big, refunds, busy, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const payments = Array.from({ length: RECORDS }, (_, i) => payment(i));
    // the expectation, from the spec's rules
    const toBig = payments.filter((p) => p.amount > 120);
    const toRefunds = payments.filter((p) => p.amount <= 120 && p.kind === "refund");
    const windowed = payments.filter((p) => p.amount <= 120 && p.kind !== "refund");
    const windows = new Map<string, { user: string; start: number; n: number; total: number }>();
    for (const p of windowed) {
      const start = Math.floor(p.ts / 60_000) * 60_000;
      const k = `${p.user}|${start}`;
      const w = windows.get(k) ?? { user: p.user, start, n: 0, total: 0 };
      w.n++;
      w.total += p.amount;
      windows.set(k, w);
    }
    const expectBusy = [...windows.values()].filter((w) => w.n >= 11);
    const expectSink = [...windows.values()].filter((w) => w.n < 11);
    const badKeys = toBig.filter((p) => p.account === undefined);
    assert.ok(badKeys.length > 0 && expectBusy.length > 0 && expectSink.length > 0 && toRefunds.length > 0, "the data exercises every path");

    const producer = new Producer({ clientId: "route-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    try {
      const messages: { topic: string; partition?: number; key: Buffer; value: Buffer }[] = payments.map((p) => ({
        topic: source,
        key: Buffer.from(p.user),
        value: Buffer.from(JSON.stringify(p)),
      }));
      // an hour on, in both partitions: every window of the data closes (the flush records' own stay open)
      const flush: Payment = { user: "flush", ts: T0 + 3_600_000, amount: 1, kind: "pay", account: "x" };
      for (const partition of [0, 1]) messages.push({ topic: source, partition, key: Buffer.from("flush"), value: Buffer.from(JSON.stringify(flush)) });
      for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
    } finally {
      await producer.close();
    }

    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await set.startAll();
      await waitFor(async () => (await groupLag(a, topology.applicationId, source)) <= BigInt(RECORDS / 2), {
        what: "half the source committed",
        timeoutMs: 120_000,
        intervalMs: 100,
      });
      assert.ok(isAlive(set.workers.get("w-1")?.proc.pid ?? -1));
      set.kill("w-1", "SIGKILL");
      const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
      await waitFor(
        async () => {
          await set.supervise();
          const [s, b] = await Promise.all([read(sink), read(busy)]);
          return (await groupLag(a, topology.applicationId, source)) === 0n && s.length + b.length >= windows.size;
        },
        { what: "every window in the sink or in busy", timeoutMs: 240_000, intervalMs: 1_000 },
      );
      assert.ok(set.restarts >= 1, "the killed worker was started again");

      const bigRecords = await read(big);
      assert.deepEqual(
        bigRecords.map((m) => [m.key.toString(), JSON.parse(m.value.toString()) as Payment]).sort(([, x], [, y]) => (x as Payment).ts - (y as Payment).ts),
        toBig.filter((p) => p.account !== undefined).map((p) => [p.account, p]),
        "big: keyed by its own key expression, each once",
      );
      const refundRecords = await read(refunds);
      assert.deepEqual(
        refundRecords.map((m) => [m.key.toString(), m.value.toString()]).sort(),
        toRefunds.map((p) => [p.user, JSON.stringify(p)]).sort(),
        "refunds: keyed by user, each once",
      );
      const view = (m: { key: Buffer; value: Buffer }) => {
        const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number; total: number };
        return { user: v.key, start: v.windowStart, n: v.n, total: v.total };
      };
      const order = (x: { user: string; start: number }, y: { user: string; start: number }) => x.user.localeCompare(y.user) || x.start - y.start;
      assert.deepEqual((await read(busy)).map(view).sort(order), expectBusy.sort(order), "window results routed after the window");
      assert.deepEqual((await read(sink)).map(view).sort(order), expectSink.sort(order), "the rest to the main sink");
      const dead = await read(dlq);
      assert.deepEqual(
        dead.map((m) => JSON.parse(m.value.toString()) as Payment).sort((x, y) => x.ts - y.ts),
        badKeys,
        "a record whose sink key fails goes to the DLQ",
      );
      for (const m of dead) {
        assert.equal(header(m.headers, DLQ_HEADERS.step), "split");
        assert.match(header(m.headers, DLQ_HEADERS.error) ?? "", /sink "big"/);
      }
    } finally {
      await set.stopAll();
    }
  });
});
