// Named inputs on the real broker (issue 18, item 3): a pipeline reads its source and a named input, each with its
// own format, event time and watermark, as one stream into one window. The source's payments are JSON, in order,
// with a 1 s out-of-orderness; the input's are "user,ts,amount" strings, each block of 14 in reverse order (up to
// 2.6 s behind), with a 5 s out-of-orderness. The windows must count every record of both, exactly once, with none
// late, across a worker SIGKILLed halfway. Each input's own settings are in force: read with the source's format
// the input's records would not parse; a record 10 minutes ahead of the clock goes to the DLQ from the source
// (maxFutureSkew 5m) and counts from the input (1h); and once all is read the input's partitions go idle after
// its idleTimeout of 8 s, while the source's (10m) do not.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api-types.gen.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, header, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, WorkerSet } from "../support/runtime.ts";

const T0 = Date.parse("2023-06-01T00:00:00Z");
/** records of each input, 200 ms of event time apart: ten minutes */
const RECORDS = 3_000;
const USERS = 20;
/** not a divisor of the 300 records of a minute: some blocks cross a minute's end */
const BLOCK = 14;

interface Payment {
  user: string;
  ts: number;
  amount: number;
}

function payment(i: number, salt: number): Payment {
  return { user: `u-${(i * 7 + salt) % USERS}`, ts: T0 + i * 200, amount: 1 + ((i * 31 + salt) % 90) };
}

