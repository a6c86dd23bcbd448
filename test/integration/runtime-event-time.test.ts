// Data-safety defect 2 (far-future event times wedge windows), as a new user met it: one source partition,
// 20,000 records of 2023 through keyBy and a 1-minute window, three records from the year 3000 in the middle.
// Before source.watermark.maxFutureSkew, the three set the partition's watermark for good and 9,009 of the
// records after them went to the late topic, none of the three to the DLQ. Now the three go to the DLQ with
// kind eventTime, nothing is late, and every window equals the batch computation over the good records.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import { waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, header, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const RECORDS = 20_000;
const USERS = 5;
const T0 = Date.parse("2023-03-01T00:00:00Z");
const STEP_MS = 100;
const YEAR_3000 = Date.parse("3000-01-01T00:00:00Z");
const FLUSH_USER = "zz-flush";

describe("defect 2: far-future event times no longer wedge windows", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-event-time");

  test("three records from the year 3000 among 20,000 of 2023: to the DLQ as eventTime; no record late; every window exact", async () => {
    const name = `future-${suffix}`;
    const [source, sink, late, dlq] = ["src", "out", "late", "dlq"].map((t) => `evt-${t}-${suffix}`) as [string, string, string, string];
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window: { tumbling: "1m" },
      emit: "onWindowClose",
      rest: { deadLetter: { topic: dlq } },
    });
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, late, dlq]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);

    const expected = new Map<string, number>();
    const messages: { topic: string; partition: number; key: Buffer; value: Buffer }[] = [];
    const add = (user: string, ts: number) =>
      messages.push({ topic: source, partition: 0, key: Buffer.from(user), value: Buffer.from(JSON.stringify({ user, ts, amount: 1 })) });
    for (let i = 0; i < RECORDS; i++) {
      if (i === RECORDS / 2) for (let f = 0; f < 3; f++) add(`u-${f}`, YEAR_3000 + f);
      const user = `u-${i % USERS}`;
      const ts = T0 + i * STEP_MS;
      const key = `${user}|${Math.floor(ts / 60_000) * 60_000}`;
      expected.set(key, (expected.get(key) ?? 0) + 1);
      add(user, ts);
    }
    // An hour on, still in 2023: every window of the data closes.
    add(FLUSH_USER, T0 + RECORDS * STEP_MS + 3_600_000);
    const producer = new Producer({ clientId: "evt-test", bootstrapBrokers: [env.bootstrap], idempotent: true, acks: -1 });
    try {
      for (let i = 0; i < messages.length; i += 1_000) await producer.send({ messages: messages.slice(i, i + 1_000) });
    } finally {
      await producer.close();
    }

    const w = await startRuntime({ dir, namespace: "it", name, spec });
    workers.push(w);
    await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= expected.size, {
      what: `${expected.size} windows written`,
      timeoutMs: 120_000,
      process: w.proc,
    });
    await waitFor(async () => (await w.metric("conveyor_runtime_records_in_total")) === messages.length, {
      what: "every source record read",
      timeoutMs: 30_000,
      process: w.proc,
    });
    const windows = new Map<string, number>();
    for (const m of await readToEnd(env.bootstrap, sink)) {
      const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
      if (v.key !== FLUSH_USER) windows.set(`${v.key}|${v.windowStart}`, v.n);
    }
    const lateOut = await readToEnd(env.bootstrap, late, { timeoutMs: 5_000 });
    const dead = await readToEnd(env.bootstrap, dlq, { timeoutMs: 5_000 });
    process.stdout.write(`# ${messages.length} in: ${windows.size} windows, ${lateOut.length} late, ${dead.length} dead letters\n`);
    assert.equal(lateOut.length, 0, "no record is late: the year 3000 moved no watermark");
    assert.deepEqual(
      dead.map((d) => [header(d.headers, DLQ_HEADERS.kind), header(d.headers, DLQ_HEADERS.step), (JSON.parse(d.value.toString()) as { ts: number }).ts]),
      [0, 1, 2].map((f) => ["eventTime", "eventTime", YEAR_3000 + f]),
      "the three far-future records, in the DLQ as eventTime",
    );
    assert.match(header(dead[0]?.headers ?? new Map(), DLQ_HEADERS.error) ?? "", /3000-01-01T00:00:00.000Z is more than maxFutureSkew/);
    assert.equal(windows.size, expected.size, "as many windows as the batch computation");
    assert.deepEqual(Object.fromEntries([...windows].sort()), Object.fromEntries([...expected].sort()), "every window's count exact");
  });
});