describe("named inputs: each with its own format, event time and watermark", () => {
  const { env, suffix, dir, a } = runtimeSuite("runtime-inputs");

  test("the source and an input of another format, out of order within its own bound, counted exactly once in one window, across a SIGKILL", async () => {
    const name = `inputs-${suffix}`;
    const [source, legacy, sink, dlq] = ["src", "legacy", "out", "dlq"].map((t) => `inputs-${t}-${suffix}`) as [string, string, string, string];
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s", idleTimeout: "10m" } },
      inputs: [
        {
          name: "legacy",
          topics: [legacy],
          format: "string",
          eventTime: "int(value.split(',')[1])",
          watermark: { maxOutOfOrderness: "5s", idleTimeout: "8s", maxFutureSkew: "1h" },
        },
      ],
      steps: [
        {
          name: "as-payment",
          map:
            "topic == '" +
            legacy +
            "' ? {'user': value.split(',')[0], 'amount': int(value.split(',')[2]), 'legacy': true} : {'user': value.user, 'amount': value.amount, 'legacy': false}",
        },
        { name: "by-user", keyBy: "value.user" },
        {
          name: "per-minute",
          window: { tumbling: "1m" },
          aggregate: { n: { count: {} }, total: { sum: "value.amount" }, legacy: { sum: "value.legacy ? 1 : 0" } },
        },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      processing: { guarantee: "exactlyOnce" },
    };
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, legacy, sink, dlq]) await createTopic(a, t, 2);
    await createInternalTopics(a, topology, 2);

    const payments = Array.from({ length: RECORDS }, (_, i) => payment(i, 0));
    const legacyPayments = Array.from({ length: RECORDS }, (_, i) => payment(i, 3));
    const expected = new Map<string, { user: string; start: number; n: number; total: number; legacy: number }>();
    for (const [p, isLegacy] of [...payments.map((p) => [p, 0] as const), ...legacyPayments.map((p) => [p, 1] as const)]) {
      const start = Math.floor(p.ts / 60_000) * 60_000;
      const w = expected.get(`${p.user}|${start}`) ?? { user: p.user, start, n: 0, total: 0, legacy: 0 };
      w.n++;
      w.total += p.amount;
      w.legacy += isLegacy;
      expected.set(`${p.user}|${start}`, w);
    }
    // the input's records, each block of BLOCK reversed: up to (BLOCK - 1) * 200 ms behind the latest before them
    const shuffled: Payment[] = [];
    for (let i = 0; i < legacyPayments.length; i += BLOCK) shuffled.push(...legacyPayments.slice(i, i + BLOCK).reverse());
    const behindMinuteEnd = shuffled.filter(
      (p, i) => i > 0 && Math.floor(p.ts / 60_000) < Math.floor(Math.max(...shuffled.slice(Math.max(0, i - BLOCK), i).map((q) => q.ts)) / 60_000),
    );
    assert.ok(behindMinuteEnd.length > 0, "some of the input's records come after a record of the next minute");

    const ahead = Date.now() + 600_000;
    const aheadOfSource = JSON.stringify({ user: "ahead", ts: ahead, amount: 1 });
    const producer = new Producer({ clientId: "inputs-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    try {
      const messages: { topic: string; partition?: number; key: Buffer; value: Buffer }[] = [
        ...payments.map((p) => ({ topic: source, key: Buffer.from(p.user), value: Buffer.from(JSON.stringify(p)) })),
        ...shuffled.map((p) => ({ topic: legacy, key: Buffer.from(p.user), value: Buffer.from(`${p.user},${p.ts},${p.amount}`) })),
      ];
      // an hour on, in every partition of both: every window of the data closes (the flush records' own stay open)
      const flushAt = T0 + 3_600_000;
      for (const partition of [0, 1]) {
        messages.push({ topic: source, partition, key: Buffer.from("flush"), value: Buffer.from(JSON.stringify({ user: "flush", ts: flushAt, amount: 0 })) });
        messages.push({ topic: legacy, partition, key: Buffer.from("flush"), value: Buffer.from(`flush,${flushAt},0`) });
      }
      // last, 10 minutes ahead of the clock: one from each input, in partition 0
      messages.push({ topic: source, partition: 0, key: Buffer.from("ahead"), value: Buffer.from(aheadOfSource) });
      messages.push({ topic: legacy, partition: 0, key: Buffer.from("ahead"), value: Buffer.from(`ahead,${ahead},1`) });
      for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
    } finally {
      await producer.close();
    }

    const lag = async () => (await groupLag(a, topology.applicationId, source)) + (await groupLag(a, topology.applicationId, legacy));
    const set = new WorkerSet({ dir, namespace: "it", name, spec }, ["w-0", "w-1"]);
    try {
      await set.startAll();
      await waitFor(async () => (await lag()) <= BigInt(RECORDS), { what: "half the input committed", timeoutMs: 120_000, intervalMs: 100 });
      assert.ok(isAlive(set.workers.get("w-1")?.proc.pid ?? -1));
      set.kill("w-1", "SIGKILL");
      const read = (t: string) => readToEnd(env.bootstrap, t, { readCommitted: true, timeoutMs: 60_000 });
      await waitFor(
        async () => {
          await set.supervise();
          return (await lag()) === 0n && (await read(sink)).length >= expected.size;
        },
        { what: `${expected.size} windows in the sink`, timeoutMs: 240_000, intervalMs: 1_000 },
      );
      assert.ok(set.restarts >= 1, "the killed worker was started again");
      const view = (m: { value: Buffer }) => {
        const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number; total: number; legacy: number };
        return { user: v.key, start: v.windowStart, n: v.n, total: v.total, legacy: v.legacy };
      };
      const order = (x: { user: string; start: number }, y: { user: string; start: number }) => x.user.localeCompare(y.user) || x.start - y.start;
      assert.deepEqual((await read(sink)).map(view).sort(order), [...expected.values()].sort(order), "every record of both inputs counted once");
      const dead = await read(dlq);
      assert.deepEqual(
        dead.map((m) => [header(m.headers, DLQ_HEADERS.kind), m.value.toString()]),
        [["eventTime", aheadOfSource]],
        "only the source's record ahead of its maxFutureSkew is a dead letter: the input's is within its own",
      );
      // the input's partitions idle after its own idleTimeout, the source's not: per partition, on its owner
      const idle = async () => {
        const seen = new Map<string, number>();
        for (const w of set.workers.values()) {
          if (!isAlive(w.proc.pid)) continue;
          const text = await (await fetch(`http://127.0.0.1:${w.port}/metrics`)).text();
          for (const m of text.matchAll(/^conveyor_runtime_source_idle\{([^}]*)\} (\d+)$/gm)) {
            const topic = /topic="([^"]*)"/.exec(m[1] ?? "")?.[1];
            const partition = /partition="([^"]*)"/.exec(m[1] ?? "")?.[1];
            seen.set(`${topic}:${partition}`, Number(m[2]));
          }
        }
        return seen;
      };
      await waitFor(
        async () => {
          const seen = await idle();
          return seen.get(`${legacy}:0`) === 1 && seen.get(`${legacy}:1`) === 1;
        },
        {
          what: "the input's partitions idle after its idleTimeout",
          timeoutMs: 60_000,
          intervalMs: 500,
        },
      );
      const now = await idle();
      assert.deepEqual(
        [0, 1].map((p) => [now.get(`${source}:${p}`), now.get(`${legacy}:${p}`)]),
        [
          [0, 1],
          [0, 1],
        ],
        "the source's partitions are not idle: their idleTimeout is 10m",
      );
      let late = 0;
      for (const w of set.workers.values()) if (isAlive(w.proc.pid)) late += await w.metric("conveyor_runtime_records_late_total");
      assert.equal(late, 0, "none of the input's records came late under its own out-of-orderness");
    } finally {
      await set.stopAll();
    }
  });
});
